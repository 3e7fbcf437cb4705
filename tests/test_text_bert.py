import torch

from apollo_core.text import MiniLMEncoder

TEXTS = ["a small red circle bounces on a dark blue background", "", "three knocks, then a beep!",
         "word " * 60]


def test_light_bert_equals_transformers_reference():
    light = MiniLMEncoder()
    ref = MiniLMEncoder(backend="transformers")
    for max_tokens in (32, 8):
        a, b = light.encode(TEXTS, max_tokens), ref.encode(TEXTS, max_tokens)
        assert torch.equal(a.mask, b.mask)
        assert a.tokens.shape == b.tokens.shape
        assert torch.allclose(a.tokens, b.tokens, atol=1e-4), (a.tokens - b.tokens).abs().max()


def test_light_bert_embeddings_are_trainable_inputs():
    emb = MiniLMEncoder().encode(["a beep"], 16)
    w = torch.ones(384, requires_grad=True)
    (emb.tokens * w).sum().backward()
    assert w.grad is not None and not emb.tokens.is_inference()
