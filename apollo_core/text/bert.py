"""A light BERT encoder for the default caption model, without importing transformers.

Importing transformers and building a model through it costs seconds on a small CPU, more than
the whole tiny model's generation. BERT's forward is small and fixed, so the default MiniLM
encoder runs it here from the same files (model.safetensors + tokenizer.json, read with the
`tokenizers` library). `tests/test_text_bert.py` holds it equal to the transformers model.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor


class LightBert:
    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder}: LightBert reads absolute-position BERT models only "
                             f"(model_type={config.get('model_type')!r})")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{folder}: LightBert supports hidden_act 'gelu', not {config.get('hidden_act')!r}")
        from tokenizers import Tokenizer  # the Rust tokenizer transformers itself uses

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dim = int(config["hidden_size"])
        self.max_positions = int(config.get("max_position_embeddings", 512))
        self.w = {k: v.to(device) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.device = torch.device(device)

    def token_ids(self, texts: list[str], max_tokens: int) -> tuple[Tensor, Tensor]:
        """ids `[B, L]` and mask `[B, L]`; a truncated row keeps its final [SEP] like transformers."""
        limit = min(max_tokens, self.max_positions)
        rows = []
        for enc in self.tokenizer.encode_batch(list(texts)):
            ids = enc.ids
            if len(ids) > limit:
                ids = ids[: limit - 1] + ids[-1:]
            rows.append(ids)
        longest = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return ids.to(self.device), mask.to(self.device)

    def _linear(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    @torch.inference_mode()
    def hidden_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Last hidden state `[B, L, D]`."""
        b, n = ids.shape
        w = self.w
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]  # [B, L, D]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        bias = torch.zeros(b, 1, 1, n, dtype=x.dtype, device=x.device).masked_fill(~mask[:, None, None, :], -math.inf)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._linear(x, f"{p}.attention.self.{m}").view(b, n, self.heads, -1).transpose(1, 2)
                       for m in ("query", "key", "value"))  # [B, H, L, Dh] each
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, n, -1)  # [B, L, D]
            x = self._norm(x + self._linear(a, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._linear(x, f"{p}.intermediate.dense"))  # [B, L, 4D]
            x = self._norm(x + self._linear(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


@functools.lru_cache(maxsize=2)
def load_light_bert(folder: str, device: str = "cpu") -> LightBert:
    return LightBert(folder, device)
