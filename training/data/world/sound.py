"""Event sounds as functions of tau = time since the event (seconds), and their exact placement.

Every envelope is 0 for tau < 0 and starts rising at tau = 0, so an event's sound begins exactly at
its time; placement evaluates the envelope on the clip's sample grid (sub-sample exact).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .constants import (
    ATTACK_SECONDS,
    BEEP_AMP,
    BEEP_SECONDS,
    CLACK_AMP,
    CLACK_CLICK,
    CLACK_DECAY,
    CLICK_DECAY,
    CLICK_SECONDS,
    KNOCK_AMP,
    KNOCK_CLICK,
    KNOCK_DECAY,
    PULSE_SECONDS,
    RELEASE_SECONDS,
    SOUND_SECONDS,
    SWELL_AMP,
)
from .motion import swell

Sound = Callable[[np.ndarray], np.ndarray]


def ramp(tau: np.ndarray, attack: float) -> np.ndarray:
    """0 before the event, linear rise to 1 over `attack` seconds."""
    return np.clip(tau / attack, 0.0, 1.0)


def release(remaining: np.ndarray, length: float) -> np.ndarray:
    """1 until `length` seconds before the end, then linear fall to 0 at the end."""
    return np.clip(remaining / length, 0.0, 1.0)


def _struck(pitch: float, amp: float, decay: float, click: float, rng: np.random.Generator) -> Sound:
    def sound(tau: np.ndarray) -> np.ndarray:
        env = ramp(tau, ATTACK_SECONDS) * np.exp(-np.maximum(tau, 0.0) / decay) * release(SOUND_SECONDS - tau, RELEASE_SECONDS)
        out = amp * env * np.sin(2.0 * np.pi * pitch * tau)
        k = int(np.searchsorted(tau, CLICK_SECONDS))  # the click is cut after 10 time constants
        head = tau[:k]
        out[:k] += click * rng.standard_normal(k) * np.exp(-np.maximum(head, 0.0) / CLICK_DECAY) * (head >= 0)
        return out

    return sound


def knock(pitch: float, rng: np.random.Generator) -> tuple[Sound, float]:
    """Impact: a damped sine at the object's pitch plus a 2 ms noise click."""
    return _struck(pitch, KNOCK_AMP, KNOCK_DECAY, KNOCK_CLICK, rng), SOUND_SECONDS


def clack(pitch: float, rng: np.random.Generator) -> tuple[Sound, float]:
    """Wall hit: like a knock, but shorter and with a louder click."""
    return _struck(pitch, CLACK_AMP, CLACK_DECAY, CLACK_CLICK, rng), SOUND_SECONDS


def beep(pitch: float) -> tuple[Sound, float]:
    """Appearance: a steady sine, 3 ms attack, 10 ms release, BEEP_SECONDS long."""

    def sound(tau: np.ndarray) -> np.ndarray:
        env = ramp(tau, 0.003) * release(BEEP_SECONDS - tau, RELEASE_SECONDS)
        return BEEP_AMP * env * np.sin(2.0 * np.pi * pitch * tau)

    return sound, BEEP_SECONDS


def swell_tone(pitch: float) -> tuple[Sound, float]:
    """Pulse: a sine whose loudness follows the visual swell (5 ms attack, 30 ms release)."""

    def sound(tau: np.ndarray) -> np.ndarray:
        env = ramp(tau, 0.005) * swell(tau) * release(PULSE_SECONDS - tau, 0.03)
        return SWELL_AMP * env * np.sin(2.0 * np.pi * pitch * tau)

    return sound, PULSE_SECONDS


def first_sample(t: float, sample_rate: int) -> int:
    """Index of the first sample at or after time t (t on the grid maps to exactly t * rate)."""
    return int(math.ceil(t * sample_rate - 1e-6))


def place(out: np.ndarray, t: float, sample_rate: int, sound: Sound, duration: float) -> None:
    """Add `sound` (lasting `duration` s) starting at time t into `out` [S], cut at the clip end."""
    n0 = first_sample(t, sample_rate)
    n1 = min(len(out), n0 + int(math.ceil(duration * sample_rate)) + 1)
    if n1 <= n0:
        return
    tau = np.arange(n0, n1, dtype=np.float64) / sample_rate - t
    out[n0:n1] += sound(tau)


def ambience(n: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Quiet room noise with RMS about `level`: white noise through a 4-tap moving average (a
    gentle low-pass, so it sounds like hiss rather than static)."""
    w = rng.standard_normal(n + 3)
    return level * 0.5 * (w[:-3] + w[1:-2] + w[2:-1] + w[3:])
