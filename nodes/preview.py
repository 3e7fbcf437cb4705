"""Live previews while sampling: the middle frame of the current clean estimate, decoded by the
video codec; for audio-only tasks the decoded waveform drawn as an envelope.

ComfyUI's own latent previewers need a core latent format, so APOLLO renders its preview itself
and hands `("JPEG", PIL image, max_size)` to the progress bar.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from comfy.cli_args import args

from ..apollo_core.pipeline import decode_audio, decode_video
from .types import ApolloCodecs

MIN_SIDE = 256  # tiny models make 64 px frames: upscale (nearest) so the preview stays crisp


def preview_size() -> int:
    return int(getattr(args, "preview_size", 512) or 512)


def _frame_image(codecs: ApolloCodecs, video: Tensor) -> Image.Image:
    mid = video.shape[2] // 2
    device = next(codecs.video.parameters()).device
    frame = decode_video(codecs.video, video[:1, :, mid:mid + 1].to(device))[0, 0]  # [H, W, 3]
    pixels = (frame.cpu() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    scale = max(1, MIN_SIDE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def _waveform_image(codecs: ApolloCodecs, audio: Tensor, width: int = 512, height: int = 128) -> Image.Image:
    device = next(codecs.audio.parameters()).device
    samples = audio.shape[-1] * codecs.audio.hop
    wave = decode_audio(codecs.audio, audio[:1].to(device), samples)[0].mean(0).cpu().numpy()  # [S]
    columns = np.array_split(np.abs(wave), width)
    peaks = np.array([c.max() if c.size else 0.0 for c in columns])
    image = Image.new("RGB", (width, height), (16, 18, 24))
    draw = ImageDraw.Draw(image)
    mid = height / 2
    for x, peak in enumerate(peaks):
        half = max(1.0, float(peak) * (mid - 2))
        draw.line([(x, mid - half), (x, mid + half)], fill=(90, 200, 255))
    return image


def render(codecs: ApolloCodecs, state: dict[str, Tensor], generates: tuple[str, ...]) -> tuple[str, Image.Image, int]:
    """The preview of what the task generates (V2A shows the audio, not the given video)."""
    image = _frame_image(codecs, state["video"]) if "video" in generates else _waveform_image(codecs, state["audio"])
    return "JPEG", image, preview_size()
