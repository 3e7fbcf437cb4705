"""What the model needs from a codec, and the checks that keep codec, config and inputs in step.

The tiny codecs in this package and adapters for real VAEs (a CogVideoX-style causal video VAE,
a 44.1 kHz audio VAE) all satisfy these protocols, so the pipeline never looks past them.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..config import ApolloConfig


@runtime_checkable
class VideoCodec(Protocol):
    latent_channels: int
    temporal_compression: int
    spatial_compression: int
    causal: bool
    fps: float

    def encode(self, frames: Tensor) -> Tensor:
        """`[B, 3, T, H, W]` in [-1, 1] -> normalised latents `[B, C, T', H', W']` (unit-ish variance)."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents `[B, C, T', H', W']` -> frames `[B, 3, T, H, W]` in [-1, 1]."""
        ...


@runtime_checkable
class AudioCodec(Protocol):
    latent_channels: int
    sample_rate: int
    hop: int
    channels: int  # waveform channels (1 = mono)

    def encode(self, waveform: Tensor) -> Tensor:
        """`[B, channels, S]` -> normalised latents `[B, C, S // hop]`."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """`[B, C, T]` -> waveform `[B, channels, T * hop]`."""
        ...


def _name(codec: object) -> str:
    return type(codec).__name__


def check_codecs(
    config: ApolloConfig,
    video_codec: VideoCodec | None = None,
    audio_codec: AudioCodec | None = None,
) -> None:
    """Raise ValueError naming the first field where a codec disagrees with `config`."""
    if video_codec is not None:
        for field in ("latent_channels", "temporal_compression", "spatial_compression", "causal", "fps"):
            want = getattr(config.video, field)
            have = getattr(video_codec, field, None)
            same = abs(float(have) - float(want)) < 1e-6 if field == "fps" and have is not None else have == want
            if not same:
                raise ValueError(
                    f"video codec {_name(video_codec)} has {field}={have!r} but config {config.name!r} has "
                    f"video.{field}={want!r}; use a codec trained for this config or config.replace(**{{'video.{field}': {have!r}}})"
                )
    if audio_codec is not None:
        for field in ("latent_channels", "sample_rate", "hop"):
            want = getattr(config.audio, field)
            have = getattr(audio_codec, field, None)
            if have != want:
                raise ValueError(
                    f"audio codec {_name(audio_codec)} has {field}={have!r} but config {config.name!r} has "
                    f"audio.{field}={want!r}; use a codec trained for this config or config.replace(**{{'audio.{field}': {have!r}}})"
                )


def _nearest_multiples(value: int, k: int) -> str:
    lo = (value // k) * k
    options = [n for n in (lo, lo + k) if n > 0]
    return " or ".join(str(n) for n in options)


def valid_pixel_frames(codec: VideoCodec, frames: int) -> bool:
    k = codec.temporal_compression
    if codec.causal:
        return frames >= 1 and (frames - 1) % k == 0
    return frames >= k and frames % k == 0


def _nearest_frames(codec: VideoCodec, frames: int) -> str:
    k = codec.temporal_compression
    if not codec.causal:
        return _nearest_multiples(frames, k)
    lo = 1 + max(frames - 1, 0) // k * k
    return " or ".join(str(n) for n in sorted({lo, lo + k}))


def video_latent_shape(codec: VideoCodec, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """`(C, T', H', W')` the codec makes from `frames` pixel frames of `height` x `width`."""
    k, s = codec.temporal_compression, codec.spatial_compression
    t = 1 + (frames - 1) // k if codec.causal else frames // k
    return codec.latent_channels, t, height // s, width // s


def video_pixel_frames(codec: VideoCodec, latent_frames: int) -> int:
    k = codec.temporal_compression
    return 1 + (latent_frames - 1) * k if codec.causal else latent_frames * k


def check_video_frames(codec: VideoCodec, frames: Tensor, name: str = "frames") -> None:
    """Raise ValueError unless `frames` is `[B, 3, T, H, W]` with sizes the codec can compress."""
    if frames.dim() != 5 or frames.shape[1] != 3:
        raise ValueError(f"{name} must be [B, 3, T, H, W] RGB in [-1, 1], got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [-1, 1], got dtype {frames.dtype}; use x / 127.5 - 1")
    _, _, t, h, w = frames.shape
    if not valid_pixel_frames(codec, t):
        rule = (f"1 + a multiple of {codec.temporal_compression}" if codec.causal
                else f"a multiple of {codec.temporal_compression}")
        raise ValueError(
            f"{name} has T={t} frames but {_name(codec)} needs {rule}; nearest valid: {_nearest_frames(codec, t)}"
        )
    s = codec.spatial_compression
    for axis, size in (("H", h), ("W", w)):
        if size < s or size % s:
            raise ValueError(
                f"{name} has {axis}={size} but {_name(codec)} needs a multiple of {s}; "
                f"nearest valid: {_nearest_multiples(size, s)} (crop or pad)"
            )


def check_video_latents(codec: VideoCodec, latents: Tensor, name: str = "latents") -> None:
    if latents.dim() != 5 or latents.shape[1] != codec.latent_channels:
        raise ValueError(
            f"{name} must be [B, {codec.latent_channels}, T, H, W] for {_name(codec)}, got shape {tuple(latents.shape)}"
        )
    if latents.shape[2] < 1:
        raise ValueError(f"{name} has no latent frames (shape {tuple(latents.shape)})")


def check_waveform(codec: AudioCodec, waveform: Tensor, name: str = "waveform") -> None:
    """Raise ValueError unless `waveform` is `[B, channels, S]` with S a positive multiple of the hop."""
    if waveform.dim() != 3 or waveform.shape[1] != codec.channels:
        raise ValueError(
            f"{name} must be [B, {codec.channels}, S] for {_name(codec)}, got shape {tuple(waveform.shape)}"
        )
    if not waveform.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {waveform.dtype}")
    s = waveform.shape[2]
    if s < codec.hop or s % codec.hop:
        raise ValueError(
            f"{name} has S={s} samples but {_name(codec)} needs a multiple of hop={codec.hop}; "
            f"nearest valid: {_nearest_multiples(s, codec.hop)} (trim or zero-pad)"
        )


def check_audio_latents(codec: AudioCodec, latents: Tensor, name: str = "latents") -> None:
    if latents.dim() != 3 or latents.shape[1] != codec.latent_channels or latents.shape[2] < 1:
        raise ValueError(
            f"{name} must be [B, {codec.latent_channels}, T] with T >= 1 for {_name(codec)}, "
            f"got shape {tuple(latents.shape)}"
        )
