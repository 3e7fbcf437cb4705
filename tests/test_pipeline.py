
import dataclasses

import av
import pytest
import torch

from apollo_core import avio
from apollo_core.cli import main
from apollo_core.config import get_preset
from apollo_core.pipeline import Request, denoise, generate, geometry, load_bundle
from apollo_core.tasks import Task
from bundles import make_debug_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_debug_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir, attention="sdpa")


def test_geometry_and_nearest_valid_sizes():
    cfg = get_preset("apollo-tiny")
    g = geometry(cfg, 2.0, 64, 64)
    assert g.frames == 16 and g.samples == 32000
    assert g.video_latent == (8, 8, 8, 8) and g.audio_latent == (16, 128)
    with pytest.raises(ValueError, match="nearest valid: 64 or 80"):
        geometry(cfg, 2.0, 70, 64)
    with pytest.raises(ValueError, match="nearest valid: 2 or 2.25"):
        geometry(cfg, 2.1, 64, 64)


@pytest.mark.parametrize("task", list(Task))
def test_every_task_generates_the_right_streams(bundle, task):
    img = torch.rand(32, 32, 3)
    vid = torch.rand(16, 32, 32, 3)
    aud = torch.rand(1, 16000) * 2 - 1
    clip = generate(bundle, Request(task=task, video_prompt="a red ball bounces", audio_prompt="three knocks",
                                    image=img, video=vid, audio=aud, steps=2))
    assert (clip.frames is not None) == task.spec.has_video
    assert (clip.waveform is not None) == task.spec.has_audio
    if clip.frames is not None:
        assert clip.frames.shape == (16, 32, 32, 3) and 0 <= clip.frames.min() and clip.frames.max() <= 1
    if clip.waveform is not None:
        assert clip.waveform.shape == (1, 16000)
    if task is Task.V2A:
        assert torch.equal(clip.frames, vid)
    if task is Task.A2V:
        assert torch.equal(clip.waveform, aud)


def test_same_seed_same_clip_and_missing_inputs(bundle):
    r = Request(task=Task.T2AV, video_prompt="a blue square slides", steps=2, seed=7)
    a, b = generate(bundle, r), generate(bundle, r)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveform, b.waveform)
    with pytest.raises(ValueError, match="reference image"):
        generate(bundle, Request(task=Task.TI2V, steps=1))


def test_batched_guidance_equals_separate_passes(bundle):
    cfg = bundle.config
    enc = lambda v, a, s: _encode(bundle, v, a, s)
    cond, uncond = enc("a red circle", "knocks", "ba"), enc("", "", "")
    g = torch.Generator().manual_seed(0)
    init = {"video": torch.randn(1, 4, 8, 8, 8, generator=g), "audio": torch.randn(1, 4, 64, generator=g)}
    kw = dict(steps=2, shift=1.0, solver="euler")
    guided = denoise(bundle.model, Task.T2AV, cond, uncond, init, video_cfg=4.0, audio_cfg=2.0, **kw)
    c = denoise(bundle.model, Task.T2AV, cond, None, init, video_cfg=1.0, audio_cfg=1.0, steps=1, shift=1.0, solver="euler")
    u = denoise(bundle.model, Task.T2AV, uncond, None, init, video_cfg=1.0, audio_cfg=1.0, steps=1, shift=1.0, solver="euler")
    one = denoise(bundle.model, Task.T2AV, cond, uncond, init, video_cfg=4.0, audio_cfg=2.0, steps=1, shift=1.0, solver="euler")
    for k, s in (("video", 4.0), ("audio", 2.0)):
        expect = u[k] + s * (c[k] - u[k])  # one Euler step is linear in the velocity
        assert torch.allclose(one[k], expect, atol=1e-5)
    assert guided["video"].shape == init["video"].shape and cfg.name == "debug"


def test_sync_guidance_adds_the_joint_minus_alone_velocity(bundle):
    cond, uncond = _encode(bundle, "a red circle", "knocks", ""), _encode(bundle, "", "", "")
    g = torch.Generator().manual_seed(2)
    init = {"video": torch.randn(1, 4, 8, 8, 8, generator=g), "audio": torch.randn(1, 4, 64, generator=g)}
    one = dict(steps=1, shift=1.0, solver="euler")  # one Euler step from t=0 is linear in the velocity
    plain = denoise(bundle.model, Task.T2AV, cond, uncond, init, video_cfg=3.0, audio_cfg=3.0, **one)
    joint = denoise(bundle.model, Task.T2AV, cond, None, init, video_cfg=1.0, audio_cfg=1.0, **one)
    alone_a = denoise(bundle.model, Task.T2A, cond, None, {"audio": init["audio"]}, video_cfg=1.0, audio_cfg=1.0, **one)
    alone_v = denoise(bundle.model, Task.T2V, cond, None, {"video": init["video"]}, video_cfg=1.0, audio_cfg=1.0, **one)
    synced = denoise(bundle.model, Task.T2AV, cond, uncond, init, video_cfg=3.0, audio_cfg=3.0,
                     audio_sync_cfg=2.0, video_sync_cfg=0.5, **one)
    for k, s, alone in (("audio", 2.0, alone_a), ("video", 0.5, alone_v)):
        assert torch.allclose(synced[k], plain[k] + s * (joint[k] - alone[k]), atol=1e-5), k
    assert not torch.allclose(synced["audio"], plain["audio"], atol=1e-3)
    # a task without the other stream has nothing to sync to: the scale changes nothing
    t2a = denoise(bundle.model, Task.T2A, cond, uncond, {"audio": init["audio"]}, video_cfg=3.0, audio_cfg=3.0, **one)
    t2a_sync = denoise(bundle.model, Task.T2A, cond, uncond, {"audio": init["audio"]}, video_cfg=3.0, audio_cfg=3.0,
                       audio_sync_cfg=2.0, **one)
    assert torch.equal(t2a["audio"], t2a_sync["audio"])
    # V2A: the audio's guidance contrasts the given video with no video (T2A)
    v2a = {"video": init["video"], "audio": init["audio"]}
    plain = denoise(bundle.model, Task.V2A, cond, uncond, v2a, video_cfg=1.0, audio_cfg=3.0, **one)
    joint = denoise(bundle.model, Task.V2A, cond, None, v2a, video_cfg=1.0, audio_cfg=1.0, **one)
    synced = denoise(bundle.model, Task.V2A, cond, uncond, v2a, video_cfg=1.0, audio_cfg=3.0, audio_sync_cfg=1.5, **one)
    assert torch.allclose(synced["audio"], plain["audio"] + 1.5 * (joint["audio"] - alone_a["audio"]), atol=1e-5)
    assert torch.equal(synced["video"], init["video"])


def test_sync_guidance_defaults_come_from_the_checkpoint(bundle):
    r = Request(task=Task.T2AV, video_prompt="a blue square", audio_prompt="beeps", steps=2, seed=3)
    base = generate(bundle, r)
    recommended = dataclasses.replace(bundle, defaults={**bundle.defaults, "audio_sync_cfg": 2.0})
    a = generate(recommended, r)
    b = generate(bundle, dataclasses.replace(r, audio_sync_cfg=2.0))
    assert torch.equal(a.waveform, b.waveform) and not torch.equal(a.waveform, base.waveform)
    off = generate(recommended, dataclasses.replace(r, audio_sync_cfg=0.0))  # an explicit 0 turns it off
    assert torch.equal(off.waveform, base.waveform)
    with pytest.raises(ValueError, match="audio_sync_cfg must be a finite number"):
        generate(bundle, dataclasses.replace(r, audio_sync_cfg=float("nan")))


def test_sampler_defaults_come_from_the_checkpoint(bundle):
    r = Request(task=Task.T2AV, video_prompt="a blue square", audio_prompt="beeps", steps=2, seed=3)
    euler = generate(bundle, r)  # no recommendation in the bundle: Euler
    assert torch.equal(euler.frames, generate(bundle, dataclasses.replace(r, solver="euler")).frames)
    recommended = dataclasses.replace(bundle, defaults={**bundle.defaults, "solver": "euler_ancestral", "eta": 0.25})
    a = generate(recommended, r)
    b = generate(bundle, dataclasses.replace(r, solver="euler_ancestral", eta=0.25))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveform, b.waveform)
    assert not torch.equal(a.frames, euler.frames)
    # a request's own choice wins over the recommendation, each field on its own
    assert torch.equal(generate(recommended, dataclasses.replace(r, solver="euler")).frames, euler.frames)
    other_eta = generate(recommended, dataclasses.replace(r, eta=0.75))
    assert torch.equal(other_eta.frames, generate(bundle, dataclasses.replace(r, solver="euler_ancestral", eta=0.75)).frames)
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        generate(bundle, dataclasses.replace(r, solver="rk4"))


def test_task_without_a_stream():
    assert [Task.T2AV.without("video"), Task.T2AV.without("audio")] == [Task.T2A, Task.T2V]
    assert [Task.TI2AV.without("audio"), Task.V2A.without("video"), Task.A2V.without("audio")] == [Task.TI2V, Task.T2A, Task.T2V]
    with pytest.raises(ValueError, match="t2v without video leaves no stream"):
        Task.T2V.without("video")
    with pytest.raises(ValueError, match="'video' or 'audio'"):
        Task.T2AV.without("text")


def test_given_first_frame_is_kept_in_latent_space(bundle):
    cond, uncond = _encode(bundle, "x", "y", ""), _encode(bundle, "", "", "")
    g = torch.Generator().manual_seed(1)
    init = {"video": torch.randn(1, 4, 8, 8, 8, generator=g)}
    out = denoise(bundle.model, Task.TI2V, cond, uncond, init, steps=3, video_cfg=3.0, audio_cfg=1.0, shift=1.0, solver="heun")
    assert torch.equal(out["video"][:, :, 0], init["video"][:, :, 0])
    assert not torch.allclose(out["video"][:, :, 1:], init["video"][:, :, 1:])


def test_ancestral_sampler_repeats_per_seed_and_keeps_given_content(bundle):
    r = Request(task=Task.T2AV, video_prompt="a blue square slides", steps=3, seed=7, solver="euler_ancestral", eta=1.0)
    a, b = generate(bundle, r), generate(bundle, r)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.waveform, b.waveform)
    euler = generate(bundle, dataclasses.replace(r, solver="euler"))
    assert not torch.allclose(a.frames, euler.frames)
    cond, uncond = _encode(bundle, "x", "y", ""), _encode(bundle, "", "", "")
    init = {"video": torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(1))}
    out = denoise(bundle.model, Task.TI2V, cond, uncond, init, steps=3, video_cfg=3.0, audio_cfg=1.0, shift=1.0,
                  solver="euler_ancestral", eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out["video"][:, :, 0], init["video"][:, :, 0])
    assert not torch.allclose(out["video"][:, :, 1:], init["video"][:, :, 1:])


def test_video_noise_follows_the_models_frame_correlation(bundle, monkeypatch):
    """A model trained on frame-correlated video noise starts from it and re-noises with it."""
    import apollo_core.pipeline as pipeline
    plain = bundle.model.config
    monkeypatch.setattr(bundle.model, "config", plain.replace(video_noise_corr=0.95))
    seen, corrs = [], []
    hook = bundle.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].video.latent[:1].clone()))
    real_sample = pipeline.sample
    monkeypatch.setattr(pipeline, "sample", lambda *a, **k: corrs.append(k["noise_corr"]) or real_sample(*a, **k))
    try:
        generate(bundle, Request(task=Task.T2V, video_prompt="a red ball", steps=2, seed=3, solver="euler_ancestral"))
    finally:
        hook.remove()
    x = seen[0]  # [1, C, T, H, W] the initial noise: the first call is at t = 0
    frames = x.transpose(0, 2).reshape(x.shape[2], -1)
    assert torch.diagonal(torch.corrcoef(frames), 1).mean().item() > 0.85
    assert corrs == [{"video": 0.95}]


def _encode(bundle, v, a, s):
    from apollo_core.pipeline import encode_prompts

    return encode_prompts(bundle.text_encoder, bundle.config, [v], [a], [s])


def test_cli_generate_writes_playable_mp4_and_wav(bundle_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--checkpoint", str(bundle_dir), "--video-prompt", "a red ball", "--audio-prompt",
                 "knocks", "--steps", "2", "--quiet", "--out", str(out)]) == 0
    with av.open(str(out)) as f:
        kinds = {s.type: s.codec_context.name for s in f.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        assert f.streams.video[0].codec_context.width == 256  # upscaled for viewing
    clip = avio.read_video(out)
    assert clip.frames.shape[0] == 16 and abs(clip.duration - 2.0) < 1e-6
    wav = tmp_path / "a.wav"
    assert main(["generate", "--checkpoint", str(bundle_dir), "--task", "t2a", "--steps", "1", "--quiet", "--out", str(wav)]) == 0
    wave, sr = avio.read_audio(wav)
    assert sr == 8000 and wave.shape[-1] == 16000


def test_cli_errors_are_clear(bundle_dir, tmp_path, capsys):
    cases = [
        (["--task", "ti2v"], "needs a reference image"),
        (["--task", "nope"], "unknown task"),
        (["--width", "30"], "nearest valid: 24 or 32"),
        (["--task", "ti2v", "--image", str(tmp_path / "missing.png")], "missing.png"),
        (["--task", "t2a"], "give a .wav path"),
    ]
    for extra, msg in cases:
        rc = main(["generate", "--checkpoint", str(bundle_dir), "--steps", "1", "--quiet", "--out", str(tmp_path / "o.mp4")] + extra)
        assert rc == 2
        assert msg in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "no model file" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
