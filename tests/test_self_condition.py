"""Self-conditioning: the model reads its previous clean estimate through zero-initialised
projections, in training (a no-grad first pass on half the batches) and at sampling (the
previous step's guided estimate)."""
import torch
from torch import nn

from apollo_core.checkpoint import save_model
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import Conditioning, assemble, training_loss
from apollo_core.pipeline import denoise
from apollo_core.tasks import Task
from tiny_inputs import debug_case as _case
from tiny_inputs import randomised as _randomised
from training.trainer import init_weights

CFG = get_preset("debug").replace(prediction="x1")  # x1: the clean estimate is the raw output
SC = CFG.replace(self_condition=True)


class Recorder(nn.Module):
    """The model, plus the self-conditioning estimate each call read (None when absent)."""

    def __init__(self, model: ApolloDiT) -> None:
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, inputs):
        self.seen.append({k: getattr(inputs, k).self_cond for k in ("video", "audio") if getattr(inputs, k) is not None})
        out = self.model(inputs)
        self.seen[-1]["out"] = out
        return out


def test_zero_initialised_projection_changes_nothing_until_trained() -> None:
    plain = _randomised(ApolloDiT(CFG, attention="math"))
    sc = ApolloDiT(SC, attention="math").eval()
    state = sc.state_dict()
    assert sorted(k for k in state if k not in plain.state_dict()) == ["audio_self_embed.weight", "video_self_embed.weight"]
    assert all(float(state[k].abs().max()) == 0 for k in ("audio_self_embed.weight", "video_self_embed.weight"))
    sc.load_state_dict(plain.state_dict() | {k: state[k] for k in state if "_self_embed." in k})
    cond, video, audio = _case()
    t = torch.tensor([0.3, 0.7])
    est = {"video": torch.randn_like(video), "audio": torch.randn_like(audio)}
    with torch.no_grad():
        ref = plain(assemble(CFG, Task.T2AV, video=video, audio=audio, t=t, cond=cond))
        fresh = sc(assemble(SC, Task.T2AV, video=video, audio=audio, t=t, cond=cond, estimate=est))
        for k in ref:
            assert torch.allclose(ref[k], fresh[k], atol=1e-6)
        sc.video_self_embed.weight.normal_(0, 0.1)
        sc.audio_self_embed.weight.normal_(0, 0.1)
        none = sc(assemble(SC, Task.T2AV, video=video, audio=audio, t=t, cond=cond))
        used = sc(assemble(SC, Task.T2AV, video=video, audio=audio, t=t, cond=cond, estimate=est))
    for k in ref:
        assert torch.allclose(ref[k], none[k], atol=1e-6), k  # no estimate reads as zeros
        assert not torch.allclose(ref[k], used[k], atol=1e-3), k
    # a model without self-conditioning ignores an estimate; a given stream never gets one
    assert assemble(CFG, Task.T2AV, video=video, audio=audio, t=t, cond=cond, estimate=est).video.self_cond is None
    v2a = assemble(SC, Task.V2A, video=video, audio=audio, t=t, cond=cond, estimate=est)
    assert v2a.video.self_cond is None and v2a.audio.self_cond is est["audio"]
    try:
        assemble(SC, Task.T2AV, video=video, audio=audio, t=t, cond=cond, estimate={"audio": audio[:, :, :-2]})
    except ValueError as exc:
        assert "self-conditioning estimate has shape" in str(exc)
    else:
        raise AssertionError("a wrong-shaped estimate was accepted")


def test_training_feeds_its_own_no_grad_estimate_to_half_the_batches() -> None:
    model = Recorder(_randomised(ApolloDiT(SC, attention="math")))
    cond, video, audio = _case()
    used = 0
    for seed in range(16):
        model.seen.clear()
        model.model.zero_grad()
        t = torch.full((2,), 0.4)
        loss = training_loss(model, Task.TI2AV, video=video, audio=audio, cond=cond, t=t,
                             generator=torch.Generator().manual_seed(seed))
        loss["total"].backward()
        grad = model.model.video_self_embed.weight.grad
        if len(model.seen) == 1:
            assert model.seen[0]["video"] is None and model.seen[0]["audio"] is None
            assert grad is None or float(grad.abs().max()) == 0
            continue
        used += 1
        first, second = model.seen
        assert first["video"] is None and second["out"]["video"].requires_grad
        assert not first["out"]["video"].requires_grad  # the first pass is outside autograd
        # what the second pass read is the first pass's clean estimate x1 (x1 prediction: its raw output)
        assert torch.allclose(second["audio"], first["out"]["audio"], atol=1e-6)
        assert torch.allclose(second["video"][:, :, 1:], first["out"]["video"][:, :, 1:], atol=1e-6)
        assert torch.equal(second["video"][:, :, 0], video[:, :, 0])  # the given first frame as it is
        assert float(grad.abs().max()) > 0
    assert 4 <= used <= 12


def test_sampling_reads_the_previous_steps_guided_estimate() -> None:
    model = Recorder(_randomised(ApolloDiT(SC, attention="math")))
    cond, video, audio = _case(1)
    uncond = Conditioning(*(torch.zeros_like(getattr(cond, f)) if f.endswith("tokens") else getattr(cond, f)
                            for f in ("video_tokens", "video_mask", "audio_tokens", "audio_mask", "speech", "speech_mask")))
    init = {"video": torch.randn_like(video), "audio": torch.randn_like(audio)}
    steps = []

    def callback(i, n, estimate):
        steps.append({k: v.clone() for k, v in estimate.items()})

    denoise(model, Task.T2AV, cond, uncond, init, steps=3, video_cfg=3.0, audio_cfg=2.0, shift=1.0, solver="euler",
            audio_sync_cfg=1.5, callback=callback)
    # per step: the guided pass (cond + uncond as one batch), then the audio alone (sync guidance)
    assert len(model.seen) == 6
    assert model.seen[0]["video"] is None and model.seen[1]["audio"] is None
    for i in (1, 2):
        joint, alone = model.seen[2 * i], model.seen[2 * i + 1]
        for k in ("video", "audio"):
            assert torch.allclose(joint[k][:1], steps[i - 1][k], atol=1e-5), (i, k)  # the guided estimate ...
            assert torch.equal(joint[k][:1], joint[k][1:])  # ... for cond and uncond alike
        assert torch.allclose(alone["audio"], steps[i - 1]["audio"], atol=1e-5)


def test_init_from_adds_self_conditioning_to_a_trained_model(tmp_path) -> None:
    plain = _randomised(ApolloDiT(CFG, attention="math"))
    path = tmp_path / "model.safetensors"
    save_model(path, plain)
    sc = ApolloDiT(SC, attention="math")
    init_weights(sc, str(path))
    state = sc.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(state[k], v), k
    assert float(state["video_self_embed.weight"].abs().max()) == 0
    audio_only = ApolloDiT(SC.replace(self_condition_streams=["audio"]), attention="math")
    init_weights(audio_only, str(path))
    assert float(audio_only.state_dict()["audio_self_embed.weight"].abs().max()) == 0
    # the other way round (a file with the projections into a model without them) stays an error
    save_model(tmp_path / "sc.safetensors", sc)
    try:
        init_weights(ApolloDiT(CFG, attention="math"), str(tmp_path / "sc.safetensors"))
    except ValueError as exc:
        assert "differs from the run's model" in str(exc)
    else:
        raise AssertionError("a self-conditioned file loaded into a plain model")


def test_audio_only_self_conditioning_leaves_the_video_path_alone() -> None:
    audio_only = CFG.replace(self_condition=True, self_condition_streams=["audio"])
    assert audio_only.self_condition_streams == ("audio",) and audio_only.self_conditioned == ("audio",)
    assert CFG.replace(self_condition_streams=["audio"]).self_conditioned == ()  # off unless switched on
    model = ApolloDiT(audio_only, attention="math")
    assert model.self_condition_keys() == ["audio_self_embed.weight"]
    assert not hasattr(model, "video_self_embed")
    cond, video, audio = _case()
    t = torch.full((2,), 0.4)
    est = {"video": torch.randn_like(video), "audio": torch.randn_like(audio)}
    inputs = assemble(audio_only, Task.T2AV, video=video, audio=audio, t=t, cond=cond, estimate=est)
    assert inputs.video.self_cond is None and inputs.audio.self_cond is est["audio"]
    # a task that generates no self-conditioned stream never makes the extra pass nor draws for it
    rec = Recorder(_randomised(ApolloDiT(audio_only, attention="math")))
    for seed in range(6):
        rec.seen.clear()
        training_loss(rec, Task.T2V, video=video, audio=audio, cond=cond, t=t, generator=torch.Generator().manual_seed(seed))
        assert len(rec.seen) == 1
    # the bundle's config round-trips the choice; a bad one is a clear error
    assert type(audio_only).from_json(audio_only.to_json()) == audio_only
    for bad in ([], ["audio", "audio"], ["speech"]):
        try:
            CFG.replace(self_condition=True, self_condition_streams=bad)
        except ValueError as exc:
            assert "self_condition_streams" in str(exc)
        else:
            raise AssertionError(f"self_condition_streams={bad} was accepted")
