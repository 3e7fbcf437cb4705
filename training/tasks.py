"""Random modality masking: one task per micro-batch, drawn from the stage's mixture.

Drawing per micro-batch (not per sample) keeps every forward pass free of dense attention masks:
all samples of a micro-batch share one stream layout. The sampler has its own seeded generator
whose state goes into every checkpoint, so a resumed run draws the same tasks. All processes use
the same seed, so in DDP every rank runs the same task at the same step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from apollo_core.tasks import Task


def normalise(weights: dict[Task, float]) -> dict[Task, float]:
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"task weights must be >= 0 with a positive sum, got { {t.value: w for t, w in weights.items()} }")
    return {t: w / total for t, w in weights.items()}


class TaskSampler:
    def __init__(self, weights: dict[Task, float], seed: int) -> None:
        self.set_weights(weights)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def set_weights(self, weights: dict[Task, float]) -> None:
        probs = normalise(weights)
        # A fixed order keeps the draw sequence independent of dict insertion order.
        self.tasks = sorted((t for t in probs if probs[t] > 0), key=lambda t: t.value)
        self.probs = np.array([probs[t] for t in self.tasks], dtype=np.float64)
        self.probs /= self.probs.sum()

    @property
    def weights(self) -> dict[Task, float]:
        return dict(zip(self.tasks, self.probs.tolist()))

    def draw(self) -> Task:
        return self.tasks[int(self.rng.choice(len(self.tasks), p=self.probs))]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
