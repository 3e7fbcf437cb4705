import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from apollo_core.checkpoint import CheckpointError, load_model, read_config, save_model
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import Conditioning, assemble
from apollo_core.tasks import Task

CFG = get_preset("debug")


@pytest.fixture()
def trained(tmp_path):
    torch.manual_seed(0)
    m = ApolloDiT(CFG, attention="sdpa")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    path = save_model(tmp_path / "m.safetensors", m, extra={"steps": 3})
    return m.eval(), path


def _inputs():
    g = torch.Generator().manual_seed(3)
    d = CFG.text.caption_dim
    cond = Conditioning(torch.randn(1, 4, d, generator=g), torch.ones(1, 4, dtype=torch.bool), torch.randn(1, 4, d, generator=g),
                        torch.ones(1, 4, dtype=torch.bool), torch.randint(0, 256, (1, 5), generator=g), torch.ones(1, 5, dtype=torch.bool))
    return assemble(CFG, Task.T2AV, video=torch.randn(1, 4, 4, 8, 8, generator=g), audio=torch.randn(1, 4, 64, generator=g),
                    t=torch.tensor([0.5]), cond=cond)


def test_round_trip_is_exact_and_keeps_config(trained):
    model, path = trained
    config, extra = read_config(path)
    assert config == CFG and extra == {"steps": 3}
    loaded = load_model(path, attention="sdpa")
    inputs = _inputs()
    with torch.no_grad():
        a, b = model(inputs), loaded(inputs)
    # same weights bit for bit; outputs to float rounding (BLAS kernels may sum in an order that
    # depends on buffer alignment)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


@pytest.mark.parametrize("dtype, tol", [("bf16", 0.03), ("fp16", 0.01), ("fp8_e4m3fn", 0.12)])
def test_low_precision_weight_storage(trained, dtype, tol):
    model, path = trained
    loaded = load_model(path, attention="sdpa", weight_dtype=dtype)
    qkv = loaded.blocks[0].layers["video"].qkv.weight
    assert qkv.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}[dtype]
    inputs = _inputs()
    with torch.no_grad():
        a, b = model(inputs), loaded(inputs)
    for k in a:
        assert (a[k] - b[k]).norm() / a[k].norm() < tol


def test_bf16_file_is_half_the_size(trained, tmp_path):
    model, path = trained
    small = save_model(tmp_path / "half.safetensors", model, weight_dtype="bf16")
    assert small.stat().st_size < 0.6 * path.stat().st_size
    assert load_model(small).video_embed.weight.dtype == torch.bfloat16


def test_errors_name_the_tensor(trained, tmp_path):
    _, path = trained
    state = load_file(str(path))
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(header_len))["__metadata__"]
    missing = dict(state)
    missing.pop("blocks.1.layers.audio.mlp.fc2.weight")
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="blocks.1.layers.audio.mlp.fc2.weight"):
        load_model(tmp_path / "missing.safetensors")
    extra = dict(state) | {"surprise.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="surprise.weight"):
        load_model(tmp_path / "extra.safetensors")
    wrong = dict(state)
    wrong["video_embed.weight"] = torch.zeros(3, 3)
    save_file(wrong, str(tmp_path / "wrong.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"video_embed.weight.*\(3, 3\)"):
        load_model(tmp_path / "wrong.safetensors")


def test_not_a_checkpoint_and_wrong_preset(trained, tmp_path):
    _, path = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not an APOLLO-AV model"):
        load_model(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not 'apollo-tiny'"):
        load_model(path, expect_preset="apollo-tiny")
    with pytest.raises(ValueError, match="weight dtype"):
        load_model(path, weight_dtype="int3")


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    model, path = trained
    before = path.read_bytes()
    import apollo_core.files as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save_model(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
