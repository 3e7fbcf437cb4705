"""Export: EMA weights -> an inference bundle that apollo_core and the ComfyUI loader read directly.

A bundle is a folder holding `model.safetensors` (the model config and, in its metadata, the
caption encoder and the clip size it was trained at) beside `video_codec.safetensors` and
`audio_codec.safetensors` (apollo_core.pipeline.load_bundle's layout; the embedded default is such
a folder). The run's codecs are copied in, so the folder is self-contained.

    python -m training.export RUN_OR_CHECKPOINT OUT_FOLDER [--weight-dtype bf16] [--raw] [--steps N]
                              [--audio-sync-cfg X] [--video-sync-cfg X] [--solver S] [--eta E]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from apollo_core.checkpoint import WEIGHT_DTYPES, load_model, save_model
from apollo_core.codecs import save_codec
from apollo_core.model.dit import ApolloDiT
from apollo_core.pipeline import AUDIO_CODEC_FILE, MODEL_FILE, VIDEO_CODEC_FILE
from apollo_core.sampling import Solver, check_spread

from .checkpointing import TRAINER_FILE, host_model, resolve_resume
from .config import CODEC_RANDOM, RunConfig, parse_config
from .data.encode import build_codecs
from .data.prepare import clip_format


def bundle_extra(cfg: RunConfig, text_encoder: str, *, steps: int | None = None,
                 sync_cfg: dict[str, float] | None = None, solver: str | None = None, eta: float | None = None,
                 spread: float | None = None, **more: Any) -> dict[str, Any]:
    """steps: the sampling steps generation defaults to; sync_cfg: {"video"|"audio": scale}, the
    cross-modal guidance it defaults to; solver and eta: the sampler it defaults to (measure each
    with `apollo-av bench quality --steps N --audio-sync-cfg X --solver S --eta E` first); spread:
    the frame spread it samples with (`flow.spread_times`; for a model trained with one). None
    leaves the pipeline's own defaults (25 Euler steps, no sync guidance)."""
    clip = cfg.data.clip
    defaults: dict[str, Any] = {"width": clip.width, "height": clip.height, "seconds": clip.seconds}
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        defaults["steps"] = steps
    for modality, scale in (sync_cfg or {}).items():
        if modality not in ("video", "audio") or not math.isfinite(scale):
            raise ValueError(f"sync_cfg takes 'video'/'audio' -> a finite scale, got {modality!r}: {scale}")
        defaults[f"{modality}_sync_cfg"] = float(scale)
    if solver is not None:
        defaults["solver"] = Solver.parse(solver).value
    if eta is not None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        defaults["eta"] = float(eta)
    if spread is not None:
        defaults["spread"] = check_spread(spread)
    return {"text_encoder": text_encoder, "defaults": defaults,
            "codecs": {"video": cfg.codecs.video, "audio": cfg.codecs.audio}, **more}


def write_bundle(folder: str | os.PathLike, model: ApolloDiT, cfg: RunConfig, *, extra: dict[str, Any],
                 weight_dtype: str = "fp32") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / MODEL_FILE, model, weight_dtype=weight_dtype, extra=extra)
    random = None
    for spec, name, index in ((cfg.codecs.video, VIDEO_CODEC_FILE, 0), (cfg.codecs.audio, AUDIO_CODEC_FILE, 1)):
        if spec == CODEC_RANDOM:  # rebuilt from its seed: the same codec the run encoded with
            random = random or build_codecs(model.config, cfg.codecs, clip_format(cfg, model.config))
            save_codec(folder / name, random[index], extra={"untrained": True, "seed": cfg.codecs.seed})
        else:
            tmp = folder / f".{name}.tmp"
            shutil.copyfile(Path(spec).expanduser(), tmp)
            os.replace(tmp, folder / name)
    return folder


def export_state(state: dict[str, torch.Tensor], cfg: RunConfig, folder: str | os.PathLike, *,
                 extra: dict[str, Any], weight_dtype: str = "fp32") -> Path:
    """A full state dict (e.g. the gathered EMA weights) -> bundle folder."""
    return write_bundle(folder, host_model(cfg.model.build(), state), cfg, extra=extra, weight_dtype=weight_dtype)


def export_checkpoint(source: str | os.PathLike, folder: str | os.PathLike, *, weight_dtype: str = "fp32",
                      use_ema: bool = True, steps: int | None = None,
                      sync_cfg: dict[str, float] | None = None, solver: str | None = None,
                      eta: float | None = None, spread: float | None = None) -> Path:
    """A training checkpoint (or a run folder: its latest checkpoint) -> bundle folder."""
    ckpt = resolve_resume(source)
    state = json.loads((ckpt / TRAINER_FILE).read_text())
    cfg = parse_config(state["config"], source=str(ckpt / TRAINER_FILE))
    model = load_model(ckpt / ("ema.safetensors" if use_ema else "model.safetensors"), attention="math")
    extra = bundle_extra(cfg, state.get("text_encoder", "minilm"), steps=steps, sync_cfg=sync_cfg,
                         solver=solver, eta=eta, spread=spread, step=state["step"], ema=use_ema,
                         eval=state.get("last_eval", {}), source=str(ckpt),
                         stages=[s.name for s in cfg.stages])
    return write_bundle(folder, model, cfg, extra=extra, weight_dtype=weight_dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a checkpoint folder step-XXXXXXXX, or a run's output folder (latest checkpoint)")
    parser.add_argument("out", help="the bundle folder to write (model.safetensors + codecs)")
    parser.add_argument("--weight-dtype", default="fp32", choices=sorted(WEIGHT_DTYPES))
    parser.add_argument("--raw", action="store_true", help="export the training weights instead of the EMA")
    parser.add_argument("--steps", type=int, help="sampling steps `apollo-av generate` defaults to for this bundle")
    parser.add_argument("--video-sync-cfg", type=float, help="cross-modal guidance of the video it defaults to")
    parser.add_argument("--audio-sync-cfg", type=float, help="cross-modal guidance of the audio it defaults to")
    parser.add_argument("--solver", choices=[s.value for s in Solver], help="the sampler it defaults to")
    parser.add_argument("--eta", type=float, help="euler_ancestral's share of fresh noise it defaults to")
    parser.add_argument("--spread", type=float, help="the frame spread it samples with (a model trained with "
                        "frame_spread)")
    args = parser.parse_args(argv)
    sync = {m: v for m, v in (("video", args.video_sync_cfg), ("audio", args.audio_sync_cfg)) if v is not None}
    print(export_checkpoint(args.source, args.out, weight_dtype=args.weight_dtype, use_ema=not args.raw,
                            steps=args.steps, sync_cfg=sync or None, solver=args.solver, eta=args.eta,
                            spread=args.spread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
