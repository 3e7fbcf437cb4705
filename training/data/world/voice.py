"""A formant voice: a glottal pulse train through three vowel resonators, one FFT per syllable.

Filtering in the frequency domain keeps synthesis vectorised (an IIR loop per sample would cost
tens of ms per clip). Consonants are short noise bursts, aspiration, frication or a nasal murmur
before the vowel. A syllable's sound starts exactly at its time.
"""
from __future__ import annotations

import functools

import numpy as np

from .constants import CONSONANTS, FORMANT_BANDWIDTHS, VOICE_AMP, VOICES, VOWELS
from .sound import first_sample, ramp, release
from .spec import TalkerSpec

# Consonant manner -> (seconds before voicing starts, noise seconds, noise amplitude / vowel peak).
_MANNER = {
    "voiced_stop": (0.008, 0.008, 0.5),
    "voiceless_stop": (0.05, 0.05, 0.8),
    "fricative": (0.09, 0.09, 0.6),
    "nasal": (0.0, 0.0, 0.0),
    "none": (0.0, 0.0, 0.0),
}
_NASAL_SECONDS = 0.06  # murmur before the vowel; 20 ms cross-fade after it
_NASAL_AMP = 0.4
_PAD_SECONDS = 0.05  # FFT padding so the resonators ring out instead of wrapping around


@functools.lru_cache(maxsize=64)
def _resonators(size: int, formants: tuple[float, ...], sample_rate: int) -> np.ndarray:
    """Complex response of cascaded two-pole resonators (unit gain at DC) on the rfft bins of a
    `size`-sample frame; cached because clips reuse a handful of vowels and lengths."""
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    z1 = np.exp(-2j * np.pi * freqs / sample_rate)
    h = np.ones_like(z1)
    for f, bw in zip(formants, FORMANT_BANDWIDTHS):
        r = np.exp(-np.pi * bw / sample_rate)
        c = 2.0 * r * np.cos(2.0 * np.pi * min(f, 0.45 * sample_rate) / sample_rate)
        h *= (1.0 - c + r * r) / (1.0 - c * z1 + r * r * z1 * z1)
    h.setflags(write=False)
    return h


def _band_noise(n: int, centre: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of noise around `centre` Hz (Gaussian band, width 35 % of centre), peak 1."""
    if n <= 0:
        return np.zeros(0)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    centre = min(centre, 0.4 * sample_rate)
    out = np.fft.irfft(spec * np.exp(-0.5 * ((f - centre) / (0.35 * centre)) ** 2), n)
    return out / max(np.abs(out).max(), 1e-12)


def syllable(text: str, f0: float, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Waveform [round(seconds * rate)] of one consonant-vowel syllable, vowel peak VOICE_AMP."""
    n = int(round(seconds * sample_rate))
    cons, vowel = (text[0], text[1]) if len(text) == 2 else ("", text[0])
    manner, burst_hz = CONSONANTS[cons] if cons else ("none", 0.0)
    onset, noise_s, noise_amp = _MANNER[manner]
    tau = np.arange(n, dtype=np.float64) / sample_rate

    # Glottal pulses with a falling intonation (+6 % to -6 % of f0 across the syllable).
    f_inst = f0 * (1.06 - 0.12 * tau / max(seconds, 1e-9))
    cycles = np.floor(np.cumsum(f_inst) / sample_rate)
    source = np.zeros(n + int(_PAD_SECONDS * sample_rate))
    source[np.flatnonzero(np.diff(cycles, prepend=-1.0))] = 1.0

    size = len(source)
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    spectrum = np.fft.rfft(source) / np.sqrt(1.0 + (freqs / 300.0) ** 2)  # glottal roll-off + lip radiation
    vowel_wave = np.fft.irfft(spectrum * _resonators(size, VOWELS[vowel], sample_rate), size)[:n]
    vowel_wave /= max(np.abs(vowel_wave).max(), 1e-12)

    fade_out = release(seconds - tau, min(0.06, 0.5 * seconds))
    voiced = ramp(tau - onset, 0.015 if onset else 0.01) * fade_out
    out = vowel_wave * voiced
    if manner == "nasal":
        murmur = np.fft.irfft(spectrum * _resonators(size, (250.0, burst_hz, 2500.0), sample_rate), size)[:n]
        murmur *= _NASAL_AMP / max(np.abs(murmur).max(), 1e-12)
        mix = np.clip((tau - _NASAL_SECONDS) / 0.02, 0.0, 1.0)  # 0 = all murmur, 1 = all vowel
        out = (vowel_wave * mix + murmur * (1.0 - mix)) * voiced
    if noise_s > 0:
        k = min(n, int(round(noise_s * sample_rate)))
        t = tau[:k]
        if manner == "fricative":
            shape = ramp(t, 0.003) * release(noise_s - t, 0.01)
        else:  # stops: a sharp burst, then (voiceless only) quieter aspiration until voicing
            shape = np.where(t < 0.008, 1.0, 0.35) * ramp(t, 0.0005)
        out[:k] += noise_amp * shape * _band_noise(k, burst_hz, sample_rate, rng)
    return VOICE_AMP * out


def render_voice(talker: TalkerSpec, num_samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """The talker's whole voice track [num_samples]; syllables overlap-add, cut at the clip end."""
    out = np.zeros(num_samples)
    f0 = VOICES[talker.voice]
    for i, (text, t) in enumerate(zip(talker.syllables, talker.times)):
        rng = np.random.default_rng([seed, 2, i])
        wave = syllable(text, f0, talker.syllable_seconds, sample_rate, rng)
        n0 = first_sample(t, sample_rate)
        n1 = min(num_samples, n0 + len(wave))
        if n1 > n0:
            out[n0:n1] += wave[: n1 - n0]
    return out


def frame_loudness(voice: np.ndarray, fps: float, sample_rate: int, num_frames: int) -> np.ndarray:
    """Mouth opening per frame in [0, 1]: RMS of the voice over [j/fps, (j+1)/fps), divided by the
    largest frame RMS of the clip (all zeros for a silent clip)."""
    edges = np.array([first_sample(j / fps, sample_rate) for j in range(num_frames + 1)])
    edges = np.clip(edges, 0, len(voice))
    energy = np.concatenate([[0.0], np.cumsum(voice * voice)])
    count = np.maximum(np.diff(edges), 1)
    rms = np.sqrt(np.maximum(energy[edges[1:]] - energy[edges[:-1]], 0.0) / count)
    peak = rms.max() if len(rms) else 0.0
    return rms / peak if peak > 0 else np.zeros(num_frames)
