"""Where a model loses an object's shape and motion: T2V on single-object clips, sampled from pure
noise and from the real clip's latents noised to later flow times (SDEdit starts).

The held-out bench mixes two-object scenes, talkers and every motion; this probe isolates one
object per clip in three groups of the training distribution (`sample_spec(PROBE_SEED + i)`, the
first `n` scenes of each): a slide with one wall hit, a bounce with two floor impacts, one pulse
(which stays in place). From pure noise (start 0) the model must draw the caption's shape and
choose a trajectory; from the real clip noised to t0 it only has to keep or finish what the clip
already holds, so the start at which an attribute comes back right tells where in flow time the
model decides it (assets README of apollo-tiny: shape is drawn late, about t = 0.4, and moving
objects are lost in mostly-noise clips).

Clip i of a group is sampled with seed `seed + i`; at start 0 it is exactly the clip
`apollo-av generate --task t2v --seed <seed + i>` makes from the scene's captions, and every start
draws the same noise.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from apollo_core.flow import frame_noise, interpolate
from apollo_core.pipeline import (Bundle, decode_video, denoise, encode_frames, encode_prompts, frame_spread,
                                  geometry, sampler_settings, sampling_steps)
from apollo_core.sampling import check_start
from apollo_core.tasks import Task
from training.data.world import SceneSpec, sample_spec

from .detect import detect_video
from .metrics import video_semantics
from .quality import render_for_model

PROBE_SEED = 1_700_000  # training-distribution seeds beyond the training clips' (1,000,000-1,003,999)
# name -> (motion, events)
GROUPS: dict[str, tuple[str, int]] = {"slide, 1 hit": ("slide", 1), "bounce, 2 hits": ("bounce", 2),
                                      "pulse, 1": ("pulse", 1)}
STARTS = (0.0, 0.4, 0.6, 0.8)
ATTRIBUTES = ("shape", "colour", "motion", "count")
MAX_SCAN = 20_000  # seeds looked at before a group is called unfillable


def probe_specs(n: int, *, first_seed: int = PROBE_SEED, groups: dict[str, tuple[str, int]] = GROUPS
                ) -> dict[str, list[SceneSpec]]:
    """The first `n` single-object scenes (no talker) of each group, scanning seeds upward."""
    if n < 1:
        raise ValueError(f"the probe needs n >= 1 clips per group, got {n}")
    out: dict[str, list[SceneSpec]] = {name: [] for name in groups}
    for seed in range(first_seed, first_seed + MAX_SCAN):
        spec = sample_spec(seed)
        if spec.talker is not None or len(spec.objects) != 1:
            continue
        obj = spec.objects[0]
        for name, (motion, events) in groups.items():
            if obj.motion == motion and len(obj.times) == events and len(out[name]) < n:
                out[name].append(spec)
        if all(len(v) == n for v in out.values()):
            return out
    short = [name for name, v in out.items() if len(v) < n]
    raise ValueError(f"fewer than {n} scenes in groups {short} among seeds {first_seed}-{first_seed + MAX_SCAN - 1}; "
                     "ask for a smaller n")


def probe_clips(bundle: Bundle, spec: SceneSpec, starts: tuple[float, ...], *, seed: int, steps: int,
                video_cfg: float, solver: str, eta: float, spread: float) -> dict[float, torch.Tensor]:
    """T2V clips `[T, H, W, 3]` 0..1 of `spec`, one per start, each sampled from the real latents
    noised to that start with the same noise (the scene is rendered and encoded once)."""
    config = bundle.config
    real = render_for_model(spec, bundle)
    geo = geometry(config, spec.seconds, real.spec.size, real.spec.size)
    device = next(bundle.model.parameters()).device
    cond = encode_prompts(bundle.text_encoder, config, [real.video_caption], [real.audio_caption],
                          [real.speech]).to(device)
    uncond = encode_prompts(bundle.text_encoder, config, [""], [""], [""]).to(device)
    frames = torch.from_numpy(real.frames).float()[None] / 255.0  # [1, T, H, W, 3]
    clean = encode_frames(bundle.video_codec, frames) if any(s > 0 for s in starts) else None  # [1, C, T', H', W']
    out: dict[float, torch.Tensor] = {}
    for start in starts:
        gen = torch.Generator().manual_seed(seed)
        noise = frame_noise((1, *geo.video_latent), config.video_noise_corr, generator=gen)  # [1, C, T', H', W']
        init = interpolate(noise, clean, torch.tensor([start])) if start > 0 else noise  # [1, C, T', H', W']
        video = denoise(bundle.model, Task.T2V, cond, uncond, {"video": init.to(device)}, steps=steps,
                        video_cfg=video_cfg, audio_cfg=1.0, shift=1.0, solver=solver, eta=eta, generator=gen,
                        spread=spread, start=start)["video"]
        out[start] = decode_video(bundle.video_codec, video, geo.frames)[0]  # [T, H, W, 3]
    return out


def run_probe(bundle: Bundle, groups: dict[str, list[SceneSpec]], *, starts: tuple[float, ...] = STARTS,
              seed: int = 0, steps: int | None = None, video_cfg: float = 3.0,
              log: Callable[[str], None] | None = None) -> dict:
    """-> {"starts": {"<t0>": {group: {attribute: [right, objects]}, "all": ...}}, settings}: the
    objects whose shape, colour, motion and event count the quality bench's detectors read right."""
    starts = tuple(check_start(s) for s in starts)
    if not starts or not groups or not all(groups.values()):
        raise ValueError("the probe needs at least one start and one clip in every group")
    steps = sampling_steps(bundle, steps)
    solver, eta = sampler_settings(bundle, None, None)
    spread = frame_spread(bundle.defaults, None)
    if not math.isfinite(video_cfg):
        raise ValueError(f"video_cfg must be a finite number, got {video_cfg}")
    fps = float(bundle.config.video.fps)
    counts = {start: {name: {a: [0, 0] for a in ATTRIBUTES} for name in groups} for start in starts}
    for name, specs in groups.items():
        for i, spec in enumerate(specs):
            clips = probe_clips(bundle, spec, starts, seed=seed + i, steps=steps, video_cfg=video_cfg,
                                solver=solver, eta=eta, spread=spread)
            for start, clip in clips.items():
                score = video_semantics(spec, detect_video(clip.numpy(), fps))
                for a in ATTRIBUTES:
                    counts[start][name][a][0] += score[a][0]
                    counts[start][name][a][1] += score[a][1]
        if log:
            log(f"{name}: " + "; ".join(f"start {start:g} " + ", ".join(f"{a} {c}/{t}" for a, (c, t) in
                                                                      counts[start][name].items())
                                        for start in starts))
    table: dict[str, dict[str, dict[str, list[int]]]] = {}
    for start, rows in counts.items():
        rows["all"] = {a: [sum(r[a][0] for r in rows.values()), sum(r[a][1] for r in rows.values())]
                       for a in ATTRIBUTES}
        table[f"{start:g}"] = rows
    return {"starts": table, "steps": steps, "solver": solver, "eta": eta, "video_cfg": video_cfg, "seed": seed,
            "spread": spread, "clips_per_group": {name: len(v) for name, v in groups.items()},
            "spec_seeds": {name: [s.seed for s in v] for name, v in groups.items()}}


def format_probe(results: dict) -> str:
    groups = list(next(iter(results["starts"].values())))
    head = f"{'start':>5}  " + "  ".join(f"{g:>25}" for g in groups)
    lines = [head, f"{'':>5}  " + "  ".join(f"{'shape colour motion count':>25}" for _ in groups)]
    for start, rows in results["starts"].items():
        cells = ["{:>5} {:>6} {:>6} {:>5}".format(*(f"{rows[g][a][0]}/{rows[g][a][1]}" for a in ATTRIBUTES))
                 for g in groups]
        lines.append(f"{start:>5}  " + "  ".join(f"{c:>25}" for c in cells))
    lines.append(f"T2V, {results['steps']} {results['solver']} steps over [start, 1], video CFG "
                 f"{results['video_cfg']:g}; objects read right / objects (one per clip); start 0 = pure noise")
    return "\n".join(lines)
