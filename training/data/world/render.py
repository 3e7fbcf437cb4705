"""render(spec) -> Sample: frames, audio, captions and the ground-truth events, a pure function.

Frame j shows the world at time j / fps. All randomness (ambience, clicks, consonant noise)
comes from Generators seeded by spec.seed, so the same spec gives byte-identical output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import raster, sound
from .captions import captions
from .constants import (
    BACKGROUNDS,
    EVENT_OF_MOTION,
    EYE_RGB,
    FLOOR_RGB,
    MOUTH_RGB,
    PALETTE,
    PITCH_HZ,
    SKIN_RGB,
    TALKER_OBJECT,
    TIME_EPS,
    VOICES,
)
from .motion import floor_top, track
from .spec import SceneSpec, TalkerSpec
from .voice import frame_loudness, render_voice


@dataclass(frozen=True)
class Event:
    """A ground-truth event: its sound starts at `time` (seconds) and it is visible at frame
    ceil(time * fps). `object` indexes spec.objects, or is -1 for the talker. `pitch_hz` is the
    object's tone (or the talker's nominal f0)."""

    time: float
    kind: str
    object: int
    pitch_hz: float | None

    def frame(self, fps: float) -> int:
        return int(math.ceil(self.time * fps - TIME_EPS * fps))

    def sample(self, sample_rate: int) -> int:
        return sound.first_sample(self.time, sample_rate)


@dataclass(frozen=True, eq=False)
class Sample:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [S], peak <= 1
    fps: float
    sample_rate: int
    video_caption: str
    audio_caption: str
    speech: str
    events: list[Event]
    spec: SceneSpec
    mouth: np.ndarray  # float [T]: talker mouth opening in [0, 1] (zeros without a talker)


def scene_events(spec: SceneSpec) -> list[Event]:
    """All events of a scene, sorted by time then object."""
    out = [
        Event(t, EVENT_OF_MOTION[o.motion], i, PITCH_HZ[o.color])
        for i, o in enumerate(spec.objects)
        for t in o.times
    ]
    if spec.talker is not None:
        f0 = VOICES[spec.talker.voice]
        out += [Event(t, "syllable", TALKER_OBJECT, f0) for t in spec.talker.times]
    return sorted(out, key=lambda e: (e.time, e.object))


def _object_frames(spec: SceneSpec, times: np.ndarray) -> np.ndarray:
    size = spec.size
    canvas = raster.blank(len(times), size, BACKGROUNDS[spec.background])
    canvas[:, :, floor_top(size):] = np.asarray(FLOOR_RGB, dtype=np.float32)[:, None, None, None]
    for obj in spec.objects:  # later objects are drawn on top
        tr = track(obj, times, size=size, seconds=spec.seconds)
        y0, y1, x0, x1 = raster.bounds(tr.cx, tr.cy, tr.r, size)
        alpha = raster.coverage(obj.shape, tr.cx, tr.cy, tr.r, size, (y0, y1, x0, x1))  # [T, h, w]
        alpha *= tr.visible[:, None, None]
        raster.paint(canvas[:, :, y0:y1, x0:x1], alpha, PALETTE[obj.color])
    return canvas


def _face_frames(spec: SceneSpec, opening: np.ndarray) -> np.ndarray:
    """A face: head disc, two eyes, and a mouth whose height follows `opening` [T] in [0, 1]."""
    size, n = spec.size, len(opening)
    s = float(size)
    still = raster.blank(1, size, BACKGROUNDS[spec.background])  # head and eyes never move
    one = np.ones(1)
    raster.paint(still, raster.coverage("circle", 0.5 * s * one, 0.48 * s * one, 0.36 * s * one, size), SKIN_RGB)
    for eye_x in (0.37, 0.63):
        raster.paint(still, raster.coverage("circle", eye_x * s * one, 0.38 * s * one, 0.05 * s * one, size), EYE_RGB)
    canvas = np.repeat(still, n, axis=1)  # [3, T, H, W]
    # The mouth only ever covers rows within its largest half-height of its centre line.
    top, bottom = max(0, int(0.63 * s - 0.09 * s) - 2), min(size, int(0.63 * s + 0.09 * s) + 3)
    half_w = np.full(n, 0.12 * s)
    half_h = s * (0.012 + 0.075 * np.asarray(opening, dtype=np.float64))
    mouth = raster.ellipse(0.5 * s, 0.63 * s, half_w, half_h, size, top, bottom)
    raster.paint(canvas[:, :, top:bottom], mouth, MOUTH_RGB)
    return canvas


def _event_audio(spec: SceneSpec, out: np.ndarray) -> None:
    for i, obj in enumerate(spec.objects):
        pitch = PITCH_HZ[obj.color]
        for j, t in enumerate(obj.times):
            rng = np.random.default_rng([spec.seed, 1, i, j])
            if obj.motion == "bounce":
                snd, dur = sound.knock(pitch, rng)
            elif obj.motion == "slide":
                snd, dur = sound.clack(pitch, rng)
            elif obj.motion == "blink":
                snd, dur = sound.beep(pitch)
            else:
                snd, dur = sound.swell_tone(pitch)
            sound.place(out, t, spec.sample_rate, snd, dur)


def render(spec: SceneSpec) -> Sample:
    """Render a spec to frames, audio, captions and events (deterministic, no global RNG)."""
    if not isinstance(spec, SceneSpec):
        raise ValueError(f"render expects a SceneSpec, got {type(spec).__name__}; use SceneSpec.from_dict")
    n_frames, n_samples = spec.num_frames, spec.num_samples
    times = np.arange(n_frames, dtype=np.float64) / spec.fps
    audio = np.zeros(n_samples, dtype=np.float64)
    if spec.talker is not None:
        talker: TalkerSpec = spec.talker
        voice = render_voice(talker, n_samples, spec.sample_rate, spec.seed)
        opening = frame_loudness(voice, spec.fps, spec.sample_rate, n_frames)
        canvas = _face_frames(spec, opening)
        audio += voice
    else:
        opening = np.zeros(n_frames)
        canvas = _object_frames(spec, times)
        _event_audio(spec, audio)
    if spec.ambience > 0:
        audio += sound.ambience(n_samples, spec.ambience, np.random.default_rng([spec.seed, 0]))
    peak = float(np.abs(audio).max()) if n_samples else 0.0
    if peak > 1.0:  # only overlapping loud events get here; scale rather than clip to keep onsets
        audio *= 1.0 / peak
    video_caption, audio_caption, speech = captions(spec)
    return Sample(
        frames=raster.to_uint8(canvas),
        audio=audio.astype(np.float32),
        fps=spec.fps,
        sample_rate=spec.sample_rate,
        video_caption=video_caption,
        audio_caption=audio_caption,
        speech=speech,
        events=scene_events(spec),
        spec=spec,
        mouth=opening,
    )
