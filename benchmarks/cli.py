"""Command line of the benchmarks: `add_quality_parser(subparsers)` adds `quality` to any argparse
subparsers (the `apollo-av bench` group); `python -m benchmarks.cli quality ...` runs it alone."""
from __future__ import annotations

import argparse
import os
import sys

from .quality import TASKS, format_table, run_quality
from .perf_cli import add_perf_parser
from .results import write_json_atomic


def quality_command(args: argparse.Namespace) -> int:
    from training.data.world import load_specs

    specs = load_specs(args.specs) if args.specs else None
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = run_quality(args.checkpoint, specs, args.tasks, args.n, args.steps, args.seed,
                          reference=not args.no_reference, video_cfg=args.video_cfg, audio_cfg=args.audio_cfg, log=log)
    if args.specs:
        results["specs"] = str(args.specs)
    print(format_table(results))
    if args.json:
        out = write_json_atomic(args.json, results)
        print(f"wrote {out}")
    return 0


def add_quality_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quality", help="generate from scene specs and score sync, semantics, FD and identity")
    p.add_argument("--checkpoint", help="folder with model + codecs, or a model file (default: embedded apollo-tiny)")
    p.add_argument("--specs", help="scene specs, JSONL (default: training/data/specs/heldout.jsonl)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to run (default: all of {', '.join(TASKS)})")
    p.add_argument("--n", type=int, default=16, help="specs per task: the first N of the file (default 16)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i")
    p.add_argument("--video-cfg", type=float, default=3.0)
    p.add_argument("--audio-cfg", type=float, default=3.0)
    p.add_argument("--no-reference", action="store_true", help="skip the row scoring the rendered real clips")
    p.add_argument("--quiet", action="store_true", help="no per-clip progress on stderr")
    p.add_argument("--json", help="write the results here (JSON)")
    p.set_defaults(func=quality_command)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description="APOLLO-AV benchmarks")
    sub = parser.add_subparsers(dest="bench", required=True)
    add_quality_parser(sub)
    add_perf_parser(sub)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
