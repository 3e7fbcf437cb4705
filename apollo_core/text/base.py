"""What every caption encoder returns, and the checks they share."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class TextEmbedding:
    """Per-token caption embeddings.

    tokens: `[B, L, D]` float32; padded positions are zero.
    mask: `[B, L]` bool, True = real token. Real tokens come first in every row (right padding)
        and every row has at least one real token, so attention over a row is never empty.
    """

    tokens: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.tokens.dtype != torch.float32:
            raise ValueError(
                f"TextEmbedding.tokens must be float32 [B, L, D], got {tuple(self.tokens.shape)} {self.tokens.dtype}"
            )
        if self.mask.dtype != torch.bool or tuple(self.mask.shape) != tuple(self.tokens.shape[:2]):
            raise ValueError(
                f"TextEmbedding.mask must be bool [B, L] = {tuple(self.tokens.shape[:2])}, "
                f"got {tuple(self.mask.shape)} {self.mask.dtype}"
            )

    @property
    def dim(self) -> int:
        return self.tokens.shape[-1]

    def pad_to(self, length: int) -> "TextEmbedding":
        """Right-pad with zero, masked-out tokens to `length` (never truncates)."""
        extra = length - self.tokens.shape[1]
        if extra < 0:
            raise ValueError(f"pad_to({length}): the embedding already has {self.tokens.shape[1]} tokens")
        if extra == 0:
            return self
        return TextEmbedding(F.pad(self.tokens, (0, 0, 0, extra)), F.pad(self.mask, (0, extra), value=False))

    @staticmethod
    def cat(items: Sequence["TextEmbedding"]) -> "TextEmbedding":
        """Join along the batch, padding to the longest (e.g. prompt and negative prompt in one pass)."""
        if not items:
            raise ValueError("TextEmbedding.cat needs at least one embedding")
        if len({e.dim for e in items}) != 1:
            raise ValueError(f"TextEmbedding.cat: widths differ {[e.dim for e in items]}; use one encoder")
        length = max(e.tokens.shape[1] for e in items)
        padded = [e.pad_to(length) for e in items]
        return TextEmbedding(torch.cat([e.tokens for e in padded]), torch.cat([e.mask for e in padded]))


@runtime_checkable
class TextEncoder(Protocol):
    """Turns captions into per-token embeddings of width `dim`."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], max_tokens: int) -> TextEmbedding: ...


def check_texts(who: str, texts: Sequence[str], max_tokens: int, min_tokens: int = 1) -> list[str]:
    """Validate an encoder's arguments; a bare string would otherwise be read as one text per character."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ValueError(f"{who}: texts must be a list of strings, got {type(texts).__name__}; wrap one text as [text]")
    if not texts:
        raise ValueError(f"{who}: texts is empty; pass at least one string (\"\" is allowed)")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{who}: texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < min_tokens:
        raise ValueError(f"{who}: max_tokens must be an int >= {min_tokens}, got {max_tokens!r}")
    return list(texts)
