"""Reconstruction measures for the codecs: training losses and evaluation figures.

All functions take batched tensors and are pure PyTorch so that codec tests, training and
evaluation agree on one definition.
"""
from __future__ import annotations

import torch
from torch import Tensor

STFT_SIZES = (256, 512, 1024)
LOG_FLOOR = 1e-2  # STFT magnitude units; a full-scale sine peaks near n_fft / 4


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """Mean per-element KL of N(mean, exp(logvar)) from N(0, 1): the VAE regulariser."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def psnr(recon: Tensor, target: Tensor) -> float:
    """PSNR in dB for signals in [-1, 1] (peak-to-peak 2), over the whole batch."""
    mse = (recon.float() - target.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(4.0 / mse)).item()


def snr(recon: Tensor, target: Tensor) -> float:
    """Waveform signal-to-noise ratio in dB, over the whole batch."""
    noise = (recon.float() - target.float()).pow(2).sum().item()
    signal = target.float().pow(2).sum().item()
    return float("inf") if noise == 0 else 10.0 * torch.log10(torch.tensor(max(signal, 1e-12) / noise)).item()


def _magnitude(wave: Tensor, n_fft: int) -> Tensor:
    """`[B, ch, S]` -> STFT magnitudes `[B*ch, F, frames]`."""
    flat = wave.reshape(-1, wave.shape[-1]).float()
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return spec.abs()


def multi_resolution_stft_loss(recon: Tensor, target: Tensor, sizes: tuple[int, ...] = STFT_SIZES) -> Tensor:
    """Spectral convergence plus log-magnitude L1, averaged over FFT sizes. Matching magnitudes
    at several resolutions pins pitch (fine frequency) and onsets (fine time) without asking the
    decoder to reproduce phase exactly."""
    total = recon.new_zeros(())
    for n_fft in sizes:
        r, t = _magnitude(recon, n_fft), _magnitude(target, n_fft)
        # Over the whole batch, plus one magnitude unit: crops of pure silence must not divide by ~0.
        convergence = torch.linalg.norm(r - t) / (torch.linalg.norm(t) + 1.0)
        # The offset (about -70 dB below a loud tone) keeps inaudible detail and digital silence
        # from dominating the log term.
        log_l1 = (torch.log(r + LOG_FLOOR) - torch.log(t + LOG_FLOOR)).abs().mean()
        total = total + convergence + log_l1
    return total / len(sizes)


def log_spectral_distance(recon: Tensor, target: Tensor, n_fft: int = 512, floor_db: float = -80.0) -> float:
    """Mean over STFT frames of the RMS difference of log power spectra, in dB. Frames where the
    target is silent are left out: there any tiny residue would dominate."""
    r, t = _magnitude(recon, n_fft), _magnitude(target, n_fft)
    r_db = 20.0 * torch.log10(r.clamp_min(1e-8)).clamp_min(floor_db)
    t_db = 20.0 * torch.log10(t.clamp_min(1e-8)).clamp_min(floor_db)
    per_frame = (r_db - t_db).pow(2).mean(dim=1).sqrt()  # [B, frames]
    energy = t.pow(2).sum(dim=1)  # [B, frames]
    active = energy > energy.amax(dim=1, keepdim=True) * 1e-3
    if not active.any():
        return float(per_frame.mean().item())
    return float(per_frame[active].mean().item())


def dominant_frequency(wave: Tensor, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak of a 1D signal, parabolic-interpolated."""
    x = wave.reshape(-1).float()
    x = x - x.mean()
    n = x.numel()
    spec = torch.fft.rfft(x * torch.hann_window(n, periodic=False, device=x.device)).abs()
    spec[0] = 0.0
    i = int(spec.argmax().item())
    if 0 < i < spec.numel() - 1:
        a, b, c = (torch.log(spec[j].clamp_min(1e-12)).item() for j in (i - 1, i, i + 1))
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        offset = 0.0
    return (i + offset) * sample_rate / n


def onset_times(wave: Tensor, sample_rate: int, frame: int, threshold: float = 0.1) -> list[float]:
    """Times (s) where the per-frame RMS of a 1D signal rises through `threshold` x its peak RMS:
    a crude but robust onset detector for bursts over silence."""
    x = wave.reshape(-1).float()
    usable = x.numel() // frame * frame
    rms = x[:usable].view(-1, frame).pow(2).mean(dim=1).sqrt()  # [frames]
    if rms.numel() == 0 or rms.max() <= 0:
        return []
    above = rms > threshold * rms.max()
    starts = above & ~torch.cat([above.new_zeros(1), above[:-1]])
    return [i * frame / sample_rate for i in torch.nonzero(starts).flatten().tolist()]
