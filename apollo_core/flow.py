"""Flow-matching maths in the paper's convention: t=0 is noise, t=1 is data,
x_t = t * x1 + (1 - t) * x0 and the target velocity is x1 - x0 (Eq. 2).

Pure functions: no model, no task logic.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def logit_normal(batch: int, *, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """t ~ sigmoid(N(mean, std)) `[B]` (SD3's timestep density)."""
    z = torch.randn(batch, generator=generator, device=device) * std + mean
    return torch.sigmoid(z)


def frame_noise(shape: tuple[int, ...] | torch.Size, corr: float = 0.0, *, generator: torch.Generator | None = None,
                device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal noise `[B, C, T, ...]` whose frames (axis 2) follow an AR(1) chain with
    correlation `corr` between neighbours (corr^k k frames apart); every element keeps unit
    variance. corr = 0 returns exactly `torch.randn(shape, generator=...)`, so seeds keep their clips."""
    if not 0.0 <= corr < 1.0:
        raise ValueError(f"frame_noise: corr must be in [0, 1), got {corr}")
    source = device if generator is None else generator.device
    z = torch.randn(tuple(shape), generator=generator, device=source, dtype=dtype)
    if device is not None:
        z = z.to(device)
    if corr == 0.0 or z.ndim < 3:
        return z
    fresh = math.sqrt(1.0 - corr * corr)
    frames = [z[:, :, 0]]  # each [B, C, ...]
    for k in range(1, z.shape[2]):
        frames.append(corr * frames[-1] + fresh * z[:, :, k])
    return torch.stack(frames, dim=2)  # [B, C, T, ...]


def shift_time(t: Tensor, shift: float) -> Tensor:
    """Resolution shift on the noise level sigma = 1 - t: sigma' = s*sigma / (1 + (s-1)*sigma).
    shift > 1 spends more of training/sampling near noise, as larger inputs need."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    sigma = 1.0 - t
    sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    return 1.0 - sigma


def resolution_shift(tokens: int, *, base_tokens: int = 256, max_tokens: int = 4096, base_shift: float = 0.5,
                     max_shift: float = 1.15) -> float:
    """FLUX-style shift from the sequence length: log-linear between (base, max) tokens."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = base_shift + slope * (tokens - base_tokens)
    return math.exp(mu)


def spread_times(t: Tensor, spread: Tensor | float, frames: int) -> Tensor:
    """Per-frame flow times `[B, frames]` of a clip whose earlier frames run ahead of its later
    ones: frame k sits at sigmoid(logit(t) + spread (0.5 - (k + 0.5) / frames)), `spread` `[B]` (or a
    float) in logit units between the clip's two ends. Frames are placed by their centre on the
    clip's time axis, so a video latent frame and the audio latent frames it spans get nearly the
    same time. t = 0 and t = 1 stay flat (all noise, all data), so sampling starts and ends as usual;
    rows with spread 0 get t exactly.

    Why: a sampler that settles a moving object frame by frame could read where it was one frame
    earlier (already clean) instead of fixing every frame's place at once from noise. On apollo-tiny
    it did not keep moving objects in every frame and cost sync (measured: its assets README)."""
    t = t.float()
    s = torch.as_tensor(spread, dtype=torch.float32, device=t.device).expand(t.shape[0])  # [B]
    pos = 0.5 - (torch.arange(frames, device=t.device, dtype=torch.float32) + 0.5) / frames  # [F]
    shifted = torch.sigmoid(torch.logit(t.clamp(0.0, 1.0))[:, None] + s[:, None] * pos)  # [B, F]
    flat = t[:, None].expand(-1, frames)  # [B, F]
    return torch.where(s[:, None] == 0, flat, shifted)


def expand_time(t: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar, `[B]` time, or `[B, T]` per latent frame (video `[B,C,T,H,W]` or audio
    `[B,C,T]`), against latents `like`."""
    if not isinstance(t, Tensor) or t.ndim == 0:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 1:
        return t.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)
    if t.ndim == 2:
        return t.view(t.shape[0], 1, t.shape[1], *([1] * (like.ndim - 3))).to(like.dtype)
    raise ValueError(f"time must be [B] or [B, T], got shape {tuple(t.shape)}")


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    tb = expand_time(t, x1)
    return tb * x1 + (1.0 - tb) * x0


def velocity_target(x0: Tensor, x1: Tensor) -> Tensor:
    return x1 - x0


def to_velocity(raw: Tensor, x_t: Tensor, t: Tensor, prediction: str, min_gap: float = 0.05) -> Tensor:
    """The network's raw output as a velocity. With x1-prediction (JiT), v = (x1_hat - x_t) / (1 - t);
    1 - t is clamped at `min_gap` so the last steps stay finite."""
    if prediction == "velocity":
        return raw
    if prediction == "x1":
        return (raw - x_t) / (1.0 - expand_time(t, x_t)).clamp_min(min_gap)
    raise ValueError(f"unknown prediction {prediction!r}; expected 'velocity' or 'x1'")


def clean_estimate(x_t: Tensor, v: Tensor, t: Tensor | float) -> Tensor:
    """x1_hat = x_t + (1 - t) v: the data the current velocity points at."""
    return x_t + (1.0 - expand_time(t, x_t)) * v


def noise_estimate(x_t: Tensor, v: Tensor, t: Tensor | float) -> Tensor:
    """x0_hat = x_t - t v: the noise the current velocity starts from."""
    return x_t - expand_time(t, x_t) * v


def time_weight(t: Tensor, cap: float) -> Tensor:
    """Per-sample loss multiplier `[B]` that caps the weight the velocity loss puts on the
    clean-estimate error at `cap` (0 = no cap, all ones).

    Why: ||v_hat - v||^2 = ||x1_hat - x1||^2 / (1 - t)^2 for either prediction target, so the plain
    velocity loss weighs near-clean samples hundreds of times more than noisy ones (400 at t = 0.95,
    2.8 at t = 0.4), and a few near-clean draws steer each small batch. Capping the weight at `cap`
    (min-SNR style) hands the gradient back to the noisy times where a clip's layout is decided."""
    if cap < 0:
        raise ValueError(f"time_weight: cap must be >= 0 (0 = off), got {cap}")
    if cap == 0:
        return torch.ones_like(t)
    return (cap * (1.0 - t).pow(2)).clamp_max(1.0)


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample mean squared error `[B]` over the elements where weight is 1 (weight broadcasts
    against pred; e.g. `[B, 1, T, 1, 1]` leaves a given first frame out of the loss)."""
    err = (pred.float() - target.float()).pow(2)
    if weight is None:
        return err.flatten(1).mean(1)
    w = weight.to(err.dtype).expand_as(err)
    return (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)
