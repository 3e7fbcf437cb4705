"""Caption encoders (external, frozen) and the speech transcript's byte tokenizer.

Importing this package does not import transformers; the encoders load it on first use.
"""
from __future__ import annotations

import os

import torch

from .base import TextEmbedding, TextEncoder
from .hf import HFTextEncoder
from .minilm import MiniLMEncoder
from .speech import BOS, EOS, PAD, VOCAB, decode_speech, encode_speech

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "VOCAB",
    "HFTextEncoder",
    "MiniLMEncoder",
    "TextEmbedding",
    "TextEncoder",
    "decode_speech",
    "encode_speech",
    "load_text_encoder",
]


def load_text_encoder(spec: str | os.PathLike[str] = "minilm", *, device: str | torch.device = "cpu") -> TextEncoder:
    """"minilm" (the shipped default) or a local transformers model folder (last hidden layer)."""
    if isinstance(spec, str) and spec.strip().lower() in ("", "minilm"):
        return MiniLMEncoder(device=device)
    return HFTextEncoder(spec, device=device)
