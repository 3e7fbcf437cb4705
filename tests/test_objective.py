"""The training objective's options: audio onset, video object and motion weightings, and
frame-correlated video noise."""
import pytest
import torch

from apollo_core.config import get_preset
from apollo_core.flow import masked_mse
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import (Conditioning, envelope_error, foreground_weight, motion_weight, onset_envelope,
                                   onset_weight, training_loss)
from apollo_core.tasks import Task

CFG = get_preset("debug")


def test_onset_weight_boosts_the_frames_where_the_latent_jumps() -> None:
    audio = torch.zeros(2, 4, 20)
    audio[0, :, 7:] = 1.0  # clip 0: a step at frame 7
    audio[1, :, 15:] = -2.0  # clip 1: a larger step at frame 15
    w = onset_weight(audio, boost=3.0, share=0.05)  # 2 of the batch's 40 frames
    assert w.shape == (2, 1, 20)
    boosted = (w[:, 0] > 1).nonzero().tolist()
    assert boosted == [[0, 7], [1, 15]]
    assert torch.all(w[w > 1] == 4.0) and torch.all(w[w <= 1] == 1.0)
    # a weighted mean: an error only on the onset frame counts 4x what the plain mean gives it
    err = torch.zeros(2, 4, 20)
    err[0, :, 7] = 1.0
    plain = masked_mse(err, torch.zeros_like(err))
    weighted = masked_mse(err, torch.zeros_like(err), w)
    assert torch.allclose(plain[0], torch.tensor(1 / 20)) and torch.allclose(weighted[0], torch.tensor(4 / 23))


def test_envelope_error_scores_the_onsets_times_not_the_latents_values() -> None:
    audio = torch.zeros(2, 4, 20)
    audio[0, :, 7:] = 1.0  # an onset at frame 7
    audio[1, :, 12:] = -2.0  # one at frame 12
    env = onset_envelope(audio)
    assert env.shape == (2, 20) and env[0].nonzero().flatten().tolist() == [7]
    assert env[0, 7].item() == pytest.approx(2.0) and env[1, 12].item() == pytest.approx(4.0)
    assert torch.all(envelope_error(audio, audio) == 0)
    assert torch.all(envelope_error(audio + 0.5, audio) == 0)  # a level offset changes no onset
    moved = torch.zeros_like(audio)
    moved[0, :, 8:], moved[1, :, 13:] = 1.0, -2.0
    late = envelope_error(moved, audio)  # each onset one frame late
    flat = envelope_error(torch.zeros_like(audio), audio)  # no onset at all
    # envelopes 2 (frame 7) and 4 (frame 12) over 20 frames, relative to the batch's mean squared
    # envelope (4 + 16) / 40 = 0.5; an onset a frame late costs the miss and the false onset
    assert flat.tolist() == pytest.approx([4 / 20 / 0.5, 16 / 20 / 0.5])
    assert late.tolist() == pytest.approx([2 * f for f in flat.tolist()])


def test_envelope_loss_is_its_own_term_for_tasks_that_generate_audio() -> None:
    case = _tiny_case()
    base, env = _t2av_losses(*case), _t2av_losses(*case, envelope=0.5)
    assert "audio_envelope" not in base and env["audio_envelope"].item() > 0
    assert torch.equal(base["audio"], env["audio"]) and torch.equal(base["video"], env["video"])
    assert env["total"].item() == pytest.approx(base["total"].item() + env["audio_envelope"].item(), rel=1e-6)
    model, cond, video, audio = case
    t2v = training_loss(model, Task.T2V, video=video, audio=audio, cond=cond, envelope=0.5,
                        generator=torch.Generator().manual_seed(5))
    assert "audio_envelope" not in t2v


def test_foreground_weight_boosts_the_object_pixels_of_each_frame() -> None:
    video = torch.zeros(2, 3, 2, 4, 4)
    video[0] += torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1, 1)  # clip 0: a coloured background, no object
    video[0, :, 0, 1, 2] = 3.0  # an object in clip 0, frame 0
    video[1, :, 1, 3, 0] = -2.0  # another in clip 1, frame 1
    w = foreground_weight(video, boost=2.0, share=2 / 64)  # 2 of the batch's 64 latent pixels
    assert w.shape == (2, 1, 2, 4, 4)
    assert (w[:, 0] > 1).nonzero().tolist() == [[0, 0, 1, 2], [1, 1, 3, 0]]
    assert torch.all(w[w > 1] == 3.0) and torch.all(w[w <= 1] == 1.0)


def test_motion_weight_boosts_where_an_object_leaves_and_arrives() -> None:
    video = torch.zeros(2, 3, 3, 4, 4)
    video[0] += torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1, 1)  # clip 0: a coloured background
    video[0, :, :, 1, 1] = 3.0  # clip 0: an object that stays put in every frame
    video[1, :, 0, 2, 0] = 3.0  # clip 1: an object moving one latent pixel per frame
    video[1, :, 1, 2, 1] = 3.0
    video[1, :, 2, 2, 2] = 3.0
    w = motion_weight(video, boost=2.0, share=7 / 96)  # 7 of the batch's 96 latent pixels
    assert w.shape == (2, 1, 3, 4, 4)
    # each frame: the pixels whose latent changes from the previous frame or into the next one
    boosted = sorted(tuple(i) for i in (w[:, 0] > 1).nonzero().tolist())
    assert boosted == [(1, 0, 2, 0), (1, 0, 2, 1), (1, 1, 2, 0), (1, 1, 2, 1), (1, 1, 2, 2), (1, 2, 2, 1), (1, 2, 2, 2)]
    assert torch.all(w[w > 1] == 3.0) and torch.all(w[w <= 1] == 1.0)


def _tiny_case():
    torch.manual_seed(0)
    model = ApolloDiT(CFG, attention="math").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08)
    g = torch.Generator().manual_seed(1)
    d = CFG.text.caption_dim
    cond = Conditioning(torch.randn(2, 5, d, generator=g), torch.ones(2, 5, dtype=torch.bool),
                        torch.randn(2, 4, d, generator=g), torch.ones(2, 4, dtype=torch.bool),
                        torch.randint(0, 256, (2, 6), generator=g), torch.ones(2, 6, dtype=torch.bool))
    video = torch.randn(2, CFG.video.latent_channels, 3, 4, 4, generator=g)
    audio = torch.randn(2, CFG.audio.latent_channels, 8 * CFG.audio.patch, generator=g)
    return model, cond, video, audio


def _t2av_losses(model, cond, video, audio, **boost: float) -> dict:
    """T2AV losses of one fixed noise draw, so two calls differ only by the boosts."""
    with torch.no_grad():
        return training_loss(model, Task.T2AV, video=video, audio=audio, cond=cond,
                             generator=torch.Generator().manual_seed(5), **boost)


def test_onset_boost_changes_only_the_audio_term() -> None:
    case = _tiny_case()
    base = _t2av_losses(*case)
    zero, boosted = _t2av_losses(*case, onset_boost=0.0), _t2av_losses(*case, onset_boost=3.0)
    assert torch.equal(base["audio"], zero["audio"])  # no boost is the plain mean
    assert torch.equal(base["video"], boosted["video"])
    assert not torch.allclose(base["audio"], boosted["audio"])


@pytest.mark.parametrize("option", ["foreground_boost", "motion_boost"])
def test_video_boosts_change_only_the_video_term(option: str) -> None:
    case = _tiny_case()
    base = _t2av_losses(*case)
    zero, boosted = _t2av_losses(*case, **{option: 0.0}), _t2av_losses(*case, **{option: 2.0})
    assert torch.equal(base["video"], zero["video"])
    assert torch.equal(base["audio"], boosted["audio"])
    assert not torch.allclose(base["video"], boosted["video"])


def test_weight_cap_scales_each_sample_by_its_capped_time_weight() -> None:
    model, cond, video, audio = _tiny_case()
    t = torch.tensor([0.3, 0.9])  # time weights 1/(1-t)^2 = 2.04 and 100

    def video_loss(cap: float) -> float:
        with torch.no_grad():
            return training_loss(model, Task.T2V, video=video, audio=None, cond=cond, t=t, weight_cap=cap,
                                 generator=torch.Generator().manual_seed(5))["video"].item()

    plain, cap4, cap25 = video_loss(0.0), video_loss(4.0), video_loss(25.0)
    # the batch mean of per-sample losses a (t=0.3) and b (t=0.9): plain (a + b) / 2; cap 4 keeps a
    # and scales b by 4 * 0.1^2, cap 25 by 25 * 0.1^2. Two equations give a and b, the third must fit.
    b = (plain - cap4) * 2 / (1 - 0.04)
    a = 2 * plain - b
    assert a > 0 and b > 0
    assert cap25 == pytest.approx((a + 0.25 * b) / 2, rel=1e-4)
    assert video_loss(1e6) == pytest.approx(plain, rel=1e-5)  # a cap above every weight changes nothing


@pytest.mark.parametrize("corr", [0.0, 0.9])
def test_training_noise_follows_the_models_video_frame_correlation(corr: float) -> None:
    """At t = 0 the model reads the noise itself: its video frames carry the config's correlation,
    the audio's neighbouring latent frames none."""
    model = ApolloDiT(CFG.replace(video_noise_corr=corr), attention="math").eval()
    _, cond, video, audio = _tiny_case()
    n = 32
    cond = Conditioning.cat([cond] * (n // 2))
    video, audio = video.repeat(n // 2, 1, 1, 1, 1), audio.repeat(n // 2, 1, 1)
    seen = {}
    model.register_forward_pre_hook(lambda m, args: seen.update(video=args[0].video.latent, audio=args[0].audio.latent))
    with torch.no_grad():
        training_loss(model, Task.T2AV, video=video, audio=audio, cond=cond, t=torch.zeros(n),
                      generator=torch.Generator().manual_seed(3))

    def lag1(x: torch.Tensor) -> float:  # mean correlation of neighbouring frames (axis 2)
        frames = x.transpose(0, 2).reshape(x.shape[2], -1)
        return torch.diagonal(torch.corrcoef(frames), 1).mean().item()

    assert lag1(seen["video"]) == pytest.approx(corr, abs=0.06)
    assert lag1(seen["audio"]) == pytest.approx(0.0, abs=0.06)


def test_init_from_may_change_the_video_noise_correlation(tmp_path) -> None:
    """The noise is a training choice: a plain model fine-tunes onto frame-correlated noise, while
    a real shape difference still refuses to load."""
    from apollo_core.checkpoint import save_model
    from training.trainer import init_weights

    plain, _, _, _ = _tiny_case()
    save_model(tmp_path / "m.safetensors", plain)
    corr = ApolloDiT(CFG.replace(video_noise_corr=0.7), attention="math")
    init_weights(corr, str(tmp_path / "m.safetensors"))
    for k, v in plain.state_dict().items():
        assert torch.equal(corr.state_dict()[k], v), k
    with pytest.raises(ValueError, match="differs from the run's model"):
        init_weights(ApolloDiT(CFG.replace(depth=3), attention="math"), str(tmp_path / "m.safetensors"))
