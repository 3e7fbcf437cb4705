"""A deterministic synthetic audio-video world for APOLLO-AV (see SPEC.md in this folder).

A SceneSpec (JSON-serialisable) fully describes a clip; sample_spec(seed) draws one and
render(spec) turns it into frames, audio, captions and ground-truth events.
"""
from __future__ import annotations

from .constants import (
    BACKGROUNDS,
    HELDOUT_COMBOS,
    MOTIONS,
    PALETTE,
    PITCH_BAND,
    PITCH_HZ,
    SHAPES,
    SIZES,
    TRAIN_SEED_START,
)
from .heldout import HELDOUT_PATH, build_heldout
from .render import Event, Sample, render, scene_events
from .sampler import sample_spec
from .spec import ObjectSpec, SceneSpec, SpecError, TalkerSpec, load_specs, save_specs

__all__ = [
    "BACKGROUNDS", "HELDOUT_COMBOS", "HELDOUT_PATH", "MOTIONS", "PALETTE", "PITCH_BAND", "PITCH_HZ",
    "SHAPES", "SIZES", "TRAIN_SEED_START", "Event", "ObjectSpec", "Sample", "SceneSpec", "SpecError",
    "TalkerSpec", "build_heldout", "load_specs", "render", "sample_spec", "save_specs", "scene_events",
]
