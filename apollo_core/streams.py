"""Typed model inputs: one frozen object per stream.

The model sees up to four streams, always in this order: video, video caption ("video_text"),
audio text ("audio_text": audio caption then speech transcript) and audio. A stream that a task
leaves out is simply `None` in `ApolloInputs`: it is not in the sequence at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ApolloConfig
from .model import rope

STREAM_ORDER = ("video", "video_text", "audio_text", "audio")


@dataclass(frozen=True)
class LatentStream:
    """Video latents `[B, C, T, H, W]` or audio latents `[B, C, T]`.

    timesteps: `[B, N]` flow time per token after patchify (1 = clean data). A given stream is all
        ones; TI2V sets the first latent frame's tokens to one and the rest to the noise level.
    positions: `[N, 3]` or `[B, N, 3]` RoPE coordinates (t, h, w), float.
    mask: `[B, N]` bool (True = real token) or None when every token is real.
    self_cond: the previous clean estimate, same shape as `latent`, for a model with
        `self_condition`; None reads as zeros (no estimate yet, or a given stream).
    """

    latent: Tensor
    timesteps: Tensor
    positions: Tensor
    mask: Tensor | None = None
    self_cond: Tensor | None = None


@dataclass(frozen=True)
class TextStream:
    """Caption token embeddings `[B, L, D_caption]` from an external text encoder.

    For the audio text stream, `speech` holds the transcript as byte ids `[B, S]` (see
    `apollo_core.text.speech`); the checkpoint's own speech-text encoder embeds them and the model
    appends them after the caption tokens.
    timesteps: `[B]` the flow time of the modality this text describes (drives its modulation).
    """

    tokens: Tensor
    mask: Tensor
    timesteps: Tensor
    speech: Tensor | None = None
    speech_mask: Tensor | None = None


@dataclass(frozen=True)
class ApolloInputs:
    video: LatentStream | None = None
    video_text: TextStream | None = None
    audio_text: TextStream | None = None
    audio: LatentStream | None = None

    def active(self) -> tuple[str, ...]:
        return tuple(name for name in STREAM_ORDER if getattr(self, name) is not None)

    @property
    def batch(self) -> int:
        for name in self.active():
            s = getattr(self, name)
            return (s.latent if isinstance(s, LatentStream) else s.tokens).shape[0]
        raise ValueError("ApolloInputs has no stream; a task needs at least video or audio")


def video_token_grid(config: ApolloConfig, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(T, H, W) in tokens for a video latent `[B, C, T, H, W]`; raises if not divisible."""
    v = config.video
    _, c, t, h, w = latent_shape
    if c != v.latent_channels:
        raise ValueError(f"video latent has {c} channels, config {config.name!r} expects {v.latent_channels}")
    for name, size, p in (("frames", t, v.patch_t), ("height", h, v.patch_h), ("width", w, v.patch_w)):
        if size % p:
            raise ValueError(
                f"video latent {name}={size} is not a multiple of the patch size {p}; use {size - size % p or p}"
            )
    return t // v.patch_t, h // v.patch_h, w // v.patch_w


def audio_token_count(config: ApolloConfig, latent_shape: tuple[int, ...]) -> int:
    a = config.audio
    _, c, t = latent_shape
    if c != a.latent_channels:
        raise ValueError(f"audio latent has {c} channels, config {config.name!r} expects {a.latent_channels}")
    if t % a.patch:
        raise ValueError(f"audio latent length {t} is not a multiple of the patch size {a.patch}; use {t - t % a.patch or a.patch}")
    return t // a.patch


def video_stream(
    config: ApolloConfig,
    latent: Tensor,
    t: Tensor,
    *,
    first_frame_given: bool = False,
    given: bool = False,
    self_cond: Tensor | None = None,
    frame_t: Tensor | None = None,
) -> LatentStream:
    """Video stream for latents `[B, C, T, H, W]` at flow time `t` `[B]`; `frame_t` `[B, T]`: a
    time per latent frame instead (`flow.spread_times`), a patch taking its first frame's."""
    gt, gh, gw = video_token_grid(config, tuple(latent.shape))
    b = latent.shape[0]
    if frame_t is not None:
        per_frame = frame_t.to(torch.float32)[:, :: config.video.patch_t].clone()  # [B, Tt]
    else:
        per_frame = t.to(torch.float32).view(b, 1).expand(b, gt).clone()  # [B, Tt]
    if given:
        per_frame.fill_(1.0)
    elif first_frame_given:
        per_frame[:, 0] = 1.0
    timesteps = per_frame[:, :, None].expand(b, gt, gh * gw).reshape(b, gt * gh * gw)  # [B, N]
    positions = rope.video_positions(config, gt, gh, gw, device=latent.device)  # [N, 3]
    return LatentStream(latent=latent, timesteps=timesteps, positions=positions, self_cond=_self_cond(latent, self_cond))


def _self_cond(latent: Tensor, estimate: Tensor | None) -> Tensor | None:
    if estimate is not None and estimate.shape != latent.shape:
        raise ValueError(f"self-conditioning estimate has shape {tuple(estimate.shape)}, the latent {tuple(latent.shape)}")
    return estimate


def audio_stream(
    config: ApolloConfig,
    latent: Tensor,
    t: Tensor,
    *,
    given: bool = False,
    video_latent_frames: int | None = None,
    self_cond: Tensor | None = None,
    frame_t: Tensor | None = None,
) -> LatentStream:
    """Audio stream for latents `[B, C, T]` at flow time `t` `[B]`; `frame_t` `[B, T]`: a time per
    latent frame instead (`flow.spread_times`), a patch taking its first frame's.

    video_latent_frames: only for `rope_audio="offset"` (the paper's literal scheme), where audio
    positions start after the last video temporal id; derived from the clip length when None.
    """
    n = audio_token_count(config, tuple(latent.shape))
    b = latent.shape[0]
    if given:
        timesteps = torch.ones(b, n, device=latent.device)  # [B, N]
    elif frame_t is not None:
        timesteps = frame_t.to(torch.float32)[:, :: config.audio.patch].contiguous()  # [B, N]
    else:
        timesteps = t.to(torch.float32).view(b, 1).expand(b, n).contiguous()  # [B, N]
    if video_latent_frames is None:
        seconds = latent.shape[-1] * config.audio.hop / config.audio.sample_rate
        video_latent_frames = max(1, config.video.latent_frames(round(seconds * config.video.fps)))
    positions = rope.audio_positions(config, n, video_latent_frames=video_latent_frames, device=latent.device)
    return LatentStream(latent=latent, timesteps=timesteps, positions=positions, self_cond=_self_cond(latent, self_cond))


def text_stream(
    tokens: Tensor,
    mask: Tensor,
    t: Tensor,
    speech: Tensor | None = None,
    speech_mask: Tensor | None = None,
) -> TextStream:
    if tokens.ndim != 3:
        raise ValueError(f"caption embeddings must be [B, L, D], got shape {tuple(tokens.shape)}")
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"caption mask shape {tuple(mask.shape)} does not match embeddings {tuple(tokens.shape[:2])}")
    if (speech is None) != (speech_mask is None):
        raise ValueError("speech ids and speech_mask must be given together")
    return TextStream(tokens=tokens, mask=mask.bool(), timesteps=t.to(torch.float32), speech=speech, speech_mask=speech_mask)
