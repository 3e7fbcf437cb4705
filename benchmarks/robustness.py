"""How a video codec's decoded clips hold up when its latents carry errors of a generator's size.

A model never produces the exact latents of a real clip; what the bench reads from its clips is
the decoder's rendering of latents that are slightly off. This bench encodes held-out real clips,
perturbs the latents in controlled ways and scores what the bench's detectors read back (motion,
colour, shape), so two codecs can be compared before a model is trained on either. On apollo-tiny
the shipped codec read a bouncing or sliding object as blinking in a third of the clips for
independent latent noise of variance 0.05 (unit-variance latents), which is about the size of the
model's own errors (assets README of apollo-tiny).

The perturbations, in normalised latent units:
  noise:     x + sqrt(v) n, n standard normal
  spatial:   (1 - a) x + a (3x3 binomial blur of x within each latent frame)
  temporal:  (1 - a) x + a (mean of the neighbouring latent frames), edges repeated
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from apollo_core.pipeline import Bundle, decode_video, encode_frames
from training.data.world import SceneSpec

from .detect import detect_video
from .metrics import Tally, motion_pairs, video_semantics
from .quality import render_for_model

MOVING = ("slide", "bounce")
# (name, kind, strength): the defaults of `run_robustness`
PERTURBATIONS: tuple[tuple[str, str, float], ...] = (
    ("none", "noise", 0.0),
    ("noise 0.01", "noise", 0.01),
    ("noise 0.05", "noise", 0.05),
    ("spatial blur 0.3", "spatial", 0.3),
    ("temporal blur 0.3", "temporal", 0.3),
)
KINDS = ("noise", "spatial", "temporal")


def spatial_blur(x: Tensor, a: float) -> Tensor:
    """`[B, C, T, H, W]` mixed by `a` with its 3x3 binomial blur in each latent frame (edges repeated)."""
    b, c, t, h, w = x.shape
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype, device=x.device) / 16
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # [B*T, C, H, W]
    blurred = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
    blurred = blurred.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # [B, C, T, H, W]
    return (1 - a) * x + a * blurred


def temporal_blur(x: Tensor, a: float) -> Tensor:
    """`[B, C, T, H, W]` mixed by `a` with the mean of each latent frame's two neighbours (edges repeated)."""
    padded = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)  # [B, C, T+2, H, W]
    return (1 - a) * x + a * 0.5 * (padded[:, :, :-2] + padded[:, :, 2:])


def perturb(x: Tensor, kind: str, strength: float, generator: torch.Generator | None = None) -> Tensor:
    if kind == "noise":
        if strength < 0:
            raise ValueError(f"noise variance must be >= 0, got {strength}")
        return x + math.sqrt(strength) * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"{kind} blur share must be in [0, 1], got {strength}")
    if kind == "spatial":
        return spatial_blur(x, strength)
    if kind == "temporal":
        return temporal_blur(x, strength)
    raise ValueError(f"unknown perturbation kind {kind!r}; choose one of {', '.join(KINDS)}")


def run_robustness(bundle: Bundle, specs: list[SceneSpec], *,
                   perturbations: tuple[tuple[str, str, float], ...] = PERTURBATIONS,
                   log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per perturbation: the latents' mean squared change, motion accuracy over all objects and
    over the moving ones (slide, bounce), colour and shape accuracy, and the motion confusion."""
    if not specs:
        raise ValueError("the robustness bench needs at least one spec")
    tallies = {name: Tally() for name, _, _ in perturbations}
    moving = {name: [0, 0] for name, _, _ in perturbations}
    change = {name: 0.0 for name, _, _ in perturbations}
    for i, spec in enumerate(specs):
        real = render_for_model(spec, bundle)
        frames = torch.from_numpy(real.frames).float()[None] / 255.0  # [1, T, H, W, 3]
        latents = encode_frames(bundle.video_codec, frames)  # [1, C, T', H', W']
        for name, kind, strength in perturbations:
            z = perturb(latents, kind, strength, torch.Generator().manual_seed(i))
            change[name] += float(((z - latents) ** 2).mean()) / len(specs)
            decoded = decode_video(bundle.video_codec, z, frames.shape[1])[0].numpy()  # [T, H, W, 3]
            det = detect_video(decoded, real.fps)
            pairs = motion_pairs(spec, det)
            tallies[name].add_semantics(video_semantics(spec, det))
            tallies[name].add_motions(pairs)
            for asked, read in pairs:
                if asked in MOVING:
                    moving[name][0] += asked == read
                    moving[name][1] += 1
        if log:
            log(f"[{i + 1}/{len(specs)}] spec seed {spec.seed}")
    out: dict[str, dict] = {}
    for name, kind, strength in perturbations:
        s = tallies[name].summary()
        right, total = moving[name]
        out[name] = {"kind": kind, "strength": strength, "latent_mse": change[name],
                     "acc_motion": s.get("acc_motion"), "acc_moving": right / total if total else None,
                     "acc_colour": s.get("acc_colour"), "acc_shape": s.get("acc_shape"),
                     "motion_confusion": s.get("motion_confusion")}
    return out


def format_robustness(results: dict[str, dict]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [f"{'perturbation':18} {'latent mse':>10} {'motion':>7} {'moving':>7} {'colour':>7} {'shape':>7}"]
    for name, r in results.items():
        lines.append(f"{name:18} {r['latent_mse']:10.3f} {f(r['acc_motion']):>7} {f(r['acc_moving']):>7} "
                     f"{f(r['acc_colour']):>7} {f(r['acc_shape']):>7}")
    lines.append("latent mse: mean squared change of the unit-variance latents; motion: all objects; moving: "
                 "slide and bounce objects; accuracies read by the quality bench's detectors")
    return "\n".join(lines)
