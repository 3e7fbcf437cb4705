"""Prompts -> core CONDITIONING.

An entry is `[video caption tokens [B, L, D], {"apollo": Conditioning, ...}]`: the tensor slot holds
the video caption embedding like any core conditioning; the full APOLLO conditioning (audio caption,
speech bytes, masks) rides in the dict. A negative prompt is a second use of the same node.
"""
from __future__ import annotations

import torch

from comfy_api.latest import io

from ..apollo_core.objective import Conditioning
from ..apollo_core.pipeline import encode_prompts
from .types import CATEGORY, ApolloTextEncoder, ApolloTextEncoderType

KEY = "apollo"


def to_comfy(cond: Conditioning, encoder: str) -> list:
    cond = cond.to("cpu")
    return [[cond.video_tokens, {KEY: cond, "apollo_encoder": encoder}]]


def from_comfy(conditioning: object, input_name: str) -> Conditioning:
    """The APOLLO conditioning of a CONDITIONING input; several entries (Conditioning Combine) are
    batched, which the sampler then matches against the latent batch."""
    entries = conditioning if isinstance(conditioning, list) else []
    found = [e[1][KEY] for e in entries if isinstance(e, (list, tuple)) and len(e) == 2
             and isinstance(e[1], dict) and isinstance(e[1].get(KEY), Conditioning)]
    if not found or len(found) != len(entries):
        raise ValueError(f"{input_name}: this CONDITIONING was not made by Apollo Text Encode (it lacks the audio "
                         "caption and speech the model needs); connect an Apollo Text Encode output")
    return found[0] if len(found) == 1 else Conditioning.cat(found)


def fit_batch(cond: Conditioning, batch: int, input_name: str) -> Conditioning:
    """Repeat a single prompt over the latent batch; a batch of prompts must match it."""
    if cond.batch == batch:
        return cond
    if cond.batch == 1:
        return cond.index(torch.zeros(batch, dtype=torch.long))
    raise ValueError(f"{input_name}: {cond.batch} prompts for a latent batch of {batch}; use one prompt or "
                     f"set batch_size={cond.batch} on Apollo Empty AV Latent")


class ApolloTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApolloTextEncode", display_name="Apollo Text Encode", category=f"{CATEGORY}/conditioning",
            description="Video prompt, audio prompt and speech transcript -> CONDITIONING. For the negative, use a "
                        "second node with what to avoid in video and audio.",
            inputs=[ApolloTextEncoderType.Input("text_encoder"),
                    io.String.Input("video_prompt", multiline=True, default="",
                                    tooltip="What is seen: scene, subjects, motion, camera."),
                    io.String.Input("audio_prompt", multiline=True, default="",
                                    tooltip="What is heard: sounds, music, ambience, voice character."),
                    io.String.Input("speech", multiline=True, default="",
                                    tooltip="Speech transcript: the words spoken (empty for none).")],
            outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, text_encoder: ApolloTextEncoder, video_prompt: str, audio_prompt: str,
                speech: str) -> io.NodeOutput:
        cond = encode_prompts(text_encoder.encoder, text_encoder.config, [video_prompt], [audio_prompt], [speech])
        return io.NodeOutput(to_comfy(cond, text_encoder.name))


NODES = [ApolloTextEncode]
