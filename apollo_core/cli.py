"""`apollo-av`: the command line. The composition root for the core's commands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import memory
from .config import PRESETS, get_preset
from .sampling import ANCESTRAL_ETA


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


def _generate(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from . import avio
    from .pipeline import Request, generate, load_bundle, sampling_steps
    from .tasks import Task

    started = time.perf_counter()
    task = Task.parse(args.task)
    out = Path(args.out)
    wants_wav = task is Task.T2A
    if wants_wav and out.suffix.lower() != ".wav":
        raise ValueError(f"--out {out}: task t2a writes audio only; give a .wav path")
    if not wants_wav and out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: task {task.value} writes a video; give a .mp4 path")
    if task.needs_image and not args.image:
        raise ValueError(f"task {task.value} needs a reference image: add --image PATH.png")
    if task.needs_video and not args.video:
        raise ValueError(f"task {task.value} needs an input video: add --video PATH.mp4")
    if task.needs_audio and not args.audio:
        raise ValueError(f"task {task.value} needs an input audio: add --audio PATH.wav")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    bundle = load_bundle(args.checkpoint, attention=args.attention)
    steps = sampling_steps(bundle, args.steps)
    config = bundle.config
    image = video = audio = None
    if task.needs_image:
        image = avio.read_image(args.image)
    if task.needs_video:
        video = avio.read_video(args.video, fps=config.video.fps, max_seconds=args.seconds).frames
    if task.needs_audio:
        audio, _ = avio.read_audio(args.audio, sample_rate=config.audio.sample_rate, mono=True, max_seconds=args.seconds)
    request = Request(task=task, video_prompt=args.video_prompt, audio_prompt=args.audio_prompt, speech=args.speech,
                      negative_video=args.negative_video, negative_audio=args.negative_audio, image=image, video=video,
                      audio=audio, seconds=args.seconds, width=args.width, height=args.height, steps=steps,
                      video_cfg=args.video_cfg, audio_cfg=args.audio_cfg, video_sync_cfg=args.video_sync_cfg,
                      audio_sync_cfg=args.audio_sync_cfg, shift=args.shift, solver=args.sampler, eta=args.eta,
                      spread=args.spread, seed=args.seed)
    with tqdm(total=steps, desc=f"apollo-av {task.value}", unit="step", disable=args.quiet) as bar:
        clip = generate(bundle, request, callback=lambda i, n, _x: bar.update(1))
    if wants_wav:
        avio.write_wav(out, clip.waveform, clip.sample_rate)
    else:
        avio.write_mp4(out, clip, display_size=args.display_size or None,
                       metadata={"comment": f"apollo-av {task.value} seed={args.seed}"})
    elapsed = time.perf_counter() - started
    print(f"wrote {out} ({clip.duration:.2f} s) in {elapsed:.2f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    # The benchmarks package sits beside the core (it reads the synthetic world's ground truth);
    # the command line is the composition root, so only this command imports it.
    try:
        from benchmarks.cli import main as bench_main
    except ImportError as exc:
        raise ValueError(f"the benchmarks package is not installed ({exc}); install the repository with "
                         "`pip install -e .`") from None
    return bench_main(args.rest)


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

    gen = sub.add_parser("generate", help="generate a clip (defaults to the embedded apollo-tiny)")
    gen.add_argument("--task", default="t2av", help="t2av, ti2av, ti2v, t2v, t2a, v2a or a2v")
    gen.add_argument("--video-prompt", default="")
    gen.add_argument("--audio-prompt", default="")
    gen.add_argument("--speech", default="", help="speech transcript (talker scenes)")
    gen.add_argument("--negative-video", default="")
    gen.add_argument("--negative-audio", default="")
    gen.add_argument("--image", help="reference image for ti2v / ti2av")
    gen.add_argument("--video", help="input video for v2a")
    gen.add_argument("--audio", help="input audio for a2v")
    gen.add_argument("--seconds", type=float)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's recommended count; "
                     "the embedded apollo-tiny's is 12, else 25)")
    gen.add_argument("--video-cfg", type=float, default=3.0)
    gen.add_argument("--audio-cfg", type=float, default=3.0)
    gen.add_argument("--video-sync-cfg", type=float, help="cross-modal guidance: how hard the video follows the audio "
                     "in t2av/ti2av/a2v (0 = off; default: the checkpoint's recommended value)")
    gen.add_argument("--audio-sync-cfg", type=float, help="cross-modal guidance: how hard the audio follows the video "
                     "in t2av/ti2av/v2a (0 = off; default: the checkpoint's recommended value, 2.5 for apollo-tiny)")
    gen.add_argument("--shift", type=float, default=1.0)
    gen.add_argument("--sampler", help="euler, euler_ancestral, heun or dpmpp_2m (default: the checkpoint's "
                     "recommended sampler, euler_ancestral for apollo-tiny, else euler)")
    gen.add_argument("--eta", type=float, help="euler_ancestral: share of fresh noise per step, 0-1 (default: the "
                     f"checkpoint's recommended value, else {ANCESTRAL_ETA})")
    gen.add_argument("--spread", type=float, help="frame spread: earlier frames run ahead of later ones by this "
                     "much in logit time, >= 0 (default: the checkpoint's recommended value, else 0)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--checkpoint", help="folder with model + codecs, or a model file (default: embedded apollo-tiny)")
    gen.add_argument("--attention", default="auto", help="auto, sdpa, math, flash_attn or sage")
    gen.add_argument("--display-size", type=int, default=256, help="upscale frames so the larger side is this (0: keep)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--out", required=True, help="OUT.mp4 (or OUT.wav for t2a)")
    gen.set_defaults(func=_generate)

    bench = sub.add_parser("bench", add_help=False, help="benchmarks: quality, perf, ablate, robustness, probe (see `apollo-av bench --help`)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["bench"]:  # everything after `bench` (even --help) belongs to the bench parser
        args = argparse.Namespace(func=_bench, rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"apollo-av: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
