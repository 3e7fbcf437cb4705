"""`apollo-av`: the command line. The composition root for the core's commands."""
from __future__ import annotations

import argparse
import json
import sys

from . import memory
from .config import PRESETS, get_preset


def _info(args: argparse.Namespace) -> int:
    config = get_preset(args.preset)
    base = memory.default_clip(config)
    clip = memory.ClipSize(
        seconds=args.seconds if args.seconds is not None else base.seconds,
        width=args.width if args.width is not None else base.width,
        height=args.height if args.height is not None else base.height,
        fps=args.fps if args.fps is not None else base.fps,
    )
    est = memory.estimate(config, clip)
    if args.json:
        data = est.to_dict() | {"clip": clip.__dict__, "config": config.to_dict()}
        print(json.dumps(data, indent=2))
        return 0
    print(f"preset        {config.name}  ({config.architecture}, depth {config.depth}, width {config.hidden}, "
          f"{config.heads} heads)")
    print(f"parameters    {est.parameters:,}  ({est.parameters / 1e9:.2f} B)")
    for part, n in est.parameters_by_part.items():
        print(f"  {part:<20} {n:,}")
    print(f"clip          {clip.seconds:g} s, {clip.width}x{clip.height} px, {clip.fps:g} fps")
    print("tokens        " + ", ".join(f"{k} {v}" for k, v in est.tokens.items()) + f"  (total {sum(est.tokens.values())})")
    print(f"FLOPs/step    {est.flops_per_step / 1e12:.3f} TFLOP (cond), {est.flops_per_step_cfg / 1e12:.3f} TFLOP with CFG")
    print("weights       " + ", ".join(f"{k} {memory.human_bytes(v)}" for k, v in est.weight_bytes.items()))
    print("peak (infer)  " + ", ".join(f"{k} {memory.human_bytes(v)}" for k, v in est.peak_bytes_inference.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apollo-av", description="APOLLO unified audio-video generation")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameters, tokens, FLOPs and memory of a preset at a clip size")
    info.add_argument("--preset", default="apollo-tiny", choices=sorted(PRESETS))
    info.add_argument("--seconds", type=float)
    info.add_argument("--width", type=int)
    info.add_argument("--height", type=int)
    info.add_argument("--fps", type=float)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"apollo-av: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
