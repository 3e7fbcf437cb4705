"""TinyVideoVAE: a small KL-regularised video autoencoder, cheap enough for a shared CPU.

Frames of one latent frame are stacked on the channel axis (temporal compression by
space-to-depth in time), strided 2D convs compress space, each with a space-to-channel shortcut,
and kernel-3 convs across latent frames at the bottleneck give temporal context. The decoder
mirrors this with sub-pixel (pixel shuffle) upsampling and a residual block per resolution.
Non-causal: latent frame i covers pixel frames [i*k, (i+1)*k).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..config import VideoConfig
from .base import check_video_frames, check_video_latents
from .layers import (
    ChannelShortcut,
    DownBlock,
    LatentNorm,
    SpatialResBlock,
    TemporalResBlock,
    UpBlock,
    bound_logvar,
    start_with_small_variance,
)

def _default_widths(levels: int) -> tuple[int, ...]:
    # Doubling from 24 keeps every shortcut parameter-free for temporal compression 2 (4 x 6
    # unshuffled input channels = 24, and each level's 4x unshuffled channels are a multiple of
    # the next width); other layouts fall back to 1x1 convs in the shortcuts.
    return tuple(min(24 * 2 ** i, 384) for i in range(levels))


class TinyVideoVAE(nn.Module):
    kind = "tiny_video"
    causal = False

    def __init__(
        self,
        latent_channels: int = 8,
        temporal_compression: int = 2,
        spatial_compression: int = 8,
        fps: float = 8.0,
        widths: tuple[int, ...] | list[int] | None = None,
        res_blocks: int = 1,
        temporal_blocks: int = 1,
        level_blocks: int = 1,
    ) -> None:
        super().__init__()
        levels = int(round(math.log2(spatial_compression))) if spatial_compression > 0 else -1
        if levels < 1 or 2 ** levels != spatial_compression:
            raise ValueError(
                f"spatial_compression must be a power of two >= 2 for TinyVideoVAE, got {spatial_compression}"
            )
        if temporal_compression < 1 or latent_channels < 1 or fps <= 0:
            raise ValueError(
                f"TinyVideoVAE needs temporal_compression >= 1, latent_channels >= 1 and fps > 0; got "
                f"{temporal_compression}, {latent_channels}, {fps}"
            )
        widths = tuple(int(w) for w in (widths if widths is not None else _default_widths(levels)))
        if len(widths) != levels or min(widths) < 1:
            raise ValueError(
                f"widths must list {levels} positive channel counts (one per 2x spatial level), got {widths}"
            )
        if min(res_blocks, temporal_blocks, level_blocks) < 0:
            raise ValueError(
                f"res_blocks, temporal_blocks and level_blocks must be >= 0, got {res_blocks}, {temporal_blocks}, "
                f"{level_blocks}"
            )
        self.latent_channels = int(latent_channels)
        self.temporal_compression = int(temporal_compression)
        self.spatial_compression = int(spatial_compression)
        self.fps = float(fps)
        self.widths = widths
        self.res_blocks = int(res_blocks)
        self.temporal_blocks = int(temporal_blocks)
        self.level_blocks = int(level_blocks)

        k, c, top = self.temporal_compression, self.latent_channels, widths[-1]
        self.enc_down = nn.Sequential(
            DownBlock(3 * k, widths[0], activate=False),
            *(DownBlock(prev, width) for prev, width in zip(widths[:-1], widths[1:])),
        )
        self.enc_spatial = nn.ModuleList(SpatialResBlock(top) for _ in range(res_blocks))
        self.enc_temporal = nn.ModuleList(TemporalResBlock(top) for _ in range(temporal_blocks))
        self.enc_out = nn.Sequential(nn.SiLU(), nn.Conv2d(top, 2 * c, 1))
        start_with_small_variance(self.enc_out[1], c)
        self.enc_shortcut = ChannelShortcut(top, c)  # into the posterior mean only

        self.dec_in = nn.Conv2d(c, top, 3, padding=1)
        self.dec_shortcut = ChannelShortcut(c, top)
        self.dec_temporal = nn.ModuleList(TemporalResBlock(top) for _ in range(temporal_blocks))
        self.dec_spatial = nn.ModuleList(SpatialResBlock(top) for _ in range(res_blocks))
        outs = list(widths[::-1][1:]) + [3 * k]
        up: list[nn.Module] = []
        for i, (width, out) in enumerate(zip(widths[::-1], outs)):
            up.append(UpBlock(width, out))
            if i < levels - 1:
                # Detail is rebuilt at each resolution: the one place the decoder spends extra work.
                up += [SpatialResBlock(out) for _ in range(level_blocks)]
        self.dec_up = nn.Sequential(*up)
        self.norm = LatentNorm(c)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, video: VideoConfig, **overrides: Any) -> "TinyVideoVAE":
        if video.causal:
            raise ValueError(
                "TinyVideoVAE is non-causal but the config has video.causal=True; use a causal codec "
                "or set video.causal=False"
            )
        return cls(
            latent_channels=video.latent_channels,
            temporal_compression=video.temporal_compression,
            spatial_compression=video.spatial_compression,
            fps=video.fps,
            **overrides,
        )

    def hparams(self) -> dict[str, Any]:
        return {
            "latent_channels": self.latent_channels,
            "temporal_compression": self.temporal_compression,
            "spatial_compression": self.spatial_compression,
            "fps": self.fps,
            "widths": list(self.widths),
            "res_blocks": self.res_blocks,
            "temporal_blocks": self.temporal_blocks,
            "level_blocks": self.level_blocks,
        }

    @property
    def decoder_halo(self) -> int:
        """Latent frames of context each side that a decoded latent frame depends on."""
        return self.temporal_blocks * TemporalResBlock.radius

    # -- raw (un-normalised) halves, used by training -----------------------------------------
    def encode_dist(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Frames `[B, 3, T, H, W]` -> posterior mean and log-variance, each `[B, C, T/k, H/s, W/s]`."""
        b, _, t, h, w = frames.shape
        k, tl = self.temporal_compression, t // self.temporal_compression
        x = frames.view(b, 3, tl, k, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b * tl, k * 3, h, w)  # [B*T', 3k, H, W]
        x = self.enc_down(x)  # [B*T', W_top, h', w']
        for spatial in self.enc_spatial:
            x = spatial(x)
        for temporal in self.enc_temporal:
            x = temporal(x, b)
        mean, logvar = self.enc_out(x).chunk(2, dim=1)  # each [B*T', C, h', w']
        mean = mean + self.enc_shortcut(x)
        hl, wl = mean.shape[-2:]

        def unflat(z: Tensor) -> Tensor:
            return z.reshape(b, tl, self.latent_channels, hl, wl).transpose(1, 2)  # [B, C, T', h', w']

        return unflat(mean), unflat(bound_logvar(logvar))

    def decode_raw(self, z: Tensor) -> Tensor:
        """Raw latents `[B, C, T', h, w]` -> unclamped frames `[B, 3, T'*k, h*s, w*s]`."""
        b, c, tl, hl, wl = z.shape
        k = self.temporal_compression
        x = z.transpose(1, 2).reshape(b * tl, c, hl, wl)  # [B*T', C, h, w]
        x = self.dec_in(x) + self.dec_shortcut(x)  # [B*T', W_top, h, w]
        for temporal in self.dec_temporal:
            x = temporal(x, b)
        for spatial in self.dec_spatial:
            x = spatial(x)
        x = self.dec_up(x)  # [B*T', 3k, H, W]
        h, w = x.shape[-2:]
        return x.view(b, tl, k, 3, h, w).permute(0, 3, 1, 2, 4, 5).reshape(b, 3, tl * k, h, w)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (reconstruction, posterior mean, log-variance); samples z in train mode."""
        check_video_frames(self, frames)
        mean, logvar = self.encode_dist(frames)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        return self.decode_raw(z), mean, logvar

    # -- the VideoCodec protocol --------------------------------------------------------------
    def encode(self, frames: Tensor) -> Tensor:
        check_video_frames(self, frames)
        mean, _ = self.encode_dist(frames)
        return self.norm.normalize(mean)

    def decode(self, latents: Tensor) -> Tensor:
        check_video_latents(self, latents)
        return self.decode_raw(self.norm.denormalize(latents)).clamp(-1.0, 1.0)

    def decode_chunked(self, latents: Tensor, chunk_frames: int) -> Tensor:
        """Decode `chunk_frames` latent frames at a time, each with `decoder_halo` latent frames of
        context on both sides that are decoded and then dropped. Only temporal convs cross latent
        frames, so with that overlap every kept frame sees exactly the inputs it sees in a full
        decode: the result equals `decode` up to float rounding, with peak memory bounded by
        `chunk_frames + 2 * decoder_halo` latent frames."""
        check_video_latents(self, latents)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1 latent frame, got {chunk_frames}")
        total, halo, k = latents.shape[2], self.decoder_halo, self.temporal_compression
        pieces: list[Tensor] = []
        for start in range(0, total, chunk_frames):
            stop = min(start + chunk_frames, total)
            lo, hi = max(0, start - halo), min(total, stop + halo)
            frames = self.decode(latents[:, :, lo:hi])  # [B, 3, (hi-lo)*k, H, W]
            pieces.append(frames[:, :, (start - lo) * k:(stop - lo) * k])
        return torch.cat(pieces, dim=2)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The weights `decode` uses and `encode` does not: what a decoder-only finetune trains."""
        return [p for name, p in self.named_parameters() if name.startswith("dec_")]

    @torch.no_grad()
    def fit_latent_stats(self, frames: Tensor, batch: int = 16) -> None:
        """Set the latent normalisation from posterior means of `frames` `[N, 3, T, H, W]`."""
        check_video_frames(self, frames)
        raw = torch.cat([self.encode_dist(frames[i:i + batch])[0] for i in range(0, frames.shape[0], batch)])
        self.norm.fit(raw)

