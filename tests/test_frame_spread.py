"""Frame spread: a clip's frames at their own flow times (earlier ones cleaner), in training and sampling."""
import pytest
import torch

from apollo_core import flow, sampling
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import assemble, training_loss
from apollo_core.pipeline import Request, generate, load_bundle
from apollo_core.tasks import Task
from bundles import make_debug_bundle
from tiny_inputs import DEBUG, debug_case, randomised


def test_spread_times_order_frames_and_keep_the_ends_flat():
    t = torch.tensor([0.0, 0.3, 0.5, 1.0])
    out = flow.spread_times(t, 3.0, 8)  # [4, 8]
    assert torch.equal(out[0], torch.zeros(8)) and torch.equal(out[3], torch.ones(8))
    assert bool((out[1:3, 1:] < out[1:3, :-1]).all())  # earlier frames cleaner
    logits = torch.logit(out[2])
    assert torch.allclose(logits + logits.flip(0), torch.zeros(8), atol=1e-5)  # centred on t = 0.5
    assert torch.allclose(logits[0] - logits[-1], torch.tensor(3.0 * 7 / 8), atol=1e-5)
    rows = flow.spread_times(t, torch.tensor([0.0, 3.0, 0.0, 3.0]), 8)
    assert torch.equal(rows[2], torch.full((8,), 0.5))  # no spread: exactly t


def _gaussian_frames(mu: float, s: float, spread: float):
    """Exact per-element velocity for x1 ~ N(mu, s^2), each frame (axis 2) at its spread time."""

    def v(state, t):
        x = state["x"]
        tk = flow.expand_time(flow.spread_times(torch.tensor([t], dtype=torch.float64), spread, x.shape[2]), x)
        tk = tk.to(x.dtype)
        var = tk * tk * s * s + (1 - tk) ** 2
        cov = tk * s * s - (1 - tk)
        return {"x": mu + cov / var * (x - tk * mu)}

    return v


@pytest.mark.parametrize("solver, eta", [("euler", 0.0), ("euler_ancestral", 0.5)])
def test_spread_sampler_reaches_the_target_in_every_frame(solver, eta):
    mu, s, spread = 2.0, 0.5, 3.0
    x0 = torch.randn(40_000, 1, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    out = sampling.sample(_gaussian_frames(mu, s, spread), {"x": x0}, steps=200, solver=solver, eta=eta,
                          generator=torch.Generator().manual_seed(1), spread=spread,
                          callback=lambda i, n, est: seen.append(i))["x"]
    assert seen == list(range(1, 201))
    for k in range(6):
        assert abs(out[:, 0, k].mean().item() - mu) < 0.03, k
        assert abs(out[:, 0, k].std().item() - s) < 0.03, k
    # The same field without its spread ends elsewhere: the sampler really moves frames on their own times.
    flat = sampling.sample(_gaussian_frames(mu, s, spread), {"x": x0}, steps=200, solver="euler")["x"]
    assert abs(flat[:, 0, 0].std().item() - s) > 0.05


def test_spread_sampler_rejects_bad_settings():
    x0 = torch.zeros(2, 1, 4)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="spread"):
            sampling.sample(_gaussian_frames(0.0, 1.0, 1.0), {"x": x0}, steps=2, spread=bad)
    with pytest.raises(ValueError, match="euler or euler_ancestral"):
        sampling.sample(_gaussian_frames(0.0, 1.0, 1.0), {"x": x0}, steps=2, solver="heun", spread=1.0)


def test_streams_carry_per_frame_times_and_keep_given_content_clean():
    config = DEBUG
    cond, video, audio = debug_case(2)
    t = torch.tensor([0.4, 0.4])
    spread = torch.tensor([0.0, 2.0])
    inputs = assemble(config, Task.T2AV, video=video, audio=audio, t=t, cond=cond, spread=spread)
    vt, at = inputs.video.timesteps, inputs.audio.timesteps  # [B, N]
    assert torch.equal(vt[0], torch.full_like(vt[0], 0.4)) and torch.equal(at[0], torch.full_like(at[0], 0.4))
    assert vt[1, 0] > 0.4 > vt[1, -1] and at[1, 0] > 0.4 > at[1, -1]
    # The same moment of the clip gets nearly the same time in both streams.
    assert abs(float(vt[1, 0]) - float(at[1, 0])) < 0.1
    ti2v = assemble(config, Task.TI2V, video=video, audio=None, t=t, cond=cond, spread=spread)
    per_frame = ti2v.video.timesteps.view(2, video.shape[2], -1)  # [B, T, H*W]
    assert torch.equal(per_frame[:, 0], torch.ones_like(per_frame[:, 0]))
    v2a = assemble(config, Task.V2A, video=video, audio=audio, t=t, cond=cond, spread=spread)
    assert torch.equal(v2a.video.timesteps, torch.ones_like(v2a.video.timesteps))


def test_training_loss_with_spread_off_is_unchanged_and_on_differs():
    model = randomised(ApolloDiT(DEBUG, attention="math"))
    cond, video, audio = debug_case(4)

    def loss(spread):
        return training_loss(model, Task.T2AV, video=video, audio=audio, cond=cond,
                             generator=torch.Generator().manual_seed(3), frame_spread=spread)["total"]

    with torch.no_grad():
        plain = training_loss(model, Task.T2AV, video=video, audio=audio, cond=cond,
                              generator=torch.Generator().manual_seed(3))["total"]
        assert torch.equal(loss(0.0), plain)
        assert torch.equal(loss(3.0), loss(3.0))
        assert not torch.equal(loss(3.0), plain)


def test_generate_reads_the_checkpoints_spread(tmp_path):
    bundle = load_bundle(make_debug_bundle(tmp_path), attention="math")
    request = Request(task=Task.T2AV, video_prompt="a red ball", audio_prompt="knocks", steps=3, seed=1)
    flat = generate(bundle, request)
    spread = generate(bundle, Request(**{**request.__dict__, "spread": 3.0}))
    assert torch.isfinite(spread.frames).all() and torch.isfinite(spread.waveform).all()
    assert not torch.equal(flat.frames, spread.frames)
    bundle.defaults["spread"] = 3.0
    assert torch.equal(generate(bundle, request).frames, spread.frames)
    assert torch.equal(generate(bundle, Request(**{**request.__dict__, "spread": 0.0})).frames, flat.frames)
    with pytest.raises(ValueError, match="spread"):
        generate(bundle, Request(**{**request.__dict__, "spread": -1.0}))
