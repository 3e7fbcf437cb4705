"""`apollo-av bench perf`: `add_perf_parser(subparsers)` adds `perf` to any argparse subparsers;
`python -m benchmarks.perf_cli perf ...` runs it alone."""
from __future__ import annotations

import argparse
import os
import sys

from .perf import SECTIONS, run_perf, write_report
from .perf_report import format_perf


def perf_command(args: argparse.Namespace) -> int:
    if args.checkpoint and args.random_bundle:
        raise ValueError("--checkpoint and --random-bundle exclude each other; give one")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sections = tuple(s for s in SECTIONS if s not in set(args.skip or ()))
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_perf(quick=args.quick, checkpoint=args.checkpoint, random_bundle=args.random_bundle, sections=sections,
                      threads=args.threads, log=log)
    report["command"] = _command(args)
    print(format_perf(report))
    if args.json:
        print(f"wrote {write_report(report, args.json)}")
    return 1 if report["errors"] else 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this report (stored in it)."""
    parts = ["apollo-av", "bench", "perf"]
    if args.quick:
        parts.append("--quick")
    if args.checkpoint:
        parts += ["--checkpoint", args.checkpoint]
    if args.random_bundle:
        parts += ["--random-bundle", args.random_bundle]
    if args.skip:
        parts += ["--skip", *args.skip]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    if args.json:
        parts += ["--json", args.json]
    return " ".join(parts)


def add_perf_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("perf", help="matmul peak, DiT MFU, attention, task costs, ComfyUI block, end to end, 26B plan")
    p.add_argument("--quick", action="store_true", help="CI sizes (seconds, not minutes); the MFU target needs the full run")
    p.add_argument("--checkpoint", help="bundle for the end-to-end section (default: the embedded apollo-tiny)")
    p.add_argument("--random-bundle", choices=["apollo-tiny", "debug"],
                   help="time end to end on an untrained bundle of this preset (same compute) instead of a checkpoint")
    p.add_argument("--skip", nargs="+", choices=[s for s in SECTIONS if s != "matmul"], metavar="SECTION",
                   help=f"sections to leave out: {', '.join(s for s in SECTIONS if s != 'matmul')}")
    p.add_argument("--threads", type=int, help="torch threads for the bench and its child processes (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", help="write the report here (JSON)")
    p.set_defaults(func=perf_command)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.perf_cli perf ...` is `apollo-av bench perf ...`."""
    from .cli import main as bench_main  # cli imports this module: resolve at call time

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
