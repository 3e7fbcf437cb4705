"""Which samples each micro-batch holds: the stage's data mixture, quality filter and caption
dropout, drawn with a seeded generator whose state goes into every checkpoint.

Each process has its own stream (seeded with the run seed and its rank), so DDP ranks see
different samples; `batch_size` is per process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import QualityFilter
from .shards import LatentBank


@dataclass(frozen=True)
class Draw:
    indices: np.ndarray  # [B] rows of the bank
    drop: np.ndarray  # [B] bool: empty captions and transcript (classifier-free guidance)


class BatchSampler:
    def __init__(self, bank: LatentBank, seed: int, rank: int = 0) -> None:
        self.bank = bank
        self.rng = np.random.Generator(np.random.PCG64([seed, rank, 0x5EED]))
        self.sources: list[str] = []
        self.pools: list[np.ndarray] = []
        self.probs = np.ones(1)
        self.caption_dropout = 0.0

    def configure(self, data: dict[str, float], quality: QualityFilter, caption_dropout: float) -> dict[str, int]:
        """Set the stage's mixture; returns the number of eligible samples per source."""
        names = sorted(k for k, w in data.items() if w > 0)
        pools = [self.bank.eligible(name, quality) for name in names]
        empty = [n for n, p in zip(names, pools) if len(p) == 0]
        if empty:
            raise ValueError(f"data sources {empty} have no sample passing the quality filter {quality}; "
                             "loosen the filter or add data")
        self.sources, self.pools = names, pools
        w = np.array([data[n] for n in names], dtype=np.float64)
        self.probs = w / w.sum()
        self.caption_dropout = float(caption_dropout)
        return {n: len(p) for n, p in zip(names, pools)}

    def draw(self, batch_size: int) -> Draw:
        src = self.rng.choice(len(self.sources), size=batch_size, p=self.probs)
        idx = np.empty(batch_size, dtype=np.int64)
        for s in np.unique(src):
            where = np.nonzero(src == s)[0]
            pool = self.pools[s]
            idx[where] = pool[self.rng.integers(0, len(pool), size=len(where))]
        drop = self.rng.random(batch_size) < self.caption_dropout
        return Draw(idx, drop)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
