"""Fixed, documented clip features and the Fréchet distance between two sets of them: the
unimodal quality of generated video and audio against rendered-real clips (an FVD/FAD analogue
that needs no downloaded network).

Video features (19, resolution-independent, pixel values in 0..1):
  0-2   mean R, G, B over all pixels and frames
  3-5   standard deviation of R, G, B
  6     foreground share: pixels farther than FG_DISTANCE (RGB) from the clip's background colour
  7     standard deviation over frames of the foreground share
  8-13  share of foreground pixels nearest to each palette colour (red .. white, within PALETTE_DISTANCE)
  14    share of foreground pixels near no palette colour (floor, face, artefacts)
  15    motion energy: 10 x mean |frame(t) - frame(t-1)|
  16    sharpness: 10 x mean |horizontal and vertical pixel differences|
  17-18 standard deviation over frames of the foreground centroid x and y (fractions of the frame)
Audio features (35):
  0-15  mean over 10 ms frames of the log10 mel band energies (16 bands, 60 Hz .. min(4 kHz, sr/2),
        25 ms Hann windows)
  16-31 their standard deviation over frames
  32    onset rate (onsets per second, `benchmarks.audio.detect_onsets`)
  33    log10 RMS level
  34    mean spectral centroid (kHz)
Each feature is divided by a fixed scale (VIDEO_SCALE, AUDIO_SCALE): its standard deviation over
200 renders of the training distribution (`sample_spec` seeds 1,000,000 .. 1,000,199), rounded.
Distances are thus in units of the real clips' natural spread, and no feature dominates by its unit.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from training.data.world.constants import PALETTE

from .audio import Onset, detect_onsets, to_mono
from .detect import estimate_background, to_rgb255

FG_DISTANCE = 40.0 / 255.0
PALETTE_DISTANCE = 0.3
MEL_BANDS, MEL_LOW, MEL_HIGH = 16, 60.0, 4000.0
_PALETTE = np.asarray(list(PALETTE.values()), np.float32) / 255.0  # [6, 3]
VIDEO_SCALE = np.array([0.1] * 3 + [0.08] * 3 + [0.12, 0.02] + [0.14] * 6 + [0.24, 0.14, 0.06, 0.04, 0.04])
AUDIO_SCALE = np.array([2.0] * 16 + [1.0] * 16 + [0.7, 0.2, 0.4])


def video_features(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """[19] features of a clip `[T, H, W, 3]` (uint8 or float 0..1); see the module docstring."""
    rgb255 = to_rgb255(frames)
    bg, _ = estimate_background(rgb255)
    x = rgb255 / 255.0  # [T, H, W, 3]
    t, h, w, _ = x.shape
    fg = np.linalg.norm(x - bg / 255.0, axis=-1) > FG_DISTANCE  # [T, H, W]
    share = fg.mean(axis=(1, 2))  # [T]
    pix = x[fg]  # [N, 3]
    colours = np.zeros(len(_PALETTE) + 1)
    if len(pix):
        dist = np.linalg.norm(pix[:, None] - _PALETTE[None], axis=-1)  # [N, 6]
        near = dist.min(-1) <= PALETTE_DISTANCE
        counts = np.bincount(dist.argmin(-1)[near], minlength=len(_PALETTE))
        colours[:-1] = counts / len(pix)
        colours[-1] = 1.0 - near.mean()
    motion = 10.0 * float(np.abs(np.diff(x, axis=0)).mean()) if t > 1 else 0.0
    sharp = 5.0 * (float(np.abs(np.diff(x, axis=1)).mean()) + float(np.abs(np.diff(x, axis=2)).mean()))
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    mass = fg.sum(axis=(1, 2))
    seen = mass > 0
    cx = (fg.sum(axis=1) * xs).sum(-1)[seen] / mass[seen]
    cy = (fg.sum(axis=2) * ys).sum(-1)[seen] / mass[seen]
    spread = [float(np.std(cx)) if len(cx) else 0.0, float(np.std(cy)) if len(cy) else 0.0]
    raw = np.concatenate([x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0), [share.mean(), share.std()],
                          colours, [motion, sharp], spread])
    return raw / VIDEO_SCALE


def mel_filterbank(sample_rate: int, n_fft: int, bands: int = MEL_BANDS) -> np.ndarray:
    """Triangular mel filters `[bands, n_fft // 2 + 1]` between MEL_LOW and min(MEL_HIGH, sr/2)."""
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    high = min(MEL_HIGH, sample_rate / 2)
    edges_mel = np.linspace(mel(MEL_LOW), mel(high), bands + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    out = np.zeros((bands, len(freqs)))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        out[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return out


def audio_features(audio: np.ndarray | torch.Tensor, sample_rate: int, onsets: list[Onset] | None = None) -> np.ndarray:
    """[35] features of a waveform `[S]` or `[C, S]`; see the module docstring. `onsets` (from
    `detect_onsets` on the same audio) saves detecting them again."""
    x = to_mono(audio)
    sr = int(sample_rate)
    win, hop = int(round(0.025 * sr)), int(round(0.010 * sr))
    n_fft = 1 << int(math.ceil(math.log2(win)))
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    k = (len(x) - win) // hop + 1
    idx = np.arange(win)[None] + hop * np.arange(k)[:, None]  # [K, win]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(win), n_fft, axis=1)) ** 2 / win  # [K, F]
    logmel = np.log10(power @ mel_filterbank(sr, n_fft).T + 1e-8)  # [K, 16]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    total = power.sum(1)
    centroid = float(np.mean((power @ freqs)[total > 0] / total[total > 0])) / 1000.0 if (total > 0).any() else 0.0
    rate = len(detect_onsets(x, sr) if onsets is None else onsets) / (len(x) / sr)
    rms = math.log10(float(np.sqrt(np.mean(x * x))) + 1e-8)
    return np.concatenate([logmel.mean(0), logmel.std(0), [rate, rms, centroid]]) / AUDIO_SCALE


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = feats.mean(axis=0)
    cov = np.cov(feats, rowvar=False) if len(feats) > 1 else np.zeros((feats.shape[1], feats.shape[1]))
    return mu, np.atleast_2d(cov)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between feature sets `[N, D]`, `[M, D]`.

    Tr((S_a S_b)^1/2) = Tr((S_a^1/2 S_b S_a^1/2)^1/2), whose argument is symmetric PSD, so only
    symmetric eigen-decompositions are needed. A single clip has covariance zero.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1] or 0 in a.shape or 0 in b.shape:
        raise ValueError(f"feature sets must be non-empty [N, D] with equal D; got {a.shape} and {b.shape}")
    mu_a, s_a = _stats(a)
    mu_b, s_b = _stats(b)
    root_a = _sqrtm_psd(s_a)
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_cross = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_cross)
    return max(value, 0.0)
