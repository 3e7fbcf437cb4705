from types import SimpleNamespace

import pytest
import torch

from apollo_core.config import get_preset
from apollo_core.model.block import BlockContext
from apollo_core.model.dit import ApolloDiT
from apollo_core.model.layers import CastLinear
from apollo_core.objective import Conditioning, assemble
from apollo_core.streams import ApolloInputs
from apollo_core.tasks import Task

CFG = get_preset("debug")


def _model(config=CFG, seed=0, attention="math"):
    torch.manual_seed(seed)
    m = ApolloDiT(config, attention=attention)
    with torch.no_grad():  # leave adaLN-Zero's identity start: random weights exercise every path
        for p in m.parameters():
            p.normal_(0, 0.08)
    return m.eval()


def _cond(b=2, lv=5, la=4, s=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    d = CFG.text.caption_dim
    return Conditioning(torch.randn(b, lv, d, generator=g), torch.ones(b, lv, dtype=torch.bool),
                        torch.randn(b, la, d, generator=g), torch.ones(b, la, dtype=torch.bool),
                        torch.randint(0, 256, (b, s), generator=g), torch.ones(b, s, dtype=torch.bool))


def _latents(b=2, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, 4, 8, 8, generator=g), torch.randn(b, 4, 64, generator=g)


def _t2av_inputs(t0: float, t1: float):
    """T2AV streams for the default latents and prompts, the two clips at flow times t0, t1."""
    video, audio = _latents()
    return assemble(CFG, Task.T2AV, video=video, audio=audio, t=torch.tensor([t0, t1]), cond=_cond())


def _run_with_key_mask(model, inputs, keep):
    """The paper's formulation: every stream in the sequence, absent ones removed by a key mask."""
    x, ctx = model.prepare(inputs)
    b = inputs.batch
    parts = [torch.full((b, s.length), name in keep, dtype=torch.bool) for name, s in ctx.streams.items()]
    ctx = BlockContext(ctx.streams, torch.cat(parts, dim=1))
    for block in model.blocks:
        x = block(x, ctx)
    return model.finalize(x, ctx, inputs)


@pytest.mark.parametrize("task, keep, out", [
    (Task.T2V, ("video", "video_text"), "video"),
    (Task.TI2V, ("video", "video_text"), "video"),
    (Task.T2A, ("audio_text", "audio"), "audio"),
])
def test_dropping_absent_streams_equals_dense_masked_attention(task, keep, out):
    model = _model()
    video, audio = _latents()
    t = torch.tensor([0.3, 0.7])
    cond = _cond()
    dropped = assemble(CFG, task, video=video, audio=audio, t=t, cond=cond)
    assert set(dropped.active()) == set(keep)
    full = assemble(CFG, Task.TI2AV if task.spec.first_frame_given else Task.T2AV, video=video, audio=audio, t=t, cond=cond)
    with torch.no_grad():
        a = model(dropped)[out]
        b = _run_with_key_mask(model, full, keep)[out]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_dual_tower_couples_only_through_cross_attention():
    model = _model(CFG.replace(architecture="dual_tower"))
    video, audio = _latents()
    cond, t = _cond(), torch.tensor([0.5, 0.5])

    def video_out(a):
        with torch.no_grad():
            return model(assemble(CFG, Task.T2AV, video=video, audio=a, t=t, cond=cond))["video"]

    assert (video_out(audio) - video_out(audio * 2)).abs().max() > 1e-4
    with torch.no_grad():
        for block in model.blocks:
            block.video_from_audio.out.weight.zero_()
            block.video_from_audio.out.bias.zero_()
    assert torch.allclose(video_out(audio), video_out(audio * 2), atol=1e-6)


def test_forward_is_the_block_loop():
    model = _model()
    video, audio = _latents()
    inputs = _t2av_inputs(0.2, 0.9)
    with torch.no_grad():
        ref = model(inputs)
        x, ctx = model.prepare(inputs)
        for block in model.blocks:
            x = block(x, ctx)
        out = model.finalize(x, ctx, inputs)
    for k in ref:
        assert torch.equal(ref[k], out[k])
    assert ref["video"].shape == video.shape and ref["audio"].shape == audio.shape


def test_joint_attention_couples_audio_and_video():
    model = _model()
    video, audio = _latents()
    cond = _cond()
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        a = model(assemble(CFG, Task.T2AV, video=video, audio=audio, t=t, cond=cond))["video"]
        b = model(assemble(CFG, Task.T2AV, video=video, audio=audio * 2, t=t, cond=cond))["video"]
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("pooled_text", [False, True])
def test_per_token_timesteps_match_naive_per_token_embedding(monkeypatch, pooled_text):
    config = CFG.replace(pooled_text=pooled_text)
    model = _model(config)
    video, audio = _latents()
    inputs = assemble(config, Task.TI2AV, video=video, audio=audio, t=torch.tensor([0.25, 0.6]), cond=_cond())
    assert len(torch.unique(inputs.video.timesteps)) == 3  # given frame at 1, two noise levels
    with torch.no_grad():
        fast = model(inputs)

        def naive(timesteps, dt, vector=None):  # one embedding row per token, plus its sample's vector
            b, n = timesteps.shape
            temb = model.time_embed(timesteps.reshape(-1), dt).view(b, n, -1)  # [B, N, D]
            if vector is not None:
                temb = temb + vector[:, None]
            return temb.reshape(b * n, -1), torch.arange(b * n).view(b, n)

        monkeypatch.setattr(model, "_time", naive)
        slow = model(inputs)
    for k in fast:
        assert torch.allclose(fast[k], slow[k], atol=1e-5)


def test_padded_caption_tokens_are_ignored():
    model = _model()
    video, audio = _latents(b=1)
    t = torch.tensor([0.4])
    short = _cond(b=1, lv=3)
    padded = Conditioning.cat([short, _cond(b=1, lv=7, seed=9)]).index(torch.tensor([0]))
    assert padded.video_tokens.shape[1] == 7 and padded.video_mask.sum() == 3
    with torch.no_grad():
        a = model(assemble(CFG, Task.T2AV, video=video, audio=audio, t=t, cond=short))
        b = model(assemble(CFG, Task.T2AV, video=video, audio=audio, t=t, cond=padded))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5)


def test_operations_are_injected():
    calls = []

    class CountingLinear(CastLinear):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    model = ApolloDiT(CFG, attention="sdpa", operations=SimpleNamespace(Linear=CountingLinear))
    with torch.no_grad():
        model(_t2av_inputs(0.5, 0.5))
    assert len(calls) > 20
    assert all(type(m) is not torch.nn.Linear for m in model.modules())


def test_zero_init_model_predicts_zero():
    """adaLN-Zero and zero heads: a fresh model outputs exactly zero (a stable start)."""
    model = ApolloDiT(CFG, attention="sdpa")
    with torch.no_grad():
        out = model(_t2av_inputs(0.5, 0.5))
    assert all(torch.count_nonzero(v) == 0 for v in out.values())


def test_bf16_model_close_to_fp32():
    model = _model(attention="sdpa")
    inputs = _t2av_inputs(0.5, 0.8)
    with torch.no_grad():
        ref = model(inputs)
        model.to(torch.bfloat16).compute_dtype = torch.bfloat16
        low = model(inputs)
    for k in ref:
        rel = (low[k] - ref[k]).norm() / ref[k].norm()
        assert rel < 0.05, (k, rel)


def test_wrong_shapes_raise_clear_errors():
    model = _model()
    video, audio = _latents()
    with pytest.raises(ValueError, match="channels"):
        model(assemble(CFG, Task.T2V, video=video[:, :3], audio=None, t=torch.tensor([0.5, 0.5]), cond=_cond()))
    with pytest.raises(ValueError, match="multiple of the patch"):
        model(assemble(CFG, Task.T2V, video=video[..., :7], audio=None, t=torch.tensor([0.5, 0.5]), cond=_cond()))
    bad = _cond()
    bad = Conditioning(bad.video_tokens[..., :10], bad.video_mask, bad.audio_tokens, bad.audio_mask, bad.speech, bad.speech_mask)
    with pytest.raises(ValueError, match="384-d"):
        model(assemble(CFG, Task.T2V, video=video, audio=None, t=torch.tensor([0.5, 0.5]), cond=bad))
    with pytest.raises(ValueError, match="video or an audio"):
        model(ApolloInputs())


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    from apollo_core.compile import compile_blocks

    model = _model(attention="sdpa")
    inputs = _t2av_inputs(0.2, 0.9)
    with torch.no_grad():
        ref = model(inputs)
        compiled = compile_blocks(model)(inputs)
    for k in ref:
        assert torch.allclose(ref[k], compiled[k], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="blocks"):
        compile_blocks(torch.nn.Linear(2, 2))


def test_rope_on_stacked_q_and_k_equals_separate():
    """The block rotates q and k stacked `[B, N, 2, H, D]` in one call; same as one each."""
    from apollo_core.model.rope import apply_rope

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 7, 3, 8, generator=g).unbind(0)  # [B=2, N=7, H=3, D=8] each... as 2 tensors
    cos, sin = torch.randn(7, 1, 4, generator=g), torch.randn(7, 1, 4, generator=g)
    both = apply_rope(torch.stack([q, k], dim=2), cos.unsqueeze(-2), sin.unsqueeze(-2))
    assert torch.allclose(both[:, :, 0], apply_rope(q, cos, sin)) and torch.allclose(both[:, :, 1], apply_rope(k, cos, sin))
    x0, x1 = q[..., 0::2], q[..., 1::2]  # the rotation written out: pairs (x[2i], x[2i+1])
    ref = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    assert torch.allclose(apply_rope(q, cos, sin), ref, atol=1e-6)
