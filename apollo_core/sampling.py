"""Samplers for flow matching (t: 0 noise -> 1 data) over a dict of modalities.

A sampler integrates `velocity_fn(state, t) -> velocities` from t=0 to t=1 on a shifted grid,
or from a later `start` when the initial state is a clip already noised to that time (SDEdit).
Given content (a V2A video, a TI2V first frame) is the caller's business: it returns zero
velocity there, which every solver below leaves unchanged (the ancestral solver holds elements
whose velocity is exactly zero).
"""
from __future__ import annotations

import enum
import math
from typing import Callable

import torch
from torch import Tensor

from .flow import clean_estimate, expand_time, frame_noise, noise_estimate, shift_time, spread_times

State = dict[str, Tensor]
# The ancestral solver's default share of fresh noise per step (measured on apollo-tiny: assets README).
ANCESTRAL_ETA = 0.5
VelocityFn = Callable[[State, float], State]
StepCallback = Callable[[int, int, State], None]  # (step index, total steps, current clean estimate)


class Solver(enum.Enum):
    EULER = "euler"
    EULER_ANCESTRAL = "euler_ancestral"
    HEUN = "heun"
    DPMPP_2M = "dpmpp_2m"

    @staticmethod
    def parse(value: "str | Solver") -> "Solver":
        if isinstance(value, Solver):
            return value
        try:
            return Solver(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown sampler {value!r}; choose one of {[s.value for s in Solver]}") from None


def check_spread(spread: float) -> float:
    """A frame spread (`flow.spread_times`) as a float; raises unless finite and >= 0."""
    value = float(spread)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"spread must be a finite number >= 0 (0 = every frame at one time), got {spread}")
    return value


def check_start(start: float) -> float:
    """A sampling start time as a float; raises unless 0 <= start < 1 (1 is the clean end)."""
    value = float(start)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"start must be in [0, 1) (0 = pure noise; the flow time the initial state is noised "
                         f"to), got {start}")
    return value


def time_grid(steps: int, shift: float = 1.0, start: float = 0.0) -> list[float]:
    """steps + 1 times from `start` to 1: the shifted grid of [0, 1] mapped onto [start, 1], so a
    later start spends all its steps on the part of the path that is left."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = check_start(start)
    grid = shift_time(torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64), shift)
    return [start + (1.0 - start) * float(x) for x in grid]


def guided(v_cond: State, v_uncond: State, scales: dict[str, float]) -> State:
    """Classifier-free guidance with a separate scale per modality."""
    return {k: v_uncond[k] + scales.get(k, 1.0) * (v_cond[k] - v_uncond[k]) for k in v_cond}


def cross_modal_guided(v: State, v_joint: State, v_alone: State, scales: dict[str, float]) -> State:
    """Sync guidance: move each modality k in `scales` further along the change that seeing the
    other modality makes to its velocity (v_joint: conditioned on everything; v_alone: the same
    state with the other stream dropped). A denoiser whose audio depends only weakly on the video
    still leans the right way; scaling that lean is what puts a sound on its impact frame."""
    return {k: v[k] + scales[k] * (v_joint[k] - v_alone[k]) if k in scales else v[k] for k in v}


def sample(velocity_fn: VelocityFn, init: State, *, steps: int, shift: float = 1.0, solver: "str | Solver" = "euler",
           callback: StepCallback | None = None, eta: float = ANCESTRAL_ETA,
           generator: torch.Generator | None = None, noise_corr: dict[str, float] | None = None,
           spread: float = 0.0, start: float = 0.0) -> State:
    """eta and generator: the ancestral solver's share of fresh noise per step and its noise source.
    noise_corr: per stream, the frame-to-frame correlation of that fresh noise (`flow.frame_noise`;
    the model's own, e.g. `{"video": config.video_noise_corr}`; absent streams draw independent noise).
    spread > 0: each stream's frames (axis 2) move on their own times, `flow.spread_times` of the
    grid's t (earlier frames ahead); velocity_fn still gets the grid's t and must apply the same
    spread (Euler and euler_ancestral only).
    start > 0: `init` is the state at flow time `start` (e.g. `flow.interpolate(noise, clip, start)`)
    and the steps cover [start, 1]; not with a spread, whose frames would start at unequal times."""
    solver = Solver.parse(solver)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (the share of fresh noise per ancestral step), got {eta}")
    spread = check_spread(spread)
    if spread > 0 and solver not in (Solver.EULER, Solver.EULER_ANCESTRAL):
        raise ValueError(f"a frame spread needs the euler or euler_ancestral sampler, not {solver.value}")
    if check_start(start) > 0 and spread > 0:
        raise ValueError(f"start {start} needs spread 0: a spread's frames sit at unequal times, the noised "
                         "initial state at one")
    ts = time_grid(steps, shift, start)
    x = {k: v.clone() for k, v in init.items()}
    prev_data: State | None = None
    prev_lambda_gap: float | None = None
    for i in range(steps):
        t0, t1 = ts[i], ts[i + 1]
        v = velocity_fn(x, t0)
        ends: dict[str, Tensor] = {}  # per-frame times at t1 of a spread step
        if spread > 0:
            x, ends = _spread_step(x, v, t0, t1, spread, solver, eta, generator, noise_corr or {})
        elif solver is Solver.EULER:
            x = _axpy(x, v, t1 - t0)
        elif solver is Solver.EULER_ANCESTRAL:
            x = _ancestral(x, v, t0, t1, eta, generator, noise_corr or {})
        elif solver is Solver.HEUN:
            x_pred = _axpy(x, v, t1 - t0)
            if i < steps - 1:
                v2 = velocity_fn(x_pred, t1)
                avg = {k: 0.5 * (v[k] + v2[k]) for k in v}
                x = _axpy(x, avg, t1 - t0)
            else:
                x = x_pred  # the endpoint t=1 has no velocity worth a second call
        else:
            data = {k: clean_estimate(x[k], v[k], t0) for k in v}
            gap = _lambda(t1) - _lambda(t0)
            x, prev_data, prev_lambda_gap = _dpmpp_2m(x, data, prev_data, prev_lambda_gap, gap, t0, t1, last=i == steps - 1), data, gap
        if callback is not None:
            callback(i + 1, steps, {k: clean_estimate(x[k], v[k], ends.get(k, t1)) if (t1 < 1 and k in v) else x[k]
                                    for k in x})
    return x


def _frame_times(t: float, spread: float, like: Tensor) -> Tensor:
    """Times `[1, F]` of `like`'s frames (axis 2) at grid time t under `spread`."""
    return spread_times(torch.tensor([t], dtype=torch.float64, device=like.device), spread, like.shape[2])


def _spread_step(x: State, v: State, t0: float, t1: float, spread: float, solver: Solver, eta: float,
                 generator: torch.Generator | None, noise_corr: dict[str, float]) -> tuple[State, dict[str, Tensor]]:
    """One Euler or ancestral step with each stream's frames on their own times; also returns
    each stream's frame times at t1 (for the callback's clean estimate)."""
    out, ends = {}, {}
    for k in x:
        if k not in v:
            out[k] = x[k]
            continue
        a, b = _frame_times(t0, spread, x[k]), _frame_times(t1, spread, x[k])  # [1, F] each
        ends[k] = b
        if solver is Solver.EULER:
            out[k] = x[k] + expand_time(b - a, x[k]) * v[k]
        else:
            out[k] = _ancestral({k: x[k]}, {k: v[k]}, a, b, eta, generator, noise_corr)[k]
    return out, ends


def _ancestral(x: State, v: State, t0: "float | Tensor", t1: "float | Tensor", eta: float,
               generator: torch.Generator | None, noise_corr: dict[str, float]) -> State:
    """DDIM with fresh noise on the path x_t = t x1 + (1 - t) x0: from the clean estimate x1_hat
    and the noise x0_hat the velocity implies, x(t1) = t1 x1_hat + sqrt((1-t1)^2 - c^2) x0_hat + c z
    with c^2 = eta (1-t1)^2 (1 - r^2), r = t0 (1-t1) / (t1 (1-t0)): eta = 1 is DDPM's ancestral
    step (the posterior variance), eta = 0 the Euler step exactly. Re-noising pulls a sample whose
    early clean estimates were off back towards the noise levels the model was trained on.
    Zero-velocity (given) elements are held. t0, t1: floats, or per-frame times `[1, F]` (a spread)."""
    r = t0 * (1.0 - t1) / (t1 * (1.0 - t0))  # in [0, 1): 0 < t1, t0 < t1 <= 1
    fresh = eta * (1.0 - r * r)  # share of the remaining noise variance drawn anew, in [0, 1]
    sqrt = torch.sqrt if isinstance(fresh, Tensor) else math.sqrt
    c = (1.0 - t1) * sqrt(fresh)
    keep = (1.0 - t1) * sqrt(1.0 - fresh)
    out = {}
    for k in x:
        if k not in v:
            out[k] = x[k]
            continue
        ck, kk, tk = (expand_time(u, x[k]) for u in (c, keep, t1)) if isinstance(c, Tensor) else (c, keep, t1)
        x1_hat = clean_estimate(x[k], v[k], t0)  # [B, C, ...]
        x0_hat = noise_estimate(x[k], v[k], t0)  # [B, C, ...]
        z = frame_noise(x[k].shape, noise_corr.get(k, 0.0), generator=generator, device=x[k].device, dtype=x[k].dtype)
        out[k] = torch.where(v[k] == 0, x[k], tk * x1_hat + kk * x0_hat + ck * z)
    return out


def _axpy(x: State, v: State, dt: float) -> State:
    return {k: (x[k] + dt * v[k] if k in v else x[k]) for k in x}


def _lambda(t: float) -> float:
    """log-SNR log(alpha / sigma) with alpha = t, sigma = 1 - t (infinite at the ends)."""
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


def _dpmpp_2m(x: State, data: State, prev_data: State | None, prev_gap: float | None, gap: float,
              t0: float, t1: float, *, last: bool) -> State:
    """DPM-Solver++(2M) in data prediction for the flow path alpha_t = t, sigma_t = 1 - t.
    The first step and the final step (into t=1) are first order, as in the reference solver."""
    a0, s0, a1, s1 = t0, 1.0 - t0, t1, 1.0 - t1
    exp_neg_h = 0.0 if (a0 == 0.0 or s1 == 0.0) else (a0 * s1) / (s0 * a1)  # e^{-h}, no infinities
    second = prev_data is not None and not last and prev_gap is not None and math.isfinite(prev_gap) and math.isfinite(gap)
    out = {}
    for k in x:
        if k not in data:
            out[k] = x[k]
            continue
        d = data[k]
        if second:
            r = prev_gap / gap
            d = (1.0 + 0.5 / r) * data[k] - (0.5 / r) * prev_data[k]
        out[k] = (s1 / s0) * x[k] + a1 * (1.0 - exp_neg_h) * d
    return out
