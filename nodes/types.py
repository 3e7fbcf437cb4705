"""The pack's own socket types: only for things no ComfyUI core type describes honestly.

MODEL/VAE/CLIP would promise compatibility with core samplers and encoders that an APOLLO model,
its codec pair and its caption encoder do not have, so they travel as APOLLO_* types. Everything
else (IMAGE, AUDIO, VIDEO, LATENT, CONDITIONING) uses the core types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfy_api.latest import io

from ..apollo_core.codecs import AudioCodec, VideoCodec
from ..apollo_core.config import ApolloConfig
from ..apollo_core.text import TextEncoder


@dataclass(frozen=True)
class ApolloModel:
    """An ApolloDiT inside a ComfyUI ModelPatcher, so ComfyUI's memory manager loads and offloads it."""

    patcher: Any  # comfy.model_patcher.ModelPatcher around apollo_core.model.dit.ApolloDiT
    name: str
    text_encoder: str  # the caption encoder the checkpoint was trained with ("minilm" or a folder name)
    defaults: dict = field(default_factory=dict)  # width, height, seconds the checkpoint was trained at

    @property
    def config(self) -> ApolloConfig:
        return self.patcher.model.config


@dataclass(frozen=True)
class ApolloCodecs:
    """The video and audio codecs, each in its own ModelPatcher."""

    video: VideoCodec
    audio: AudioCodec
    video_patcher: Any
    audio_patcher: Any
    name: str

    @property
    def patchers(self) -> list[Any]:
        return [self.video_patcher, self.audio_patcher]


@dataclass(frozen=True)
class ApolloTextEncoder:
    """A caption encoder checked against the model it conditions (width and token limits)."""

    encoder: TextEncoder
    config: ApolloConfig
    name: str


ApolloModelType = io.Custom("APOLLO_MODEL")
ApolloCodecsType = io.Custom("APOLLO_CODECS")
ApolloTextEncoderType = io.Custom("APOLLO_TEXT_ENCODER")

TASKS = ("T2AV", "TI2AV", "TI2V", "T2V", "T2A", "V2A", "A2V")
CATEGORY = "apollo"
