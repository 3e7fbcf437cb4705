"""Attention backends, chosen once when the model is built.

Every backend is a callable `(q, k, v, key_mask) -> out` on `[B, N, H, D]` tensors (the layout
flash-attn uses; SDPA gets transposed views), `key_mask` `[B, N]` bool (True = attend) or None.
`math` is the plain reference every other backend is tested against.
"""
from __future__ import annotations

import enum
import importlib.util
import math as _math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

AttentionFn = Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tensor]


class Backend(enum.Enum):
    AUTO = "auto"
    MATH = "math"
    SDPA = "sdpa"
    FLASH_ATTN = "flash_attn"
    SAGE = "sage"

    @staticmethod
    def parse(value: "str | Backend") -> "Backend":
        if isinstance(value, Backend):
            return value
        try:
            return Backend(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown attention backend {value!r}; choose one of {[b.value for b in Backend]}") from None


_INSTALL_HINT = {
    Backend.FLASH_ATTN: "pip install flash-attn --no-build-isolation (FlashAttention 2) or install flash_attn_interface "
    "(FlashAttention 3, Hopper); both need a CUDA GPU",
    Backend.SAGE: "pip install sageattention (needs a CUDA GPU)",
}


def attention_math(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Reference: softmax(q k^T / sqrt(d)) v in float32."""
    scale = 1.0 / _math.sqrt(q.shape[-1])
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    scores = qf @ kf.transpose(-1, -2) * scale  # [B, H, Nq, Nk]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = scores.softmax(dim=-1) @ vf  # [B, H, Nq, D]
    return out.transpose(1, 2).to(q.dtype)  # [B, Nq, H, D]


def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, Nk]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)  # [B, Nq, H, D]


def _flash_module():
    for name in ("flash_attn_interface", "flash_attn"):  # FA3 first, then FA2
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return None


def _make_flash() -> AttentionFn:
    fa = _flash_module()

    def attention_flash(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
            # flash kernels exist only for CUDA half precision; the math is identical in SDPA
            return attention_sdpa(q, k, v, key_mask)
        if key_mask is None or bool(key_mask.all()):
            out = fa.flash_attn_func(q, k, v)
            return out[0] if isinstance(out, tuple) else out
        # Padded text: pack real tokens and run the varlen kernel instead of a dense mask.
        b, n, h, d = q.shape
        lens = key_mask.sum(dim=1, dtype=torch.int32)  # [B]
        cu = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))  # [B+1]
        idx = key_mask.flatten().nonzero().squeeze(1)  # [total]
        qp, kp, vp = (x.reshape(b * n, h, d).index_select(0, idx) for x in (q, k, v))  # [total, H, D]
        maxlen = int(lens.max())
        out = fa.flash_attn_varlen_func(qp, kp, vp, cu, cu, maxlen, maxlen)
        out = out[0] if isinstance(out, tuple) else out
        full = torch.zeros(b * n, h, d, dtype=out.dtype, device=out.device)
        full.index_copy_(0, idx, out)  # padded query rows stay zero; they are never read
        return full.view(b, n, h, d)

    return attention_flash


def _make_sage() -> AttentionFn:
    from sageattention import sageattn  # type: ignore[import-not-found]

    def attention_sage(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        if q.device.type != "cuda" or (key_mask is not None and not bool(key_mask.all())):
            # SageAttention has no key mask and no CPU kernel; padded batches use SDPA
            return attention_sdpa(q, k, v, key_mask)
        return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)

    return attention_sage


def available(backend: Backend) -> bool:
    if backend in (Backend.MATH, Backend.SDPA, Backend.AUTO):
        return True
    if backend is Backend.FLASH_ATTN:
        return _flash_module() is not None and torch.cuda.is_available()
    if backend is Backend.SAGE:
        return importlib.util.find_spec("sageattention") is not None and torch.cuda.is_available()
    return False


def resolve(backend: "str | Backend") -> Backend:
    """`auto` -> the fastest backend available here; an explicit unavailable choice raises."""
    b = Backend.parse(backend)
    if b is Backend.AUTO:
        for candidate in (Backend.FLASH_ATTN, Backend.SAGE):
            if available(candidate):
                return candidate
        return Backend.SDPA
    if not available(b):
        where = "no CUDA device" if not torch.cuda.is_available() else "the package is not installed"
        raise ValueError(f"attention backend {b.value!r} is not available ({where}); install: {_INSTALL_HINT[b]}; "
                         f"or choose 'auto' or 'sdpa'")
    return b


def get_attention(backend: "str | Backend" = "auto") -> AttentionFn:
    b = resolve(backend)
    if b is Backend.MATH:
        return attention_math
    if b is Backend.SDPA:
        return attention_sdpa
    if b is Backend.FLASH_ATTN:
        return _make_flash()
    return _make_sage()
