"""TinyAudioVAE: a small KL-regularised 1D conv autoencoder from waveform to latents at
`sample_rate / hop` Hz.

Strided convs whose strides multiply to the hop compress time; the decoder mirrors them with
transposed convs. Snake activations and dilated residual units give the decoder a cheap way to
synthesise steady tones, which is most of what the synthetic world sounds like.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..config import AudioConfig
from .base import check_audio_latents, check_waveform
from .layers import AudioResUnit, LatentNorm, Snake, bound_logvar, start_with_small_variance

def hop_strides(hop: int, max_stride: int = 10) -> tuple[int, ...]:
    """Split `hop` into few strides, each <= max_stride where the primes allow, smallest first
    (250 -> (5, 5, 10), 1024 -> (2, 8, 8, 8)). Smallest first keeps the first internal rate high:
    at 16 kHz, (5, 5, 10) runs its first stage at 3.2 kHz, whose 1.6 kHz Nyquist covers every
    tone of the synthetic world; with (10, 5, 5) tones above 800 Hz were never learned."""
    if hop < 2:
        raise ValueError(f"hop must be >= 2 samples per latent frame, got {hop}")
    primes: list[int] = []
    n, p = hop, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    strides: list[int] = []
    for prime in sorted(primes, reverse=True):
        # First fit into an existing stride keeps the count of stages small.
        for i, s in enumerate(strides):
            if s * prime <= max_stride:
                strides[i] = s * prime
                break
        else:
            strides.append(prime)
    return tuple(sorted(strides))


def _conv_padding(stride: int) -> int:
    # With kernel 2*stride, padding ceil(stride/2) gives exactly L/stride outputs for L % stride == 0.
    return (stride + 1) // 2


class TinyAudioVAE(nn.Module):
    kind = "tiny_audio"

    def __init__(
        self,
        latent_channels: int = 16,
        sample_rate: int = 16000,
        hop: int = 250,
        channels: int = 1,
        strides: tuple[int, ...] | list[int] | None = None,
        widths: tuple[int, ...] | list[int] | None = None,
        dilations: tuple[int, ...] | list[int] = (1, 3),
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in (strides if strides is not None else hop_strides(hop)))
        product = 1
        for s in strides:
            product *= s
        if product != hop or min(strides, default=0) < 2:
            raise ValueError(f"strides {strides} must each be >= 2 and multiply to hop={hop}")
        if widths is None:
            widths = [min(32 * 2 ** i, 256) for i in range(len(strides))]
        widths = tuple(int(w) for w in widths)
        if len(widths) != len(strides) or min(widths) < 1:
            raise ValueError(
                f"widths must list {len(strides)} positive channel counts (one per stride stage), got {widths}"
            )
        if latent_channels < 1 or channels < 1 or sample_rate < 1:
            raise ValueError(
                f"latent_channels, channels and sample_rate must be >= 1, got {latent_channels}, {channels}, {sample_rate}"
            )
        self.latent_channels = int(latent_channels)
        self.sample_rate = int(sample_rate)
        self.hop = int(hop)
        self.channels = int(channels)
        self.strides = strides
        self.widths = widths
        self.dilations = tuple(int(d) for d in dilations)

        # Nothing runs at the full sample rate except the first strided conv and the last transposed
        # conv (a learned analysis / synthesis filterbank): per second of audio that is a few times
        # fewer operations than residual units at the full rate, and training speed buys quality.
        c = self.latent_channels
        enc: list[nn.Module] = []
        prev = self.channels
        for stride, width in zip(strides, widths):
            if prev != self.channels:
                enc.append(Snake(prev))
            enc.append(nn.Conv1d(prev, width, 2 * stride, stride=stride, padding=_conv_padding(stride)))
            enc += [AudioResUnit(width, d) for d in self.dilations]
            prev = width
        enc += [Snake(prev), nn.Conv1d(prev, 2 * c, 3, padding=1)]
        start_with_small_variance(enc[-1], c)
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv1d(c, widths[-1], 7, padding=3)]
        outs = list(widths[::-1][1:]) + [self.channels]
        for stride, width, out in zip(strides[::-1], widths[::-1], outs):
            dec += [AudioResUnit(width, d) for d in self.dilations]
            pad = _conv_padding(stride)
            dec += [
                Snake(width),
                nn.ConvTranspose1d(width, out, 2 * stride, stride=stride, padding=pad, output_padding=2 * pad - stride),
            ]
        self.decoder = nn.Sequential(*dec)
        self.norm = LatentNorm(c)

    @classmethod
    def from_config(cls, audio: AudioConfig, **overrides: Any) -> "TinyAudioVAE":
        return cls(latent_channels=audio.latent_channels, sample_rate=audio.sample_rate, hop=audio.hop, **overrides)

    def hparams(self) -> dict[str, Any]:
        return {
            "latent_channels": self.latent_channels,
            "sample_rate": self.sample_rate,
            "hop": self.hop,
            "channels": self.channels,
            "strides": list(self.strides),
            "widths": list(self.widths),
            "dilations": list(self.dilations),
        }

    def encode_dist(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """Waveform `[B, ch, S]` -> posterior mean and log-variance, each `[B, C, S/hop]`."""
        mean, logvar = self.encoder(waveform).chunk(2, dim=1)  # each [B, C, S/hop]
        return mean, bound_logvar(logvar)

    def decode_raw(self, z: Tensor) -> Tensor:
        """Raw latents `[B, C, T]` -> unclamped waveform `[B, ch, T*hop]`."""
        return self.decoder(z)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (reconstruction, posterior mean, log-variance); samples z in train mode."""
        check_waveform(self, waveform)
        mean, logvar = self.encode_dist(waveform)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        return self.decode_raw(z), mean, logvar

    def encode(self, waveform: Tensor) -> Tensor:
        check_waveform(self, waveform)
        return self.norm.normalize(self.encode_dist(waveform)[0])

    def decode(self, latents: Tensor) -> Tensor:
        check_audio_latents(self, latents)
        return self.decode_raw(self.norm.denormalize(latents)).clamp(-1.0, 1.0)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The weights `decode` uses and `encode` does not: what a decoder-only finetune trains."""
        return list(self.decoder.parameters())

    @torch.no_grad()
    def fit_latent_stats(self, waveform: Tensor, batch: int = 32) -> None:
        """Set the latent normalisation from posterior means of `waveform` `[N, ch, S]`."""
        check_waveform(self, waveform)
        raw = torch.cat([self.encode_dist(waveform[i:i + batch])[0] for i in range(0, waveform.shape[0], batch)])
        self.norm.fit(raw)
