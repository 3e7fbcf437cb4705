"""AdamW with decoupled weight decay on matrices only, and the per-stage learning-rate schedule.

The learning rate is a pure function of (stage, optimizer step within the stage), so the
checkpointed step restores the schedule exactly; no scheduler object carries hidden state.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import LRConfig, RunConfig


def lr_at(lr: LRConfig, step: int, steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of a stage of `steps` steps:
    linear warm-up to `peak`, then constant or cosine down to `final * peak` at the last step."""
    if step < lr.warmup:
        return lr.peak * (step + 1) / (lr.warmup + 1)
    if lr.schedule == "constant":
        return lr.peak
    span = max(1, steps - 1 - lr.warmup)
    progress = min(1.0, (step - lr.warmup) / span)
    low = lr.final * lr.peak
    return low + (lr.peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: RunConfig, lr: float, *, fused: bool = True) -> torch.optim.AdamW:
    """Weight decay on weight matrices; none on norms, biases and embeddings' 1-d parameters.
    The fused kernel is ~10x faster than the per-tensor loop on a CPU (it dominated the step of
    apollo-tiny); sharded (FSDP) parameters take the default implementation."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(cfg.betas[0], cfg.betas[1]), eps=1e-8, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
