"""Caption encoder for any transformers model in a local folder (Qwen-class decoders, BERT, T5, ...).

Only local folders: nothing is fetched from the Hub at run time, weights load from .safetensors
only, and `trust_remote_code` is never set. Loaded models are cached per (folder, dtype, device).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import TextEmbedding, check_texts

WHERE_TO_PUT = (
    "download the model folder (config.json, tokenizer files and *.safetensors) and pass its path, "
    "e.g. ComfyUI/models/text_encoders/<model-name>"
)
# Encoder-decoder families whose encoder has its own class, so the decoder weights are never loaded.
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def local_model_folder(path: str | os.PathLike[str], who: str) -> Path:
    """Check that `path` is a local transformers folder with safetensors weights."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{who}: {str(path)!r} is not a local folder (Hub ids are not downloaded); {WHERE_TO_PUT}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{who}: {folder} has no config.json, so it is not a transformers model folder; {WHERE_TO_PUT}")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{who}: {folder} has no *.safetensors weights (other formats are not loaded); {WHERE_TO_PUT}")
    return folder.resolve()


@functools.lru_cache(maxsize=2)
def load_local(folder: str, dtype: torch.dtype, device: str) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, encoder module) from a checked local folder, frozen in eval mode; cached."""
    # Set here, not at import, so merely importing the package (e.g. inside ComfyUI) does not turn
    # the Hub off for other code; local_files_only=True below is what guarantees no download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers  # deferred: importing apollo_core.text must stay light

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        kwargs = dict(local_files_only=True, use_safetensors=True, dtype=dtype)
        if config.model_type in _ENCODER_ONLY:
            model = getattr(transformers, _ENCODER_ONLY[config.model_type]).from_pretrained(folder, **kwargs)
        else:
            model = transformers.AutoModel.from_pretrained(folder, **kwargs)
            if getattr(config, "is_encoder_decoder", False):
                model = model.get_encoder()
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{folder}: could not load a transformers tokenizer and model from it ({exc})") from None
    model.to(device).eval().requires_grad_(False)
    return tokenizer, model


class HFTextEncoder:
    """Hidden states of one layer, per token, from a local transformers model.

    layer: index into the model's hidden states, 0 = token embeddings, -1 = last layer (what most
    LLM-conditioned video models use is -1 or -2). Rows are right-padded, so with a causal decoder a
    caption's features do not depend on what else is in the batch.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layer: int = -1,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        folder = local_model_folder(path, "HFTextEncoder")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"HFTextEncoder: dtype must be a floating torch.dtype, got {dtype!r}")
        self.tokenizer, self.model = load_local(str(folder), dtype, str(device))
        config = self.model.config
        self.name = folder.name
        self.dim = int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))
        n_layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers"))
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(
                f"HFTextEncoder: layer must be an int in {-(n_layers + 1)}..{n_layers} for {self.name} "
                f"({n_layers} layers), got {layer!r}"
            )
        self.layer = layer
        self.max_positions = getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        tok = self.tokenizer
        ids = [tok.pad_token_id, tok.eos_token_id, tok.unk_token_id]
        self.pad_id = next((i for i in ids if i is not None), 0)
        # A decoder tokenizer turns "" into no tokens at all; one stand-in token keeps the row attendable.
        self.empty_id = next((i for i in (tok.bos_token_id, tok.eos_token_id, self.pad_id) if i is not None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def token_ids(self, texts: Sequence[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        """Right-padded ids `[B, L]` and mask `[B, L]` (L = longest row, <= max_tokens)."""
        texts = check_texts(f"{self.name}.encode", texts, max_tokens)
        if self.max_positions and max_tokens > self.max_positions:
            raise ValueError(
                f"{self.name}.encode: max_tokens={max_tokens} exceeds the model's {self.max_positions} positions"
            )
        rows = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
        rows = [row or [self.empty_id] for row in rows]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def encode(self, texts: Sequence[str], max_tokens: int) -> TextEmbedding:
        ids, mask = self.token_ids(texts, max_tokens)
        with torch.inference_mode():
            attention = mask.to(self.device, torch.long)
            out = self.model(input_ids=ids.to(self.device), attention_mask=attention, output_hidden_states=True)
            hidden = out.hidden_states[self.layer]  # [B, L, D]
            tokens = hidden.float() * mask.to(hidden.device)[..., None]  # [B, L, D], padding zeroed
        # Cloned outside inference mode: inference tensors cannot be saved for backward, and the
        # embeddings feed models that are being trained.
        return TextEmbedding(tokens.clone(), mask.to(tokens.device).clone())
