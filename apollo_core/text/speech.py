"""Byte-level tokenizer for speech transcripts.

The checkpoint's own speech-text encoder embeds these ids (vocabulary 259 = 256 byte values + PAD,
BOS, EOS), so no external tokenizer has to match the weights. Text is NFC-normalised first so that
the same visible transcript always gives the same bytes.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import check_texts

PAD, BOS, EOS = 256, 257, 258
VOCAB = 259


def encode_speech(texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
    """UTF-8 bytes between BOS and EOS -> (ids `[B, S]` int64, mask `[B, S]` bool, True = real).

    S is the longest row (<= max_tokens); shorter rows are right-padded with PAD. Long transcripts
    are cut at a character boundary and keep their EOS; an empty transcript is [BOS, EOS].
    """
    texts = check_texts("encode_speech", texts, max_tokens, min_tokens=2)
    rows = []
    for text in texts:
        data = unicodedata.normalize("NFC", text).encode("utf-8")
        cut = min(len(data), max_tokens - 2)
        while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # never split a multi-byte character
            cut -= 1
        rows.append([BOS, *data[:cut], EOS])
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), PAD, dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def decode_speech(ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
    """Inverse of `encode_speech` for `[B, S]` ids: the bytes after BOS up to EOS (or the end).

    Invalid UTF-8 (possible in generated ids) is replaced with U+FFFD rather than raising.
    """
    if isinstance(ids, Tensor):
        if ids.ndim != 2:
            raise ValueError(f"decode_speech: ids must be [B, S], got shape {tuple(ids.shape)}; use ids[None] for one row")
        rows = ids.tolist()
    else:
        rows = [list(r) for r in ids]
    texts = []
    for row in rows:
        if row and row[0] == BOS:
            row = row[1:]
        if EOS in row:
            row = row[: row.index(EOS)]
        texts.append(bytes(b for b in row if 0 <= b < 256).decode("utf-8", errors="replace"))
    return texts
