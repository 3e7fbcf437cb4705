"""Counterfactual world clips: each training scene re-rendered with every object's shape changed
(same place, colour, size, motion, sound), its video encoded with the run's codec.

A stage with `shape_swap` draws some rows' noisy video from these latents while the target stays
the true clip (apollo_core.objective.Swap), so the model learns to draw the caption's shape over
whatever shape its noisy input holds. Talker scenes have no object and are marked invalid.

    python -m training.data.counterfactual --config training/configs/apollo-tiny.yaml --out runs/cf/world_swap.safetensors
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .encode import build_codecs, video_latents
from .shards import LatentBank
from .sources import ClipFormat, fit_frames

FORMAT = "apollo-av/shape-swap/1"


def swap_shapes(spec, seed: int):
    """`spec` with each object's shape replaced by another drawn from `seed`; None for a talker.
    Object 0 never takes a held-out (shape, colour, motion) triple, so no evaluation combination
    is shown to the model even as a noisy input."""
    from .world.constants import HELDOUT_COMBOS, SHAPES

    if spec.talker is not None:
        return None
    rng = np.random.default_rng([seed, 0xCF])
    objects = []
    for i, o in enumerate(spec.objects):
        options = [s for s in SHAPES if s != o.shape and (i > 0 or (s, o.color, o.motion) not in HELDOUT_COMBOS)]
        objects.append(dataclasses.replace(o, shape=str(rng.choice(options))))
    return dataclasses.replace(spec, objects=tuple(objects))


def encode_swaps(codec, seeds: range, fmt: ClipFormat, batch: int = 32, log=print) -> dict[str, Tensor]:
    """Latents `[N, C, T', H', W']` of the swapped scenes for world `seeds` (talker rows: the clip
    itself, `valid` False)."""
    from .world import render, sample_spec

    latents, valid, frames = [], [], []

    def flush() -> None:
        if frames:
            latents.append(video_latents(codec, frames))
            frames.clear()

    for n, seed in enumerate(seeds):
        spec = sample_spec(seed, seconds=fmt.seconds, fps=fmt.fps, size=fmt.height, sample_rate=fmt.sample_rate)
        swapped = swap_shapes(spec, seed)
        valid.append(swapped is not None)
        sample = render(swapped or spec)
        frames.append(fit_frames(torch.from_numpy(sample.frames).float().div_(255.0), fmt.frames))
        if len(frames) == batch:
            flush()
            log(f"shape swaps: {n + 1} / {len(seeds)}")
    flush()
    return {"video": torch.cat(latents).contiguous(), "valid": torch.tensor(valid),
            "seeds": torch.tensor(list(seeds), dtype=torch.long)}


def write_swaps(tensors: dict[str, Tensor], out: str | os.PathLike) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, out)


def load_swaps(bank: LatentBank, path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Swap latents aligned with the bank's rows, and which rows have one. A bank row is matched
    by its world seed; rows of other sources, and seeds the file lacks, get none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            video, valid, seeds = (f.get_tensor(k) for k in ("video", "valid", "seeds"))
    except Exception as exc:  # safetensors raises several types for a missing or damaged file
        raise ValueError(f"shape_swap.latents {path}: unreadable ({exc}); write it with "
                         "python -m training.data.counterfactual") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"shape_swap.latents {path}: format {meta.get('format')!r}, expected {FORMAT}")
    if video.shape[1:] != bank.video.shape[1:]:
        raise ValueError(f"shape_swap.latents {path}: latents {tuple(video.shape[1:])} do not match the cache's "
                         f"{tuple(bank.video.shape[1:])}; write it again with this run's codec and clip size")
    row = {int(s): i for i, s in enumerate(seeds.tolist())}
    out = torch.zeros_like(bank.video)
    has = torch.zeros(len(bank), dtype=torch.bool)
    for i, key in enumerate(bank.keys):
        _, _, item = key.partition(":")
        j = row.get(int(item[5:])) if item.startswith("seed-") else None
        if j is not None and bool(valid[j]):
            out[i], has[i] = video[j], True
    if not bool(has.any()):
        raise ValueError(f"shape_swap.latents {path}: no row of the cache has a swap (seeds "
                         f"{int(seeds.min())}..{int(seeds.max())}); write it for the run's world source")
    return out, has


def main(argv: list[str] | None = None) -> None:
    from ..config import load_config

    ap = argparse.ArgumentParser(prog="python -m training.data.counterfactual", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the run's YAML (codecs, clip size, world source)")
    ap.add_argument("--source", default="world", help="the world source to re-render (default: world)")
    ap.add_argument("--out", required=True, help="where to write the latents (.safetensors)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as apollo-train takes them")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        src = cfg.data.sources.get(args.source)
        if src is None or src.kind != "world":
            worlds = sorted(k for k, s in cfg.data.sources.items() if s.kind == "world")
            raise ValueError(f"--source {args.source!r} must name a world source of {args.config}; "
                             f"its world sources: {worlds}")
        model = cfg.model.build()
        fmt = ClipFormat.from_config(cfg.data.clip, model.video.fps, model.audio.sample_rate)
        video, _ = build_codecs(model, cfg.codecs, fmt)
    except ValueError as exc:  # a bad config, source or codec file: say which, no traceback
        raise SystemExit(f"training.data.counterfactual: {exc}") from None
    write_swaps(encode_swaps(video, range(src.seeds[0], src.seeds[1]), fmt), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
