"""sample_spec(seed) -> SceneSpec: the training distribution of scenes.

All event times are on frame boundaries (k / fps) with frames in [1, T - 3], so every event has a
frame before it and at least two after. Draws come from one Generator seeded by the seed; the
same seed and options always give the same spec.
"""
from __future__ import annotations

import math

import numpy as np

from .constants import (
    BACKGROUNDS,
    CONSONANTS,
    HELDOUT_COMBOS,
    MOTIONS,
    PALETTE,
    PULSE_MAX_SCALE,
    SHAPES,
    SIZES,
    VOICES,
    VOWELS,
)
from .spec import ObjectSpec, SceneSpec, TalkerSpec

# Smallest gap (seconds) between two events of one object, per motion: a bounce needs room for an
# arc, a pulse must finish its swell, a blink must disappear before it reappears.
MIN_GAP = {"bounce": 0.375, "slide": 0.5, "pulse": 0.625, "blink": 0.375}
CROSS_GAP = 0.25  # smallest gap between events of different objects (distinct onsets)
SYLLABLE_SECONDS = 0.3
SYLLABLE_GAP = 0.375
MAX_EVENTS = 3
LAYOUT_MARGIN = 0.03  # of the frame width, between side-by-side objects
_SEED_TAG = 0x5CE4E


def _frames(rng: np.random.Generator, count: int, lo: int, hi: int, gap: int, avoid: list[int], cross: int) -> list[int]:
    """`count` sorted frames in [lo, hi], pairwise >= gap apart and >= cross from every frame in
    `avoid`; fewer if they do not fit. Uniform over valid sets via the stars-and-bars shift."""
    for n in range(count, 0, -1):
        free = (hi - lo + 1) - (n - 1) * (gap - 1)
        if free < n:
            continue
        for _ in range(32):
            picks = np.sort(rng.choice(free, size=n, replace=False))
            frames = [lo + int(p) + i * (gap - 1) for i, p in enumerate(picks)]
            if all(abs(f - a) >= cross for f in frames for a in avoid):
                return frames
    return []


def _attributes(rng: np.random.Generator, motions: tuple[str, ...], used_colors: set[str],
                forced: tuple[str, str, str] | None) -> tuple[str, str, str]:
    if forced is not None:
        return forced
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colors = [c for c in PALETTE if c not in used_colors]
        color = colors[int(rng.integers(len(colors)))]
        motion = motions[int(rng.integers(len(motions)))]
        if (shape, color, motion) not in HELDOUT_COMBOS:
            return shape, color, motion


def _objects(rng: np.random.Generator, n_frames: int, fps: float, forced: tuple[str, str, str] | None) -> tuple[ObjectSpec, ...]:
    count = 1 if rng.random() < 0.6 else 2
    drafts: list[dict] = []
    taken: list[int] = []
    for i in range(count):
        if i == 0:
            motions = MOTIONS
        else:  # two objects never cross: both slide (upper and lower lane) or neither does
            motions = ("slide",) if drafts[0]["motion"] == "slide" else tuple(m for m in MOTIONS if m != "slide")
        shape, color, motion = _attributes(rng, motions, {d["color"] for d in drafts}, forced if i == 0 else None)
        size = tuple(SIZES)[int(rng.integers(len(SIZES)))]
        gap = max(1, math.ceil(MIN_GAP[motion] * fps - 1e-9))
        cross = max(1, math.ceil(CROSS_GAP * fps - 1e-9))
        frames = _frames(rng, int(rng.integers(1, MAX_EVENTS + 1)), 1, n_frames - 3, gap, taken, cross)
        if not frames:
            if i == 0:
                raise ValueError(f"sample_spec: no room for events in {n_frames} frames; use seconds * fps >= 4")
            break
        taken += frames
        drafts.append(dict(
            shape=shape, color=color, size=size, motion=motion, times=tuple(f / fps for f in frames),
            x=float(rng.uniform()), y=float(rng.uniform()), direction=("left", "right")[int(rng.integers(2))],
        ))
    _layout(drafts)
    return tuple(ObjectSpec(**dict(d, x=round(d["x"], 4), y=round(d["y"], 4))) for d in drafts)


def _layout(drafts: list[dict]) -> None:
    """Turn the uniform draws in x, y into positions that keep two objects apart at all times."""
    if len(drafts) == 1:
        drafts[0]["x"] = 0.2 + 0.6 * drafts[0]["x"]
        drafts[0]["y"] = 0.2 + 0.6 * drafts[0]["y"]
        return
    if drafts[0]["motion"] == "slide":  # lanes: object 0 in the top fifth, object 1 in the bottom fifth
        drafts[0]["y"] = 0.2 * drafts[0]["y"]
        drafts[1]["y"] = 0.8 + 0.2 * drafts[1]["y"]
        return
    for d in drafts:
        d["y"] = 0.2 + 0.6 * d["y"]
    # Side by side: the gap left after both full-size footprints (pulses at full swell) is shared
    # out at random, with LAYOUT_MARGIN of the frame always between them.
    reach = [SIZES[d["size"]] * (PULSE_MAX_SCALE if d["motion"] == "pulse" else 1.0) for d in drafts]
    slack = max(0.0, 1.0 - 2.0 * sum(reach) - LAYOUT_MARGIN)
    drafts[0]["x"] = 0.5 * slack * drafts[0]["x"] / (1.0 - 2.0 * reach[0])
    drafts[1]["x"] = 1.0 - 0.5 * slack * drafts[1]["x"] / (1.0 - 2.0 * reach[1])


def _talker(rng: np.random.Generator, n_frames: int, fps: float, seconds: float) -> TalkerSpec:
    last = math.floor((seconds - SYLLABLE_SECONDS) * fps + 1e-9)
    gap = max(1, math.ceil(SYLLABLE_GAP * fps - 1e-9))
    frames = _frames(rng, int(rng.integers(2, 5)), 1, last, gap, [], 1)
    if not frames:
        raise ValueError(f"sample_spec: a talker needs seconds >= {SYLLABLE_SECONDS + 1 / fps:.3f}")
    consonants = ("",) + tuple(CONSONANTS)
    syllables = tuple(
        consonants[int(rng.integers(len(consonants)))] + tuple(VOWELS)[int(rng.integers(len(VOWELS)))]
        for _ in frames
    )
    voice = tuple(VOICES)[int(rng.integers(len(VOICES)))]
    return TalkerSpec(syllables=syllables, times=tuple(f / fps for f in frames), voice=voice,
                      syllable_seconds=SYLLABLE_SECONDS)


def sample_spec(
    seed: int,
    *,
    seconds: float = 2.0,
    fps: float = 8.0,
    size: int = 64,
    sample_rate: int = 16000,
    talker_prob: float = 0.2,
    combo: tuple[str, str, str] | None = None,
) -> SceneSpec:
    """A random scene for `seed`. Training uses seeds >= TRAIN_SEED_START. Never draws a
    HELDOUT_COMBOS triple unless `combo` forces object 0's (shape, colour, motion), which also
    forces an object scene (the held-out file uses this)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"sample_spec: seed must be an integer >= 0, got {seed!r}")
    if not 0.0 <= talker_prob <= 1.0:
        raise ValueError(f"sample_spec: talker_prob must be in [0, 1], got {talker_prob!r}")
    if combo is not None:
        shape, color, motion = combo
        ObjectSpec(shape=shape, color=color, size="small", motion=motion, times=(0.0,))  # validates names
    n_frames = int(round(seconds * fps))
    if n_frames < 4:
        raise ValueError(f"sample_spec: needs at least 4 frames, got seconds * fps = {seconds * fps}")
    rng = np.random.default_rng([int(seed), _SEED_TAG])
    background = tuple(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    ambience = 0.0 if rng.random() < 0.5 else round(float(rng.uniform(0.002, 0.01)), 4)
    caption_seed = int(rng.integers(0, 2**31))
    talks = combo is None and rng.random() < talker_prob
    return SceneSpec(
        seed=int(seed), background=background,
        objects=() if talks else _objects(rng, n_frames, fps, combo),
        talker=_talker(rng, n_frames, fps, seconds) if talks else None,
        seconds=seconds, fps=fps, size=size, sample_rate=sample_rate,
        ambience=ambience, caption_seed=caption_seed,
    )
