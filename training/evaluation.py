"""The evaluation hook: validation loss per task on held-out clips, plus optional quality metrics.

Validation noise and timesteps come from a generator re-seeded at every evaluation, so curves
compare like with like. Keys of the returned record:
    val/<task>/<video|audio|total>   mean flow-matching loss over the held-out samples
    val/<task>/per_modality          total / number of generated modalities (used by rebalancing)
    metrics/<task>/<name>            whatever the quality-metrics callable returns

The metrics callable is configured as "module:function" and called on the main process as
    fn(model=ApolloDiT with EMA weights in eval mode, step=int, device=torch.device) -> dict[str, float]
returning "task/name" keys (higher is better, e.g. {"t2av/sync_precision": 0.8}).
"""
from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any, Callable

import numpy as np
import torch

from apollo_core.objective import training_loss
from apollo_core.tasks import Task

from .config import FlowConfig, QualityFilter
from .data.shards import LatentBank

MetricsFn = Callable[..., dict[str, float]]


def load_metrics_fn(spec: str) -> MetricsFn:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"eval.metrics {spec!r}: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"eval.metrics {spec!r}: {module_name} has no callable {attr!r}")
    return fn


class Evaluator:
    def __init__(self, bank: LatentBank, source: str, *, samples: int, batch_size: int, tasks: list[Task],
                 flow: FlowConfig, seed: int, device: torch.device) -> None:
        pool = bank.eligible(source, QualityFilter())
        if len(pool) == 0:
            raise ValueError(f"eval.source {source!r} has no usable clips")
        self.bank, self.indices = bank, pool[:samples]
        self.batch_size, self.tasks, self.flow, self.seed, self.device = batch_size, tasks, flow, seed, device

    @torch.no_grad()
    def validation_loss(self, model: Any, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, task in enumerate(sorted(self.tasks, key=lambda t: t.value)):
            gen = torch.Generator(device=self.device).manual_seed(self.seed * 1009 + k)
            sums: dict[str, float] = {}
            for start in range(0, len(self.indices), self.batch_size):
                idx = self.indices[start:start + self.batch_size]
                video, audio, cond = self.bank.gather(idx, np.zeros(len(idx), dtype=bool), self.device)
                with autocast():
                    losses = training_loss(model, task, video=video, audio=audio, cond=cond, generator=gen,
                                           logit_mean=self.flow.logit_mean, logit_std=self.flow.logit_std,
                                           shift=self.flow.shift)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(idx)
            for name, total in sums.items():
                out[f"val/{task.value}/{name}"] = total / len(self.indices)
            out[f"val/{task.value}/per_modality"] = out[f"val/{task.value}/total"] / len(task.spec.generates)
        return out
