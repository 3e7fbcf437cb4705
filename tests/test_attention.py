import pytest
import torch

from apollo_core.model import attention as A


def _qkv(b=2, n=37, h=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, h, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("backend", [b for b in A.Backend if b not in (A.Backend.MATH,) and A.available(b)])
def test_available_backends_match_math(backend):
    q, k, v = _qkv()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[0, 30:] = False
    fn = A.get_attention(backend)
    for m in (None, mask):
        ref = A.attention_math(q, k, v, m)
        out = fn(q, k, v, m)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-5), (backend, (out - ref).abs().max())


def test_math_masks_keys():
    q, k, v = _qkv()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[:, 20:] = False
    full = A.attention_math(q, k, v, mask)
    cut = A.attention_math(q, k[:, :20], v[:, :20], None)
    assert torch.allclose(full, cut, atol=1e-6)


def test_auto_resolves_to_an_available_backend():
    assert A.available(A.resolve("auto"))
    if not torch.cuda.is_available():
        assert A.resolve("auto") is A.Backend.SDPA


@pytest.mark.parametrize("name", ["flash_attn", "sage"])
def test_explicit_unavailable_backend_fails_loudly(name):
    if A.available(A.Backend(name)):
        assert A.resolve(name) is A.Backend(name)
    else:
        with pytest.raises(ValueError, match="pip install"):
            A.get_attention(name)


def test_unknown_backend():
    with pytest.raises(ValueError, match="sdpa"):
        A.resolve("xformers2")


def test_bf16_sdpa_close_to_fp32_math():
    q, k, v = _qkv()
    out = A.attention_sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16(), None).float()
    assert torch.allclose(out, A.attention_math(q, k, v, None), atol=3e-2)
