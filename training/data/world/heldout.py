"""The held-out evaluation set; `python -m training.data.world` rewrites its JSONL file.

Rule: seeds 0 .. 63 (all below TRAIN_SEED_START, which training never goes under). Specs 0 .. 47
are ordinary draws of sample_spec; specs 48 .. 63 force object 0 to one of HELDOUT_COMBOS, the
(shape, colour, motion) triples sample_spec never produces, cycling through them.
"""
from __future__ import annotations

from pathlib import Path

from .constants import HELDOUT_COMBOS
from .sampler import sample_spec
from .spec import SceneSpec

HELDOUT_PATH = Path(__file__).resolve().parent.parent / "specs" / "heldout.jsonl"
HELDOUT_SIZE = 64
HELDOUT_PLAIN = 48


def build_heldout() -> list[SceneSpec]:
    specs = []
    for seed in range(HELDOUT_SIZE):
        combo = None if seed < HELDOUT_PLAIN else HELDOUT_COMBOS[(seed - HELDOUT_PLAIN) % len(HELDOUT_COMBOS)]
        specs.append(sample_spec(seed, combo=combo))
    return specs
