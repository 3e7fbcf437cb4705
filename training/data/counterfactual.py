"""Counterfactual world clips: each training scene re-rendered with one attribute of every object
changed (`shape`: same place, colour, size, motion, sound; `motion`: same shape, colour, size,
place and event times), its video encoded with the run's codec.

A stage with `counterfactual` draws some rows' noisy video from these latents while the target
stays the true clip (apollo_core.objective.Swap), so the model learns to draw the caption's shape
(or motion) over whatever its noisy input holds. Scenes with no counterfactual (talkers; for
`motion`, events too close for any other motion) are marked invalid.

    python -m training.data.counterfactual --config training/configs/apollo-tiny.yaml --change motion \\
        --out runs/cf/world_motion.safetensors
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

FORMAT = "apollo-av/counterfactual/1"


def _change_each(spec, seed: int, tag: int, field: str, values, fits=lambda o, v: True):
    """`spec` with `field` of each object replaced by another of `values` that `fits`, drawn from
    (seed, tag); None for a talker or when an object has no such value. Object 0 never takes a
    held-out (shape, colour, motion) triple, so no evaluation combination is shown to the model
    even as a noisy input."""
    from .world.constants import HELDOUT_COMBOS

    if spec.talker is not None:
        return None
    rng = np.random.default_rng([seed, tag])
    objects = []
    for i, o in enumerate(spec.objects):
        changed = [dataclasses.replace(o, **{field: v}) for v in values if v != getattr(o, field) and fits(o, v)]
        options = [c for c in changed if i > 0 or (c.shape, c.color, c.motion) not in HELDOUT_COMBOS]
        if not options:
            return None
        objects.append(options[int(rng.integers(len(options)))])
    return dataclasses.replace(spec, objects=tuple(objects))


def swap_shapes(spec, seed: int):
    """`spec` with each object's shape replaced by another drawn from `seed`; None for a talker."""
    from .world.constants import SHAPES

    return _change_each(spec, seed, 0xCF, "shape", SHAPES)


def swap_motions(spec, seed: int):
    """`spec` with each object's motion replaced by another drawn from `seed`, its event times
    kept; None for a talker or when an object's events are too close for every other motion (each
    motion's smallest gap: sampler.MIN_GAP). Two-object scenes never gain a slide (its lanes keep
    the objects apart)."""
    from .world.constants import MOTIONS
    from .world.sampler import MIN_GAP

    two = len(spec.objects) == 2

    def fits(o, m: str) -> bool:
        return min(np.diff(o.times), default=np.inf) >= MIN_GAP[m] - 1e-6 and not (two and m == "slide")

    return _change_each(spec, seed, 0xC0F, "motion", MOTIONS, fits)


CHANGES = {"shape": swap_shapes, "motion": swap_motions}


def encode_swaps(codec, seeds: range, fmt: ClipFormat, change: str = "shape", batch: int = 32,
                 log=print) -> dict[str, Tensor]:
    """Latents `[N, C, T', H', W']` of the scenes with `change` applied, for world `seeds` (rows
    with no counterfactual: the clip itself, `valid` False)."""
    from .world import render, sample_spec

    if change not in CHANGES:
        raise ValueError(f"change {change!r}: expected one of {sorted(CHANGES)}")

    latents, valid, frames = [], [], []

    def flush() -> None:
        if frames:
            latents.append(video_latents(codec, frames))
            frames.clear()

    for n, seed in enumerate(seeds):
        spec = sample_spec(seed, seconds=fmt.seconds, fps=fmt.fps, size=fmt.height, sample_rate=fmt.sample_rate)
        swapped = CHANGES[change](spec, seed)
        valid.append(swapped is not None)
        sample = render(swapped or spec)
        frames.append(fit_frames(torch.from_numpy(sample.frames).float().div_(255.0), fmt.frames))
        if len(frames) == batch:
            flush()
            log(f"{change} swaps: {n + 1} / {len(seeds)}")
    flush()
    return {"video": torch.cat(latents).contiguous(), "valid": torch.tensor(valid),
            "seeds": torch.tensor(list(seeds), dtype=torch.long)}


def write_swaps(tensors: dict[str, Tensor], out: str | os.PathLike, change: str = "shape") -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "change": change})
    os.replace(tmp, out)


def load_swaps(bank: LatentBank, path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Swap latents aligned with the bank's rows, and which rows have one. A bank row is matched
    by its world seed; rows of other sources, and seeds the file lacks, get none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            video, valid, seeds = (f.get_tensor(k) for k in ("video", "valid", "seeds"))
    except Exception as exc:  # safetensors raises several types for a missing or damaged file
        raise ValueError(f"counterfactual.latents {path}: unreadable ({exc}); write it with "
                         "python -m training.data.counterfactual") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"counterfactual.latents {path}: format {meta.get('format')!r}, expected {FORMAT}")
    if video.shape[1:] != bank.video.shape[1:]:
        raise ValueError(f"counterfactual.latents {path}: latents {tuple(video.shape[1:])} do not match the cache's "
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
        raise ValueError(f"counterfactual.latents {path}: no row of the cache has a swap (seeds "
                         f"{int(seeds.min())}..{int(seeds.max())}); write it for the run's world source")
    return out, has


def main(argv: list[str] | None = None) -> None:
    from ..config import load_config

    ap = argparse.ArgumentParser(prog="python -m training.data.counterfactual", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the run's YAML (codecs, clip size, world source)")
    ap.add_argument("--source", default="world", help="the world source to re-render (default: world)")
    ap.add_argument("--change", default="shape", choices=sorted(CHANGES),
                    help="what differs from the true scene (default: shape)")
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
    write_swaps(encode_swaps(video, range(src.seeds[0], src.seeds[1]), fmt, args.change), args.out, args.change)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
