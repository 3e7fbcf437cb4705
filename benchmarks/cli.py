"""Command line of the benchmarks: `add_quality_parser(subparsers)` adds `quality` to any argparse
subparsers (the `apollo-av bench` group); `python -m benchmarks.cli quality ...` runs it alone."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from apollo_core.sampling import ANCESTRAL_ETA, Solver

from .quality import CASCADE, TASKS, format_table, run_quality
from .perf_cli import add_perf_parser
from .results import write_json_atomic


SYNC_HELP = ("cross-modal guidance of the {0} in tasks that also have {1} (0 = off; default: the checkpoint's "
             "recommended value, else 0)")


def read_specs(path: str | None) -> list | None:
    """The scene specs of `--specs` (None: the bench's default set); an unreadable file is a clear error."""
    from training.data.world import load_specs

    if not path:
        return None
    try:
        return load_specs(path)
    except OSError as exc:
        raise ValueError(f"--specs {path}: cannot read it ({exc.strerror or exc}); give a JSONL file of scene "
                         "specs") from None


def progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Per-item progress lines on stderr, unless --quiet."""
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def report(args: argparse.Namespace, results: dict, table: str) -> int:
    """The end of every bench command: the command line recorded in `results`, the table printed,
    the results written to --json (atomically) when asked."""
    results["command"] = " ".join(["apollo-av", "bench", args.bench, *args.argv])
    print(table)
    if args.json:
        print(f"wrote {write_json_atomic(args.json, results)}")
    return 0


def quality_command(args: argparse.Namespace) -> int:
    specs = read_specs(args.specs)
    log = progress(args)
    results = run_quality(args.checkpoint, specs, args.tasks, args.n, args.steps, args.seed,
                          reference=not args.no_reference, video_cfg=args.video_cfg, audio_cfg=args.audio_cfg,
                          solver=args.solver, shift=args.shift, video_sync_cfg=args.video_sync_cfg,
                          audio_sync_cfg=args.audio_sync_cfg, eta=args.eta, spread=args.spread, log=log)
    if args.specs:
        results["specs"] = str(args.specs)
    return report(args, results, format_table(results))


def add_quality_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quality", help="generate from scene specs and score sync, semantics, FD and identity")
    p.add_argument("--checkpoint", help="folder with model + codecs, or a model file (default: embedded apollo-tiny)")
    p.add_argument("--specs", help="scene specs, JSONL (default: training/data/specs/heldout.jsonl)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=[*TASKS, CASCADE], metavar="TASK",
                   help=f"tasks to run (default: all of {', '.join(TASKS)}); '{CASCADE}' adds T2V followed by "
                        "V2A on the generated frames (the cascaded baseline)")
    p.add_argument("--n", type=int, default=16, help="specs per task: the first N of the file (default 16)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's recommended count, else 25)")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i")
    p.add_argument("--video-cfg", type=float, default=3.0)
    p.add_argument("--audio-cfg", type=float, default=3.0)
    p.add_argument("--video-sync-cfg", type=float, help=SYNC_HELP.format("video", "audio"))
    p.add_argument("--audio-sync-cfg", type=float, help=SYNC_HELP.format("audio", "video"))
    p.add_argument("--solver", choices=[s.value for s in Solver],
                   help="default: the checkpoint's recommended sampler, else euler")
    p.add_argument("--eta", type=float, help="euler_ancestral: share of fresh noise per step (default: the "
                   f"checkpoint's recommended value, else {ANCESTRAL_ETA})")
    p.add_argument("--shift", type=float, default=1.0, help="sampling time shift (>1 spends more steps at high noise)")
    p.add_argument("--spread", type=float, help="frame spread, >= 0 (default: the checkpoint's recommended value, "
                   "else 0)")
    p.add_argument("--no-reference", action="store_true", help="skip the row scoring the rendered real clips")
    p.add_argument("--quiet", action="store_true", help="no per-clip progress on stderr")
    p.add_argument("--json", help="write the results here (JSON)")
    p.set_defaults(func=quality_command)
    return p


def ablate_command(args: argparse.Namespace) -> int:
    from .ablate import format_ablation, run_ablation

    specs = read_specs(args.specs)
    log = progress(args)
    results = run_ablation(budget_minutes=args.budget_minutes, seeds=args.seeds, variants=args.variants,
                           out_dir=args.out, base_config=args.config, n=args.n, sample_steps=args.steps, specs=specs,
                           train_steps=args.train_steps, config_overrides=tuple(args.set or ()), log=log)
    return report(args, results, format_ablation(results))


def add_ablate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .ablate import BASE_CONFIG, VARIANTS

    p = subparsers.add_parser("ablate", help="train equal-budget micro models per paper ablation and compare them")
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="training time per model; turned into one step count for every variant (default 10)")
    p.add_argument("--train-steps", type=int, help="train this many steps per model instead of timing a budget")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds per variant (default 0 1)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help=f"default: all of {', '.join(VARIANTS)}")
    p.add_argument("--config", default=str(BASE_CONFIG), help="base run config (default training/configs/ablate.yaml)")
    p.add_argument("--set", nargs="+", metavar="key=value", help="extra overrides of the base run config")
    p.add_argument("--out", default="runs/ablate", help="training folders and the shared data cache")
    p.add_argument("--specs", help="scene specs for scoring, JSONL (default: the held-out set)")
    p.add_argument("--n", type=int, default=16, help="specs scored per model and task (default 16)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", help="write the results here (JSON)")
    p.set_defaults(func=ablate_command)
    return p


def parse_perturbation(text: str) -> tuple[str, str, float]:
    """`kind:strength` (e.g. `noise:0.05`, `temporal:0.3`) -> (name, kind, strength)."""
    from .robustness import KINDS

    kind, _, value = text.partition(":")
    try:
        strength = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND:STRENGTH (e.g. noise:0.05, temporal:0.3)") from None
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown perturbation kind {kind!r} in {text!r}; "
                                         f"choose one of {', '.join(KINDS)}")
    return f"{kind} {strength:g}", kind, strength


def robustness_command(args: argparse.Namespace) -> int:
    import dataclasses

    from apollo_core.codecs import load_codec
    from apollo_core.pipeline import load_bundle
    from training.data.world import HELDOUT_PATH, load_specs

    from .robustness import PERTURBATIONS, format_robustness, run_robustness

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    bundle = load_bundle(args.checkpoint)
    if args.video_codec:
        bundle = dataclasses.replace(bundle, video_codec=load_codec(args.video_codec, kind="tiny_video"))
    specs = (read_specs(args.specs) if args.specs else load_specs(HELDOUT_PATH))[: args.n]
    log = progress(args)
    perturbations = (PERTURBATIONS[0], *args.perturb) if args.perturb else PERTURBATIONS  # always the clean row first
    results = {"specs": len(specs),
               "perturbations": run_robustness(bundle, specs, perturbations=perturbations, log=log)}
    return report(args, results, format_robustness(results["perturbations"]))


def add_robustness_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("robustness", help="decode real clips' latents with controlled errors and score what "
                              "the detectors read (compares video codecs before a model is trained on one)")
    p.add_argument("--checkpoint", help="folder with model + codecs (default: embedded apollo-tiny); its video "
                   "codec and clip geometry are used")
    p.add_argument("--video-codec", help="a TinyVideoVAE safetensors file to test instead of the checkpoint's")
    p.add_argument("--specs", help="scene specs, JSONL (default: the held-out set)")
    p.add_argument("--n", type=int, default=24, help="specs: the first N of the file (default 24)")
    p.add_argument("--perturb", nargs="+", type=parse_perturbation, metavar="KIND:STRENGTH",
                   help="perturbations to run besides none, e.g. noise:0.05 temporal:0.3 (noise: variance; "
                        "spatial/temporal: blur share 0-1); default: noise 0.01 and 0.05, spatial and temporal 0.3")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", help="write the results here (JSON)")
    p.set_defaults(func=robustness_command)
    return p


def probe_command(args: argparse.Namespace) -> int:
    from apollo_core.pipeline import load_bundle

    from .probe import format_probe, probe_specs, run_probe

    groups = probe_specs(args.n)
    bundle = load_bundle(args.checkpoint)
    log = progress(args)
    results = run_probe(bundle, groups, starts=tuple(args.starts), seed=args.seed, steps=args.steps,
                        video_cfg=args.video_cfg, log=log)
    return report(args, results, format_probe(results))


def add_probe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .probe import STARTS

    p = subparsers.add_parser("probe", help="T2V on single-object clips from noise and from the real clip noised "
                              "to later flow times: where shape and motion are decided")
    p.add_argument("--checkpoint", help="folder with model + codecs, or a model file (default: embedded apollo-tiny)")
    p.add_argument("--n", type=int, default=16, help="clips per group (one-hit slide, two-impact bounce, one "
                   "pulse; default 16)")
    p.add_argument("--starts", type=float, nargs="+", default=list(STARTS), metavar="T0",
                   help="flow times in [0, 1) the real clip is noised to before sampling (0 = pure noise; "
                        "default: 0 0.4 0.6 0.8)")
    p.add_argument("--steps", type=int, help="sampling steps over [start, 1] (default: the checkpoint's "
                   "recommended count, else 25)")
    p.add_argument("--seed", type=int, default=0, help="clip i of a group uses seed + i")
    p.add_argument("--video-cfg", type=float, default=3.0)
    p.add_argument("--quiet", action="store_true", help="no per-group progress on stderr")
    p.add_argument("--json", help="write the results here (JSON)")
    p.set_defaults(func=probe_command)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli", description="APOLLO-AV benchmarks")
    sub = parser.add_subparsers(dest="bench", required=True)
    add_quality_parser(sub)
    add_perf_parser(sub)
    add_ablate_parser(sub)
    add_robustness_parser(sub)
    add_probe_parser(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
