"""Small layer modules of the MM-DiT.

Every layer takes `dtype`, `device` and `operations`: `operations` is a namespace with a
`Linear` class (ComfyUI passes `comfy.ops.*`; the default `CastOps` stores weights in any dtype,
fp8 included, and casts them to the activation dtype at the matmul).
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionFn


class CastLinear(nn.Linear):
    """nn.Linear whose stored weight may be bf16/fp16/fp8: upcast to the input dtype at matmul."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        b = None if self.bias is None else (self.bias if self.bias.dtype == x.dtype else self.bias.to(x.dtype))
        return F.linear(x, w, b)


CastOps = SimpleNamespace(Linear=CastLinear)


def factory(dtype: torch.dtype | None, device: Any) -> dict[str, Any]:
    return {"dtype": dtype, "device": device}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, *, dtype=None, device=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, **factory(dtype, device)))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last axis in fp32, back in x's dtype; `weight` broadcasts against the
    normalised x (so stacked norms, e.g. q's and k's as `[2, 1, D]`, run as one kernel)."""
    return (F.rms_norm(x.float(), x.shape[-1:], eps=eps) * weight.float()).to(x.dtype)


def layer_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Affine-free LayerNorm: adaLN supplies the scale and shift."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def timestep_features(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features `[..., dim]` of flow time t in [0, 1] (scaled by 1000 like DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs  # [..., half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.fc1 = operations.Linear(freq_dim, hidden, **factory(dtype, device))
        self.fc2 = operations.Linear(hidden, hidden, **factory(dtype, device))

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        h = timestep_features(t, self.freq_dim).to(dtype)  # [U, F]
        return self.fc2(F.silu(self.fc1(h)))  # [U, D]


class PooledTextEmbedder(nn.Module):
    """A caption's token embeddings, mean-pooled over its real tokens, as a `[B, D]` vector to add
    to the timestep embedding; the output layer starts at zero (no effect until trained)."""

    def __init__(self, caption_dim: int, hidden: int, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.fc1 = operations.Linear(caption_dim, hidden, **factory(dtype, device))
        self.fc2 = operations.Linear(hidden, hidden, **factory(dtype, device))

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        weights = mask.to(tokens.dtype)[..., None]  # [B, L, 1]
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [B, C]
        return self.fc2(F.silu(self.fc1(pooled)))  # [B, D]


class Modulation(nn.Module):
    """adaLN-Zero: `n` shift/scale/gate vectors from the timestep embedding, zero-initialised so
    every block starts as the identity."""

    def __init__(self, hidden: int, n: int, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.n = n
        self.lin = operations.Linear(hidden, n * hidden, **factory(dtype, device))

    def forward(self, temb: Tensor, index: Tensor | None) -> list[Tensor]:
        table = self.lin(F.silu(temb))  # [U, n*D]
        # One row per distinct timestep; tokens pick theirs (or broadcast when one t per sample).
        mod = table[:, None, :] if index is None else table[index]  # [B, 1 | N, n*D]
        return list(mod.chunk(self.n, dim=-1))


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.fc1 = operations.Linear(hidden, inner, **factory(dtype, device))
        self.fc2 = operations.Linear(inner, hidden, **factory(dtype, device))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # [B, N, D]


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a zero-initialised projection to the patch size."""

    def __init__(self, hidden: int, out_dim: int, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.mod = Modulation(hidden, 2, dtype=dtype, device=device, operations=operations)
        self.linear = operations.Linear(hidden, out_dim, **factory(dtype, device))

    def forward(self, x: Tensor, temb: Tensor, index: Tensor | None) -> Tensor:
        shift, scale = self.mod(temb, index)  # [B, 1|N, D] each
        return self.linear(layer_norm(x) * (1 + scale) + shift)  # [B, N, out]


class SpeechTextEncoder(nn.Module):
    """The checkpoint's own byte-level transcript encoder (the paper's "TTS text encoder"):
    byte embeddings + learned positions + a few pre-norm transformer layers, projected to the
    model width. Kept inside the checkpoint so speech needs no external tokenizer."""

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, max_tokens: int, hidden: int,
                 attention: AttentionFn, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"speech_dim={dim} must be divisible by speech_heads={heads}")
        self.heads = heads
        self.attention = attention
        # On the meta device nn.Embedding's normal_ init goes through torch._refs and imports
        # torch._dynamo (~2.7 s of every checkpoint load): give it an empty weight there instead.
        # Real weights keep the stock init so training draws the same random numbers as before.
        weight = torch.empty(vocab, dim, **factory(dtype, device))
        self.embed = (nn.Embedding(vocab, dim, _weight=weight) if weight.is_meta
                      else nn.Embedding(vocab, dim, **factory(dtype, device)))
        self.pos = nn.Parameter(torch.zeros(max_tokens, dim, **factory(dtype, device)))
        self.layers = nn.ModuleList(
            nn.ModuleDict({
                "norm1": nn.LayerNorm(dim, **factory(dtype, device)),
                "qkv": operations.Linear(dim, 3 * dim, **factory(dtype, device)),
                "out": operations.Linear(dim, dim, **factory(dtype, device)),
                "norm2": nn.LayerNorm(dim, **factory(dtype, device)),
                "mlp": MLP(dim, 4 * dim, dtype=dtype, device=device, operations=operations),
            })
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim, **factory(dtype, device))
        self.proj = operations.Linear(dim, hidden, **factory(dtype, device))

    def forward(self, ids: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
        b, s = ids.shape
        if s > self.pos.shape[0]:
            raise ValueError(f"speech transcript has {s} tokens; this checkpoint reads at most {self.pos.shape[0]}")
        x = (self.embed(ids) + self.pos[:s]).to(dtype)  # [B, S, E]
        key_mask = None if bool(mask.all()) else mask
        for layer in self.layers:
            h = layer["norm1"](x)
            q, k, v = layer["qkv"](h).view(b, s, 3, self.heads, -1).unbind(2)  # [B, S, H, E/H] each
            x = x + layer["out"](self.attention(q, k, v, key_mask).reshape(b, s, -1))  # [B, S, E]
            x = x + layer["mlp"](layer["norm2"](x))
        return self.proj(self.norm(x))  # [B, S, D]
