"""`run_quality`: generate clips from scene specs with the core pipeline, for each task, and score
them against the specs' ground truth with the analytic detectors and metrics.

Each spec is rendered at the model's own geometry (frame size from the checkpoint's defaults, the
model's fps and sample rate), so the real clip, the conditioning inputs (first frame for
TI2V/TI2AV, frames for V2A, audio for A2V) and the generated clip share one grid. Only what a task
generates is scored for semantics and unimodal quality; sync is scored whenever a clip has both
video and audio; identity for the image-conditioned tasks. The `reference` row scores the rendered
real clips themselves: the ceiling every metric reaches on ground truth.

FD compares the generated clips with the real renders of the same specs, so a generator that
reproduced them exactly would score 0. For scale: real clips of 12 other held-out specs score
7-17 (video) and 7-13 (audio) against 12 real clips, the sampling floor of such small sets.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch

from apollo_core.pipeline import (Bundle, Request, decode_audio, decode_video, encode_frames, encode_waveform, generate,
                                  frame_spread, geometry, load_bundle, sampler_settings, sampling_steps, sync_scales)
from apollo_core.sampling import Solver
from apollo_core.tasks import Task
from training.data.world import HELDOUT_PATH, Sample, SceneSpec, SpecError, load_specs, render

from .detect import detect_onsets, detect_video
from .features import audio_features, frechet_distance, video_features
from .metrics import Tally, audio_semantics, clip_sync, identity, motion_pairs, scene_kind, video_semantics

REFERENCE = "reference"
# The real clips through the model's codecs and back: the ceiling a perfect generator reaches in
# this latent space (codec blur of shapes and onsets shows here, not in the model's rows).
CODEC = "codec"
# The paper's cascaded baseline with one model: T2V, then V2A on the generated frames. Scored
# like T2AV (sync, both modalities' semantics and FD).
CASCADE = "cascade"
TASKS: tuple[str, ...] = tuple(t.value for t in Task)


def render_for_model(spec: SceneSpec, bundle: Bundle) -> Sample:
    """Render a spec at the model's frame size, fps and sample rate (events keep their times)."""
    config = bundle.config
    width = int(bundle.defaults.get("width") or spec.size)
    height = int(bundle.defaults.get("height") or width)
    if width != height:
        raise ValueError(f"checkpoint defaults give a {width}x{height} frame but the synthetic world is square; "
                         "save the checkpoint with equal default width and height")
    try:
        adapted = dataclasses.replace(spec, size=width, fps=float(config.video.fps), sample_rate=int(config.audio.sample_rate))
    except SpecError as exc:
        raise ValueError(f"spec seed {spec.seed} cannot be rendered at the model's {config.video.fps:g} fps / "
                         f"{config.audio.sample_rate} Hz / {width} px: {exc}") from None
    geometry(config, adapted.seconds, width, width)  # raises with the nearest valid clip length
    return render(adapted)


def make_request(task: Task, real: Sample, *, steps: int, seed: int, video_cfg: float, audio_cfg: float,
                 solver: str | None = None, shift: float = 1.0, video_sync_cfg: float | None = None,
                 audio_sync_cfg: float | None = None, eta: float | None = None,
                 spread: float | None = None) -> Request:
    """The request a task gets for one spec: captions as prompts, real inputs where it conditions."""
    frames = torch.from_numpy(real.frames).float() / 255.0  # [T, H, W, 3]
    return Request(
        task=task, video_prompt=real.video_caption, audio_prompt=real.audio_caption, speech=real.speech,
        image=frames[0] if task.needs_image else None,
        video=frames if task.needs_video else None,
        audio=torch.from_numpy(real.audio)[None] if task.needs_audio else None,
        seconds=real.spec.seconds, width=real.spec.size, height=real.spec.size,
        steps=steps, video_cfg=video_cfg, audio_cfg=audio_cfg, seed=seed, solver=solver, shift=shift,
        video_sync_cfg=video_sync_cfg, audio_sync_cfg=audio_sync_cfg, eta=eta, spread=spread,
    )


def _generate(bundle: Bundle, name: str, real: Sample, **kw: Any
              ) -> tuple[np.ndarray | None, np.ndarray | None, set[str], np.ndarray | None]:
    """Frames, waveform, the modalities the run generated, and the reference image (if any) of
    one clip for a task name or the cascade; `kw` are make_request's settings."""
    if name == CASCADE:
        video = generate(bundle, make_request(Task.T2V, real, **kw)).frames  # [T, H, W, 3] 0..1
        request = dataclasses.replace(make_request(Task.V2A, real, **kw), video=video)
        clip = generate(bundle, request)
        generated = {"video", "audio"}
    else:
        task = Task.parse(name)
        clip = generate(bundle, make_request(task, real, **kw))
        generated = set(task.spec.generates)
        if task.needs_image:
            return _arrays(clip) + (generated, real.frames[0])
    return _arrays(clip) + (generated, None)


def _codec_roundtrip(bundle: Bundle, real: Sample) -> tuple[np.ndarray, np.ndarray]:
    """A real clip encoded and decoded by the bundle's codecs: frames `[T, H, W, 3]` 0..1, wave `[S]`."""
    frames = torch.from_numpy(real.frames).float()[None] / 255.0  # [1, T, H, W, 3]
    wave = torch.from_numpy(np.asarray(real.audio, np.float32))[None, None]  # [1, 1, S]
    video = decode_video(bundle.video_codec, encode_frames(bundle.video_codec, frames), frames.shape[1])
    audio = decode_audio(bundle.audio_codec, encode_waveform(bundle.audio_codec, wave), wave.shape[-1])
    return video[0].numpy(), audio[0, 0].numpy()


def _arrays(clip) -> tuple[np.ndarray | None, np.ndarray | None]:
    return (clip.frames.numpy() if clip.frames is not None else None,
            clip.waveform.numpy() if clip.waveform is not None else None)


class _TaskScore:
    """Accumulates one task's clip scores and feature sets."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tally = Tally()
        self.video_feats: list[np.ndarray] = []
        self.audio_feats: list[np.ndarray] = []
        self.real_video: list[np.ndarray] = []
        self.real_audio: list[np.ndarray] = []
        self.seconds: list[float] = []

    def add(self, real: Sample, frames: np.ndarray | None, audio: np.ndarray | None, *, score_video: bool,
            score_audio: bool, image: np.ndarray | None, real_feats: dict[str, np.ndarray]) -> None:
        spec, t = real.spec, self.tally
        t.clips += 1
        video = detect_video(frames, real.fps) if frames is not None else None
        onsets = detect_onsets(audio, real.sample_rate) if audio is not None else None
        if video is not None and score_video:
            t.add_semantics(video_semantics(spec, video))
            t.add_motions(motion_pairs(spec, video))
            self.video_feats.append(video_features(frames))
            self.real_video.append(real_feats["video"])
        if onsets is not None and score_audio:
            t.add_semantics(audio_semantics(spec, onsets))
            self.audio_feats.append(audio_features(audio, real.sample_rate, onsets=onsets))
            self.real_audio.append(real_feats["audio"])
        if video is not None and onsets is not None:
            t.add_sync(clip_sync(video, onsets, audio, real.sample_rate), scene_kind(spec))
        if image is not None and frames is not None:
            t.add_identity(identity(frames, image))

    def summary(self, compare: bool) -> dict:
        out = self.tally.summary()
        if compare:
            out["fd_video"] = frechet_distance(np.stack(self.video_feats), np.stack(self.real_video)) if self.video_feats else None
            out["fd_audio"] = frechet_distance(np.stack(self.audio_feats), np.stack(self.real_audio)) if self.audio_feats else None
        if self.seconds:
            out["generate_seconds"] = float(np.mean(self.seconds))
        return out


def _clean(x: object) -> object:
    """JSON-safe: NaN and infinities become None, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def run_quality(checkpoint: str | None, specs: list[SceneSpec] | None, tasks: list[str], n: int, steps: int | None,
                seed: int, *, reference: bool = True, video_cfg: float = 3.0, audio_cfg: float = 3.0,
                solver: str | None = None, shift: float = 1.0, video_sync_cfg: float | None = None,
                audio_sync_cfg: float | None = None, eta: float | None = None, spread: float | None = None,
                log: Callable[[str], None] | None = None) -> dict:
    """Generate `n` clips per task (the first n specs; the held-out file when `specs` is None) and
    score them (steps, solver, eta, sync scales None: the checkpoint's recommended values). Returns a JSON-serialisable
    dict: run settings and `tasks[name] -> figures`, with a `reference` row for the rendered real
    clips when `reference` is true."""
    names = [t if t == CASCADE else Task.parse(t).value for t in tasks]
    if not names:
        raise ValueError(f"tasks is empty; choose from {list(TASKS) + [CASCADE]}")
    if n < 1 or (steps is not None and steps < 1):
        raise ValueError(f"n and steps must be >= 1, got n={n}, steps={steps}")
    source = str(HELDOUT_PATH) if specs is None else "given"
    specs = load_specs(HELDOUT_PATH) if specs is None else list(specs)
    if not specs:
        raise ValueError("no specs to generate from; pass a non-empty specs list or file")
    specs = specs[:n]
    started = time.perf_counter()
    bundle = load_bundle(checkpoint)
    steps = sampling_steps(bundle, steps)
    video_sync_cfg, audio_sync_cfg = sync_scales(bundle, video_sync_cfg, audio_sync_cfg)
    solver, eta = sampler_settings(bundle, solver, eta)
    spread = frame_spread(bundle.defaults, spread)
    reals = [render_for_model(s, bundle) for s in specs]
    real_feats = [{"video": video_features(r.frames), "audio": audio_features(r.audio, r.sample_rate)} for r in reals]
    results: dict[str, dict] = {}
    if reference:
        ref = _TaskScore(REFERENCE)
        for real, feats in zip(reals, real_feats):
            ref.add(real, real.frames, real.audio, score_video=True, score_audio=True, image=real.frames[0], real_feats=feats)
        results[REFERENCE] = ref.summary(compare=False)
        ceiling = _TaskScore(CODEC)
        for real, feats in zip(reals, real_feats):
            frames, audio = _codec_roundtrip(bundle, real)
            ceiling.add(real, frames, audio, score_video=True, score_audio=True, image=real.frames[0], real_feats=feats)
        results[CODEC] = ceiling.summary(compare=True)
    for name in names:
        score = _TaskScore(name)
        for i, (real, feats) in enumerate(zip(reals, real_feats)):
            t0 = time.perf_counter()
            frames, audio, scored, image = _generate(bundle, name, real, steps=steps, seed=seed + i,
                                                     video_cfg=video_cfg, audio_cfg=audio_cfg, solver=solver,
                                                     shift=shift, video_sync_cfg=video_sync_cfg,
                                                     audio_sync_cfg=audio_sync_cfg, eta=eta, spread=spread)
            score.seconds.append(time.perf_counter() - t0)
            score.add(real, frames, audio, score_video="video" in scored, score_audio="audio" in scored,
                      image=image, real_feats=feats)
            if log is not None:
                log(f"{name} {i + 1}/{len(reals)} ({score.seconds[-1]:.1f} s)")
        results[name] = score.summary(compare=True)
    return _clean({
        "checkpoint": None if checkpoint is None else str(checkpoint), "preset": bundle.config.name,
        "specs": source, "n": len(specs), "steps": steps, "seed": seed, "video_cfg": video_cfg, "audio_cfg": audio_cfg,
        "video_sync_cfg": video_sync_cfg, "audio_sync_cfg": audio_sync_cfg, "solver": solver, "shift": shift,
        **({"eta": eta} if Solver.parse(solver) is Solver.EULER_ANCESTRAL else {}),
        **({"spread": spread} if spread > 0 else {}),
        "geometry": {"size": reals[0].spec.size, "fps": reals[0].fps, "sample_rate": reals[0].sample_rate},
        "seconds": time.perf_counter() - started, "tasks": results,
    })


COLUMNS: tuple[tuple[str, str, str], ...] = (
    # header, key, format
    ("clips", "clips", "{:d}"),
    ("off ms", "sync_offset_ms", "{:.1f}"),
    ("in-frm", "sync_in_frame", "{:.2f}"),
    ("1-frm", "sync_within_1_frame", "{:.2f}"),
    ("1-obj", "sync_one_object_within_1_frame", "{:.2f}"),
    ("conf", "sync_conf", "{:.2f}"),
    ("lag", "sync_lag_frames", "{:+.2f}"),
    ("colour", "acc_colour", "{:.2f}"),
    ("shape", "acc_shape", "{:.2f}"),
    ("motion", "acc_motion", "{:.2f}"),
    ("count", "acc_count", "{:.2f}"),
    ("pitch", "acc_pitch", "{:.2f}"),
    ("sound", "acc_sound", "{:.2f}"),
    ("a-cnt", "acc_audio_count", "{:.2f}"),
    ("FD-v", "fd_video", "{:.2f}"),
    ("FD-a", "fd_audio", "{:.2f}"),
    ("PSNR", "id_psnr", "{:.1f}"),
    ("id-col", "id_later_colour", "{:.2f}"),
)


def format_table(results: dict) -> str:
    """A fixed-width console table: one row per task, '-' where a figure does not apply."""
    rows = [["task"] + [h for h, _, _ in COLUMNS]]
    for name, figures in results.get("tasks", {}).items():
        row = [name]
        for _, key, fmt in COLUMNS:
            v = figures.get(key)
            row.append("-" if v is None else fmt.format(int(v) if fmt == "{:d}" else v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    head = (f"quality: {results.get('preset', '?')} checkpoint={results.get('checkpoint') or 'default'} "
            f"n={results.get('n')} steps={results.get('steps')} seed={results.get('seed')} "
            f"({results.get('geometry', {}).get('size')} px, {results.get('geometry', {}).get('fps')} fps, "
            f"{results.get('geometry', {}).get('sample_rate')} Hz)")
    legend = ("reference: the rendered real clips; codec: those through the model's codecs and back (the ceiling "
              "in this latent space); off ms: mean |audio onset - visual event|; in-frm: share of events whose onset falls on the event's "
              "frame; 1-frm: share within one frame (the issue's target); 1-obj: the same over one-object clips (no other object's onset to borrow); conf/lag: SyncNet-style peak-minus-median correlation and its lag (frames, + = audio late); "
              "accuracies vs the spec; FD: Frechet distance to the rendered real clips; PSNR/id-col: first-frame and "
              "later-colour identity (TI2V/TI2AV)")
    return "\n".join([head, *lines, legend])

