"""Core IMAGE / VIDEO / AUDIO inputs -> the tensors apollo_core expects (size, frame rate, sample rate).

Accepts what core LoadImage, LoadVideo, LoadAudio (and VHS loaders, which produce the same types)
give: IMAGE `[B, H, W, C]` 0..1, a VideoInput, AUDIO `{"waveform": [B, C, T], "sample_rate"}`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

import comfy.utils

from ..apollo_core.avio import fit_audio, resample_audio


def _check_image(image: Any, input_name: str) -> Tensor:
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{input_name}: expected an IMAGE [B, H, W, 3] with values 0..1, got {shape}; connect "
                         "Load Image or another IMAGE output")
    image = image.float().cpu()
    if image.shape[-1] == 1:
        return image.expand(-1, -1, -1, 3)
    return image[..., :3]


def fit_frames(images: Tensor, width: int, height: int) -> Tensor:
    """`[N, H, W, 3]` -> `[N, height, width, 3]`: centre crop to the aspect, then bilinear resize."""
    if images.shape[1:3] == (height, width):
        return images
    out = comfy.utils.common_upscale(images.movedim(-1, 1), width, height, "bilinear", "center")
    return out.movedim(1, -1).clamp(0, 1)


def reference_image(image: Any, width: int, height: int, input_name: str = "image") -> Tensor:
    """`[B, height, width, 3]`: the first frame for TI2V / TI2AV, fitted to the latent's size."""
    return fit_frames(_check_image(image, input_name), width, height)


def retime(images: Tensor, source_fps: float, fps: float) -> Tensor:
    """Pick the frame showing at each tick of `fps` (drop or repeat frames, no blending)."""
    if math.isclose(source_fps, fps, rel_tol=1e-4):
        return images
    count = math.floor(images.shape[0] * fps / source_fps + 1e-6)
    index = [min(images.shape[0] - 1, math.floor(i * source_fps / fps + 1e-6)) for i in range(count)]
    return images[index]


def video_frames(video: Any, fps: float, frames: int, width: int, height: int, step_seconds: float,
                 input_name: str = "video") -> Tensor:
    """`[1, frames, height, width, 3]` at the model's fps for V2A. An IMAGE batch is taken as frames
    already at the model's fps; a VIDEO is retimed from its own frame rate."""
    if isinstance(video, Tensor):
        images = _check_image(video, input_name)
    elif hasattr(video, "get_components"):
        components = video.get_components()
        images = _check_image(components.images, input_name)
        images = retime(images, float(Fraction(components.frame_rate)), fps)
    else:
        raise ValueError(f"{input_name}: expected a VIDEO (Load Video) or IMAGE frames, got {type(video).__name__}")
    have = images.shape[0]
    if have < frames:
        fit = math.floor(have / fps / step_seconds + 1e-6) * step_seconds
        hint = f"set seconds to {fit:g} or less" if fit > 0 else "use a longer video"
        raise ValueError(f"{input_name}: {have} frames ({have / fps:g} s at {fps:g} fps) but the latent needs {frames} "
                         f"({frames / fps:g} s); {hint} on Apollo Empty AV Latent")
    return fit_frames(images[:frames], width, height)[None]


def audio_waveform(audio: Any, sample_rate: int, samples: int, input_name: str = "audio") -> Tensor:
    """`[B, 1, samples]` mono at `sample_rate` for A2V: downmixed, resampled, trimmed or zero-padded."""
    # a Mapping, not just a dict: VHS loaders hand over a lazily decoded mapping
    if not isinstance(audio, Mapping) or not isinstance(audio.get("waveform"), Tensor) or "sample_rate" not in audio:
        raise ValueError(f"{input_name}: expected an AUDIO ({{'waveform': [B, C, T], 'sample_rate': int}}), got "
                         f"{type(audio).__name__}; connect Load Audio or another AUDIO output")
    wave = audio["waveform"]
    if wave.dim() != 3 or 0 in wave.shape:
        raise ValueError(f"{input_name}: waveform must be [B, C, T] and non-empty, got {tuple(wave.shape)}")
    mono = wave.float().cpu().mean(1)  # [B, T]
    rate = int(audio["sample_rate"])
    rows = [fit_audio(resample_audio(row[None], rate, sample_rate), samples) for row in mono]
    return torch.stack(rows)  # [B, 1, samples]
