"""Pooled captions in the adaLN vector (`pooled_text`): off by default, a no-op until trained,
per sample even where tokens carry different timesteps, blind to padding, and addable to a
trained model with init_from."""
import dataclasses

import torch

from apollo_core.checkpoint import save_model
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import Conditioning, assemble
from apollo_core.tasks import Task
from tiny_inputs import debug_case
from tiny_inputs import randomised as _randomised
from training.trainer import init_weights

CFG = get_preset("debug")
POOLED = CFG.replace(pooled_text=True)
POOL_KEYS = sorted(f"{m}_text_pool.{fc}.{p}"
                   for m in ("video", "audio") for fc in ("fc1", "fc2") for p in ("weight", "bias"))


def _case(b: int = 2):
    cond, video, audio = debug_case(b)
    video_mask = cond.video_mask.clone()
    video_mask[0, 3:] = False  # the first caption is two tokens shorter (padded)
    return dataclasses.replace(cond, video_mask=video_mask), video, audio


def _run(model: ApolloDiT, task: Task, cond: Conditioning, video, audio, t) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(assemble(model.config, task, video=video, audio=audio, t=t, cond=cond))


def test_off_by_default_and_a_no_op_until_trained() -> None:
    assert get_preset("apollo-tiny").pooled_text is False
    plain = _randomised(ApolloDiT(CFG, attention="math"))
    pooled = ApolloDiT(POOLED, attention="math").eval()
    state = pooled.state_dict()
    assert sorted(k for k in state if k not in plain.state_dict()) == POOL_KEYS == sorted(pooled.pooled_text_keys())
    assert ApolloDiT(CFG, attention="math").pooled_text_keys() == []
    pooled.load_state_dict(plain.state_dict() | {k: state[k] for k in POOL_KEYS})
    cond, video, audio = _case()
    t = torch.tensor([0.3, 0.7])
    for task in (Task.T2AV, Task.TI2V, Task.V2A):  # TI2V: per-token timesteps (a given first frame)
        ref, fresh = _run(plain, task, cond, video, audio, t), _run(pooled, task, cond, video, audio, t)
        for k in ref:
            assert torch.allclose(ref[k], fresh[k], atol=1e-6), (task, k)
    with torch.no_grad():
        for k in POOL_KEYS:
            pooled.get_parameter(k).normal_(0, 0.1)
    trained = _run(pooled, Task.T2AV, cond, video, audio, t)
    ref = _run(plain, Task.T2AV, cond, video, audio, t)
    for k in ref:
        assert not torch.allclose(ref[k], trained[k], atol=1e-3), k


def test_each_sample_reads_its_own_caption_with_per_token_timesteps() -> None:
    """A batch gives each sample what it gets alone, also in TI2V, where the video's tokens carry
    two timesteps and the adaLN rows are built per (sample, timestep) pair."""
    model = _randomised(ApolloDiT(POOLED, attention="math"))
    cond, video, audio = _case()
    t = torch.tensor([0.3, 0.7])
    for task in (Task.TI2V, Task.T2AV):
        both = _run(model, task, cond, video, audio, t)
        for i in range(2):
            one = Conditioning(*(x[i:i + 1] for x in (cond.video_tokens, cond.video_mask, cond.audio_tokens,
                                                      cond.audio_mask, cond.speech, cond.speech_mask)))
            alone = _run(model, task, one, video[i:i + 1], audio[i:i + 1], t[i:i + 1])
            for k in alone:
                assert torch.allclose(both[k][i:i + 1], alone[k], atol=1e-5), (task, k, i)
    # the caption reaches the video through the pooled path too: swap the two samples' captions
    swapped = Conditioning(cond.video_tokens.flip(0), cond.video_mask.flip(0), cond.audio_tokens, cond.audio_mask,
                           cond.speech, cond.speech_mask)
    base = _run(model, Task.T2V, cond, video, None, t)["video"]
    other = _run(model, Task.T2V, swapped, video, None, t)["video"]
    assert not torch.allclose(base, other, atol=1e-3)


def test_padding_does_not_reach_the_pooled_vector() -> None:
    model = _randomised(ApolloDiT(POOLED, attention="math"))
    cond, video, audio = _case()
    t = torch.tensor([0.3, 0.7])
    tokens = cond.video_tokens.clone()
    tokens[0, 3:] = 100.0  # padded positions of the first caption
    noisy = Conditioning(tokens, cond.video_mask, cond.audio_tokens, cond.audio_mask, cond.speech, cond.speech_mask)
    a, b = _run(model, Task.T2V, cond, video, None, t), _run(model, Task.T2V, noisy, video, None, t)
    assert torch.allclose(a["video"], b["video"], atol=1e-5)
    with torch.no_grad():
        pooled = model.video_text_pool(model.video_text_norm(tokens), cond.video_mask)  # [B, D]
        direct = model.video_text_pool(model.video_text_norm(tokens[:1, :3]), cond.video_mask[:1, :3])
    assert torch.allclose(pooled[:1], direct, atol=1e-6)


def test_init_from_adds_pooled_captions_to_a_trained_model(tmp_path) -> None:
    plain = _randomised(ApolloDiT(CFG, attention="math"))
    save_model(tmp_path / "model.safetensors", plain)
    pooled = ApolloDiT(POOLED, attention="math")
    init_weights(pooled, str(tmp_path / "model.safetensors"))
    state = pooled.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(state[k], v), k
    assert float(state["video_text_pool.fc2.weight"].abs().max()) == 0
    assert float(state["audio_text_pool.fc2.weight"].abs().max()) == 0
    save_model(tmp_path / "pooled.safetensors", pooled)
    try:
        init_weights(ApolloDiT(CFG, attention="math"), str(tmp_path / "pooled.safetensors"))
    except ValueError as exc:
        assert "differs from the run's model" in str(exc)
    else:
        raise AssertionError("a file with pooled captions loaded into a model without them")
