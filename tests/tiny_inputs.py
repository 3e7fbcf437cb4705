"""Random weights and a small two-clip case for the debug preset, shared by model-option tests."""
from __future__ import annotations

import torch
from torch import nn

from apollo_core.config import get_preset
from apollo_core.objective import Conditioning

DEBUG = get_preset("debug")


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn at random (adaLN-Zero's zeros too), so every path carries signal."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08)
    return model.eval()


def debug_case(b: int = 2) -> tuple[Conditioning, torch.Tensor, torch.Tensor]:
    """Prompts (5 video-caption, 4 audio-caption, 6 speech tokens), video latents `[B, C, 3, 4, 4]`
    and audio latents `[B, C, 8 * patch]`."""
    g = torch.Generator().manual_seed(1)
    d = DEBUG.text.caption_dim
    cond = Conditioning(torch.randn(b, 5, d, generator=g), torch.ones(b, 5, dtype=torch.bool),
                        torch.randn(b, 4, d, generator=g), torch.ones(b, 4, dtype=torch.bool),
                        torch.randint(0, 256, (b, 6), generator=g), torch.ones(b, 6, dtype=torch.bool))
    video = torch.randn(b, DEBUG.video.latent_channels, 3, 4, 4, generator=g)
    audio = torch.randn(b, DEBUG.audio.latent_channels, 8 * DEBUG.audio.patch, generator=g)
    return cond, video, audio
