"""Object motion as closed-form functions of time, built so that events fall exactly on spec times.

Coordinates are pixels with the origin at the frame's top-left corner and y pointing down; pixel
(row i, column j) has its centre at (x, y) = (j + 0.5, i + 0.5). Every function takes an array of
query times so a whole clip is evaluated at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import (
    BLINK_ON_SECONDS,
    BOUNCE_APEX,
    DEFAULT_GAP,
    FLOOR_FRACTION,
    PULSE_MAX_SCALE,
    PULSE_ONSET,
    PULSE_SECONDS,
    SIZES,
    TIME_EPS,
)
from .spec import ObjectSpec


@dataclass(frozen=True)
class Track:
    """An object's state at N query times (all arrays [N])."""

    cx: np.ndarray  # centre x, px
    cy: np.ndarray  # centre y, px
    r: np.ndarray  # half-extent, px (the bounding box is 2r x 2r)
    visible: np.ndarray  # bool


def floor_top(size: int) -> int:
    """First pixel row of the floor band; an object touches the floor when cy + r == floor_top."""
    return size - max(1, int(round(size * FLOOR_FRACTION)))


def base_radius(obj: ObjectSpec, size: int) -> float:
    return SIZES[obj.size] * size


def knots(times: tuple[float, ...], seconds: float) -> np.ndarray:
    """Event times with one virtual event before and after, far enough out that no extra event
    lands inside [0, seconds]: the gap before the first event is max(first gap, 2 * t_first), the
    gap after the last is max(last gap, 2 * (seconds - t_last)); a lone event uses DEFAULT_GAP."""
    t = np.asarray(times, dtype=np.float64)
    first = t[1] - t[0] if len(t) > 1 else DEFAULT_GAP
    last = t[-1] - t[-2] if len(t) > 1 else DEFAULT_GAP
    start = t[0] - max(first, 2.0 * t[0])
    end = t[-1] + max(last, 2.0 * (seconds - t[-1]))
    return np.concatenate([[start], t, [end]])


def _segment(k: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the knot segment holding each query time and the fraction s in [0, 1] through it."""
    idx = np.clip(np.searchsorted(k, q + TIME_EPS, side="right") - 1, 0, len(k) - 2)
    s = np.clip((q - k[idx]) / (k[idx + 1] - k[idx]), 0.0, 1.0)
    return idx, s


def _latest(times: tuple[float, ...], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the latest event at or before each query (-1 if none) and the time since it."""
    t = np.asarray(times, dtype=np.float64)
    idx = np.searchsorted(t, q + TIME_EPS, side="right") - 1
    since = q - t[np.maximum(idx, 0)]
    return idx, np.maximum(since, 0.0)


def swell(tau: np.ndarray) -> np.ndarray:
    """Pulse envelope in [0, 1]: PULSE_ONSET at the event, 1 halfway, 0 from PULSE_SECONDS on."""
    active = (tau >= 0.0) & (tau < PULSE_SECONDS)
    shape = PULSE_ONSET + (1.0 - PULSE_ONSET) * np.sin(np.pi * np.clip(tau, 0.0, PULSE_SECONDS) / PULSE_SECONDS)
    return np.where(active, shape, 0.0)


def track(obj: ObjectSpec, q: np.ndarray, *, size: int, seconds: float) -> Track:
    """The object's centre, half-extent and visibility at query times q (seconds, [N])."""
    q = np.asarray(q, dtype=np.float64)
    n = len(q)
    r0 = base_radius(obj, size)
    floor = float(floor_top(size))
    reach = r0 * PULSE_MAX_SCALE if obj.motion == "pulse" else r0  # keeps a full swell inside
    cx = np.full(n, reach + obj.x * (size - 2.0 * reach))
    cy = np.full(n, reach + obj.y * (floor - 2.0 * reach))
    r = np.full(n, r0)
    visible = np.ones(n, dtype=bool)

    if obj.motion == "bounce":
        # Parabolic arcs between impacts, all with the same apex; the bottom touches the floor
        # exactly at each impact time.
        _, s = _segment(knots(obj.times, seconds), q)
        apex = BOUNCE_APEX * (floor - 2.0 * r0)
        cy = floor - r0 - apex * 4.0 * s * (1.0 - s)
    elif obj.motion == "slide":
        # Constant speed between walls, reversing at each wall hit; hits alternate walls.
        k = knots(obj.times, seconds)
        left, right = r0, size - r0
        first = right if obj.direction == "right" else left
        other = left if first == right else right
        walls = np.where(np.arange(len(k)) % 2 == 1, first, other)
        cx = np.interp(q, k, walls)
    elif obj.motion == "pulse":
        # The latest pulse wins when pulses overlap.
        idx, since = _latest(obj.times, q)
        r = r0 * (1.0 + (PULSE_MAX_SCALE - 1.0) * np.where(idx >= 0, swell(since), 0.0))
    elif obj.motion == "blink":
        # Visible from each appearance for min(BLINK_ON_SECONDS, half the gap to the next one).
        t = np.asarray(obj.times, dtype=np.float64)
        on = np.minimum(BLINK_ON_SECONDS, 0.5 * np.diff(np.append(t, np.inf)))
        idx, since = _latest(obj.times, q)
        visible = (idx >= 0) & (since < on[np.maximum(idx, 0)] - TIME_EPS)
    return Track(cx=np.asarray(cx, dtype=np.float64), cy=np.asarray(cy, dtype=np.float64), r=r, visible=visible)
