"""MixD-RoPE as pure functions.

Video tokens get 3D rotary positions (t, h, w). Audio tokens get the same temporal axis measured
in physical time, so an audio token and a video token at the same instant share a temporal phase;
their h/w coordinates are 0, an identity rotation on those bands. Text is not rotated.

The temporal unit is one video latent frame (position = seconds * video latent rate *
`rope_time_scale`); at scale 1 video positions stay near-integers and audio positions are
fractional (e.g. 43.07 Hz audio tokens against 3 Hz video latents). The fastest rotary pair turns
one radian per unit, so at scale 1 neighbouring audio tokens of a short clip differ by a fraction
of a radian on every pair and attention can hardly tell them apart; a scale of audio tokens per
latent frame gives one unit per audio token (apollo-tiny: 8, measured in its assets README).
Spatial positions count latent patches times `rope_space_scale`: with few pairs per spatial axis
only the fastest turn much between neighbouring patches, and a larger scale lets a video query
find its own place in another frame more sharply.

Times are the centres of what a token covers: a video latent frame covers its pixel frames (a
causal codec's first latent frame covers pixel frame 0 alone), an audio token covers
`patch * hop` samples.

`rope_audio="offset"` is the paper's literal wording instead: audio ids count up by one per
token starting at the last video temporal id + 1. Kept for the ablation; sync is not learnable
with it at small scale (shared/design/FEASIBILITY.md).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..config import ApolloConfig


def video_frame_times(config: ApolloConfig, latent_frames: int) -> Tensor:
    """Centre time in seconds of each video latent frame `[T]` (pixel frame n spans [n, n+1)/fps)."""
    v = config.video
    k = v.temporal_compression
    idx = torch.arange(latent_frames, dtype=torch.float64)
    if v.causal:
        # frame 0 -> pixel frame 0; frame i >= 1 -> pixel frames (i-1)k+1 .. ik
        first = (idx - 1) * k + 1
        centre_px = torch.where(idx == 0, torch.zeros_like(idx), first + (k - 1) / 2)
    else:
        centre_px = idx * k + (k - 1) / 2
    return (centre_px + 0.5) / v.fps


def audio_token_times(config: ApolloConfig, tokens: int) -> Tensor:
    """Centre time in seconds of each audio token `[N]`."""
    a = config.audio
    span = a.patch * a.hop / a.sample_rate
    return (torch.arange(tokens, dtype=torch.float64) + 0.5) * span


def positions_per_second(config: ApolloConfig) -> float:
    """The shared temporal clock: RoPE position units per second of clip, for video and audio."""
    return config.video.latent_fps / config.video.patch_t * config.rope_time_scale


def video_positions(
    config: ApolloConfig, t: int, h: int, w: int, *, device: torch.device | str | None = None
) -> Tensor:
    """Positions `[t*h*w, 3]` for a token grid of `t` latent frames (patch_t must be 1 for
    exact times; with patch_t > 1 a token takes the mean time of its frames)."""
    pt = config.video.patch_t
    frame_t = video_frame_times(config, t * pt).view(t, pt).mean(dim=1) * positions_per_second(config)
    tt = frame_t.view(t, 1, 1).expand(t, h, w)
    space = config.rope_space_scale
    hh = (torch.arange(h, dtype=torch.float64) * space).view(1, h, 1).expand(t, h, w)
    ww = (torch.arange(w, dtype=torch.float64) * space).view(1, 1, w).expand(t, h, w)
    pos = torch.stack([tt, hh, ww], dim=-1).reshape(t * h * w, 3)  # [N, 3]
    return pos.to(device=device, dtype=torch.float32)


def audio_positions(
    config: ApolloConfig, tokens: int, *, video_latent_frames: int, device: torch.device | str | None = None
) -> Tensor:
    """Positions `[tokens, 3]`: (t, 0, 0)."""
    if config.rope_audio == "aligned":
        tt = audio_token_times(config, tokens) * positions_per_second(config)
    else:
        last_video_id = (video_latent_frames + config.video.patch_t - 1) // config.video.patch_t - 1
        # past the last video position on the scaled clock too, then one id per token
        tt = (last_video_id + 1) * config.rope_time_scale + torch.arange(tokens, dtype=torch.float64)
    pos = torch.zeros(tokens, 3, dtype=torch.float64)
    pos[:, 0] = tt
    return pos.to(device=device, dtype=torch.float32)


def inv_frequencies(config: ApolloConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Per-axis inverse frequencies; each axis gets `rope_axes[i]` rotary pairs."""
    out = []
    for pairs in config.rope_axes:
        exponent = torch.arange(pairs, dtype=torch.float64) / pairs
        out.append(config.rope_theta ** (-exponent))
    return out[0], out[1], out[2]


def rope_angles(config: ApolloConfig, positions: Tensor) -> Tensor:
    """Rotation angles `[..., head_dim // 2]` for positions `[..., 3]` (computed in float64 so
    fractional audio times keep their phase at long durations)."""
    freqs = inv_frequencies(config)
    pos = positions.to(torch.float64)
    parts = [pos[..., i : i + 1] * f.to(pos.device) for i, f in enumerate(freqs)]
    return torch.cat(parts, dim=-1)


def rope_cos_sin(config: ApolloConfig, positions: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """cos and sin `[..., N, 1, head_dim // 2]`, ready to broadcast over heads of `[B, N, H, D]`."""
    ang = rope_angles(config, positions).unsqueeze(-2)  # [..., N, 1, D/2]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate `x` `[..., N, H, D]` by interleaved pairs (x[2i], x[2i+1]); cos/sin broadcast
    against `[..., N, H, D/2]`. Eager: one complex multiply, about half the element-wise passes
    of the explicit form on CPU. Under torch.compile: the explicit form, which inductor fuses
    (it generates no code for complex operators)."""
    if torch.compiler.is_compiling():
        xf = x.float().unflatten(-1, (-1, 2))  # [..., D/2, 2]
        x0, x1 = xf[..., 0], xf[..., 1]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).to(x.dtype)
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # [..., N, H, D/2]
    return torch.view_as_real(xc * torch.complex(cos.float(), sin.float())).flatten(-2).to(x.dtype)
