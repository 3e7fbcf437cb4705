"""Audio detectors for the synthetic world (training/data/world/SPEC.md): energy onsets with
near-sample accuracy, the pitch class and sound type of each onset, the talker's voice class, and
per-video-frame envelopes for sync correlation. Pure numpy; thresholds are relative to the clip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from training.data.world.constants import PITCH_HZ, VOICES

ONSET_RISE_DB = 15.0  # rise of a frequency band's level over the previous window that marks an onset
FLOOR_DB = -40.0  # band levels are floored this far below the clip's loudest band (relative threshold)
NOISE_FLOOR = 10.0  # ... and at this multiple of the band's quiet level (its 15th percentile over time:
# sustained sounds fill at most 75 % of a clip, so this is the noise)
REFRACTORY = 0.15  # s; a syllable's consonant-to-vowel change (<= 90 ms) is not a new onset
PITCH_RANGE = (150.0, 2000.0)  # Hz searched for an event's tone (palette: 262 .. 1480 Hz)
F0_RANGE = (70.0, 400.0)
F0_SPLIT = math.sqrt(VOICES["low"] * VOICES["high"])  # geometric midpoint of the two voices
# Sound type from the tone's decay: amplitude at 60-100 ms and 180-220 ms relative to 5-25 ms.
# knock exp(-t/60ms): 0.34, 0.05; clack exp(-t/25ms): 0.07, 0; beep flat 150 ms: 1.0, 0;
# swell (rises to its peak at 250 ms): 1.24, 1.53.
SWELL_LATE, BEEP_MID, KNOCK_MID = 0.6, 0.6, 0.17


@dataclass(frozen=True)
class Onset:
    time: float  # s
    sample: int
    strength: float  # dB rise of the loudest rising band
    pitch_hz: float  # frequency that appeared at the onset (NaN if none)
    color: str  # palette colour whose pitch is nearest (log scale)
    sound: str  # motion whose sound this is: bounce (knock), slide (clack), blink (beep), pulse (swell)
    voice: str  # talker voice class from f0: "low", "high" or "" when unvoiced


def to_mono(audio: np.ndarray | torch.Tensor, name: str = "audio") -> np.ndarray:
    """[S] or [C, S] (channels averaged) -> float64 [S]."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty waveform [S] or [C, S]; got shape {np.shape(audio)}")
    return np.nan_to_num(x)


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise ValueError(f"sample_rate must be an integer >= 1000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def _frames_power(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Hann-windowed power spectra `[K, win//2+1]`; frame k covers samples [k hop - win, k hop).
    Silence is assumed before the clip (a sound at t = 0 is an onset) but nothing after it: a
    window running past the end would see the cut as a broadband onset."""
    pad = np.concatenate([np.zeros(win, np.float32), x.astype(np.float32)])
    frames = np.lib.stride_tricks.sliding_window_view(pad, win)[::hop]  # [K, win], a view
    spec = np.fft.rfft(frames * np.hanning(win).astype(np.float32), axis=1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32)


def _tone(seg: np.ndarray, hz: float, sample_rate: int) -> float:
    """Amplitude of the component at `hz` in a segment (Hann-windowed projection)."""
    if len(seg) < 8:
        return 0.0
    w = np.hanning(len(seg))
    ph = np.exp(-2j * np.pi * hz * np.arange(len(seg)) / sample_rate)
    return float(2.0 * abs((seg * w * ph).sum()) / w.sum())


def _pitch(x: np.ndarray, n0: int, sr: int) -> float:
    """The strongest frequency that is new at the onset: spectrum after minus spectrum before."""
    a, n = int(0.002 * sr), int(0.032 * sr)
    after = x[n0 + a: n0 + a + n]
    before = x[max(0, n0 - a - n): max(0, n0 - a)]
    if len(after) < n // 2:
        return float("nan")
    nfft = 1 << int(math.ceil(math.log2(max(8 * n, 4096))))
    spec_a = np.abs(np.fft.rfft(after * np.hanning(len(after)), nfft))
    spec_b = np.abs(np.fft.rfft(before * np.hanning(len(before)), nfft)) if len(before) >= 8 else 0.0
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    band = (freqs >= PITCH_RANGE[0]) & (freqs <= min(PITCH_RANGE[1], 0.45 * sr))
    gain = np.where(band, np.maximum(spec_a - spec_b, 0.0), 0.0)
    return float(freqs[int(gain.argmax())]) if gain.max() > 0 else float("nan")


def pitch_class(hz: float) -> str:
    """Nearest palette colour by pitch (log frequency); "" for NaN."""
    if not np.isfinite(hz) or hz <= 0:
        return ""
    return min(PITCH_HZ, key=lambda c: abs(math.log2(hz / PITCH_HZ[c])))


def sound_motion(x: np.ndarray, n0: int, sr: int, hz: float) -> str:
    """Which motion's sound starts at n0, from how the tone at `hz` decays (see the constants)."""
    if not np.isfinite(hz):
        return ""

    def amp(a_ms: float, b_ms: float) -> float:
        return _tone(x[n0 + int(a_ms * sr / 1000): n0 + int(b_ms * sr / 1000)], hz, sr)

    first = amp(5, 25)
    if first <= 0:
        return ""
    mid, late = amp(60, 100) / first, amp(180, 220) / first
    if late >= SWELL_LATE:
        return "pulse"
    if mid >= BEEP_MID:
        return "blink"
    return "bounce" if mid >= KNOCK_MID else "slide"


def voice_class(x: np.ndarray, n0: int, sr: int) -> str:
    """'low' or 'high' from the f0 (autocorrelation) of the vowel 100-220 ms after the onset."""
    seg = x[n0 + int(0.1 * sr): n0 + int(0.22 * sr)]
    if len(seg) < int(0.05 * sr) or not np.any(seg):
        return ""
    seg = seg - seg.mean()
    spec = np.fft.rfft(seg, 2 * len(seg))
    ac = np.fft.irfft(np.abs(spec) ** 2)[: len(seg)]
    if ac[0] <= 0:
        return ""
    ac = ac / ac[0]
    lo, hi = int(sr / F0_RANGE[1]), min(len(ac) - 2, int(sr / F0_RANGE[0]))
    if hi <= lo + 1:
        return ""
    lags = np.arange(lo, hi)
    peaks = lags[(ac[lags] >= ac[lags - 1]) & (ac[lags] >= ac[lags + 1])]
    if len(peaks) == 0 or ac[peaks].max() < 0.2:
        return ""
    best = ac[peaks].max()
    lag = int(peaks[ac[peaks] >= 0.85 * best][0])  # the shortest strong period avoids octave errors
    return "low" if sr / lag < F0_SPLIT else "high"


def _refine(x: np.ndarray, end: int, win: int, sr: int) -> int:
    """First sample of a sound known to start in [end - win, end): where |x| first clears the level
    before the window by a tenth of the way to the new peak."""
    lo, hi = max(0, end - win - int(0.001 * sr)), min(len(x), end)
    before = np.abs(x[max(0, lo - win // 2): lo])
    base = float(before.max()) if len(before) else 0.0
    peak = float(np.abs(x[lo: min(len(x), end + win)]).max()) if hi > lo else 0.0
    if peak <= 1.2 * base + 1e-12:
        return max(0, end - win // 2)
    above = np.flatnonzero(np.abs(x[lo: min(len(x), end + win)]) > base + 0.1 * (peak - base))
    return lo + int(above[0]) if len(above) else max(0, end - win // 2)


def detect_onsets(audio: np.ndarray | torch.Tensor, sample_rate: int) -> list[Onset]:
    """Onsets of new sounds, each with its pitch, sound type and voice class.

    Per-band levels (16 ms Hann windows every 2 ms, 5 adjacent bins pooled) are floored at
    FLOOR_DB below the clip's loudest band and at NOISE_FLOOR x each band's quiet level, so the
    threshold is relative to the clip. An onset is a frame where some band rose ONSET_RISE_DB over
    the previous non-overlapping window; onsets closer than REFRACTORY are one onset. Each is then
    refined to the sample in the time domain.
    """
    sr = _check_rate(sample_rate)
    x = to_mono(audio)
    win = 1 << int(round(math.log2(0.016 * sr)))
    hop = max(1, round(sr / 500))  # 2 ms: onsets are refined to the sample afterwards
    power = _frames_power(x, win, hop)  # [K, F]
    # 5 adjacent bins pooled: a tone between bins still counts fully and noise levels vary less
    c = np.concatenate([np.zeros((len(power), 3)), np.cumsum(power, axis=1), np.repeat(power.sum(1, keepdims=True), 2, 1)], axis=1)
    pooled = c[:, 5:] - c[:, :-5]  # [K, F]: bins f-2 .. f+2
    peak = float(pooled.max())
    if peak <= 0:
        return []
    floor = np.maximum(peak * 10 ** (FLOOR_DB / 10), NOISE_FLOOR * np.percentile(pooled, 15, axis=0))  # [F]
    level = 10 * np.log10(np.maximum(pooled, floor[None]))  # [K, F]
    # Reference: the loudest of the few frames just before the current window (a window length back).
    d = max(1, win // hop)
    back = np.concatenate([np.broadcast_to(10 * np.log10(floor), (d + d // 2, len(floor))), level])
    ref = back[: len(level)]
    for i in range(1, d // 2 + 1):
        ref = np.maximum(ref, back[i: i + len(level)])
    rise = (level - ref).max(axis=1)  # [K]
    out: list[Onset] = []
    last_end = -np.inf
    k = 0
    while k < len(rise):
        if rise[k] < ONSET_RISE_DB:
            k += 1
            continue
        run_end = k
        while run_end + 1 < len(rise) and rise[run_end + 1] >= ONSET_RISE_DB:
            run_end += 1
        end = k * hop
        if end - last_end >= REFRACTORY * sr:
            n0 = min(_refine(x, end, win, sr), len(x) - 1)
            hz = _pitch(x, n0, sr)
            out.append(Onset(n0 / sr, n0, float(rise[k: run_end + 1].max()), hz, pitch_class(hz),
                             sound_motion(x, n0, sr, hz), voice_class(x, n0, sr)))
            last_end = end
        k = run_end + 1
    return out


def frame_envelope(audio: np.ndarray | torch.Tensor, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """[frames] RMS over each video frame's samples [ceil(j sr / fps), ceil((j + 1) sr / fps)), the
    window the world's mouth opening follows."""
    sr = _check_rate(sample_rate)
    x = to_mono(audio)
    edges = np.clip(np.ceil(np.arange(frames + 1) * sr / fps - 1e-6).astype(int), 0, len(x))
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    count = np.maximum(np.diff(edges), 1)
    return np.sqrt(np.maximum(energy[edges[1:]] - energy[edges[:-1]], 0.0) / count)


def onset_envelope(onsets: list[Onset], fps: float, frames: int) -> np.ndarray:
    """[frames] onset impulses: onset strength (in units of the detection threshold, capped at 2)
    added to the frame nearest the onset time."""
    out = np.zeros(frames)
    for o in onsets:
        j = int(math.floor(o.time * fps + 0.5))
        if 0 <= j < frames:
            out[j] += min(o.strength / ONSET_RISE_DB, 2.0)
    return out
