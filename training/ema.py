"""Exponential moving average of the weights: what gets evaluated and exported.

The shadow copy lives beside the training parameters (same shapes, so under FSDP each rank keeps
the EMA of its own shard). `swapped` puts the EMA values into the live parameters for evaluation
or saving and restores the training values afterwards, bit for bit.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone().float() for p in self.params]

    def rate(self, updates: int) -> float:
        """Warm-up: a young model is averaged over its short history, not over the random init."""
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, updates: int) -> None:
        d = self.rate(updates)
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    @torch.no_grad()
    def capture(self) -> None:
        """Shadow <- the live parameters (used inside `swapped` to load a saved EMA)."""
        for p, s in zip(self.params, self.shadow):
            s.copy_(p.detach().float())
