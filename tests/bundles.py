"""A tiny random APOLLO bundle (debug preset, untrained codecs) that tests build themselves."""
from __future__ import annotations

from pathlib import Path

import torch

from apollo_core.checkpoint import save_model
from apollo_core.codecs import TinyAudioVAE, TinyVideoVAE, save_codec
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT

DEBUG_DEFAULTS = {"seconds": 2.0, "width": 32, "height": 32}


def make_debug_bundle(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ApolloDiT(get_preset("debug"), attention="sdpa")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    save_model(folder / "model.safetensors", model, extra={"text_encoder": "minilm", "defaults": DEBUG_DEFAULTS})
    save_codec(folder / "video_codec.safetensors", TinyVideoVAE(latent_channels=4, temporal_compression=2, spatial_compression=4, fps=8.0))
    save_codec(folder / "audio_codec.safetensors", TinyAudioVAE(latent_channels=4, sample_rate=8000, hop=250))
    return folder
