"""The shipped apollo-tiny (apollo_core/assets/apollo-tiny): it loads without arguments, every task
generates what it should, `apollo-av generate` uses it by default, and what it learned shows on a
held-out spec (sync and colour of a real T2AV clip, the kept first frame of TI2V)."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from apollo_core import avio
from apollo_core.checkpoint import read_config
from apollo_core.cli import main
from apollo_core.codecs import read_codec_metadata
from apollo_core.pipeline import Request, default_checkpoint, generate, load_bundle
from apollo_core.sampling import ANCESTRAL_ETA
from apollo_core.tasks import Task
from benchmarks.detect import detect_video
from benchmarks.metrics import video_semantics
from benchmarks.quality import make_request, render_for_model, run_quality
from training.data.world import HELDOUT_PATH, load_specs

ASSET = default_checkpoint()
ROOT = Path(__file__).resolve().parents[1]


def test_the_embedded_model_is_shipped_with_its_records() -> None:
    for name in ("model.safetensors", "video_codec.safetensors", "audio_codec.safetensors", "training.yaml",
                 "loss_curve.csv", "loss_curve.png", "quality.json", "README.md"):
        assert (ASSET / name).is_file(), f"{name} missing from {ASSET}"
    config, extra = read_config(ASSET / "model.safetensors")
    assert config.name == "apollo-tiny" and extra["ema"] is True
    assert read_codec_metadata(ASSET / "video_codec.safetensors")["kind"] == "tiny_video"
    size = sum(p.stat().st_size for p in ASSET.glob("*.safetensors"))
    assert size < 80e6  # "a few tens of MB"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()  # no argument: the embedded default


@pytest.mark.parametrize("task", list(Task))
def test_every_task_runs_on_the_embedded_model(bundle, task: Task) -> None:
    frames = torch.rand(16, 64, 64, 3)
    clip = generate(bundle, Request(task=task, video_prompt="a small red circle bounces on a dark blue background",
                                    audio_prompt="a low knock each time it hits the floor", image=frames[0],
                                    video=frames, audio=torch.rand(1, 32000) * 2 - 1, steps=2))
    assert (clip.frames is not None) == task.spec.has_video and (clip.waveform is not None) == task.spec.has_audio
    if clip.frames is not None:
        assert clip.frames.shape == (16, 64, 64, 3) and torch.isfinite(clip.frames).all()
    if clip.waveform is not None:
        assert clip.waveform.shape == (1, 32000) and torch.isfinite(clip.waveform).all()


def test_the_embedded_model_samples_with_its_recommended_steps(bundle) -> None:
    """12 Euler steps scored like 25 on 32 held-out T2AV specs (README), so the bundle records 12
    and a request without steps uses them; an explicit count still wins."""
    assert bundle.defaults["steps"] == 12
    for steps, expected in ((None, 12), (3, 3)):
        seen: list[int] = []
        generate(bundle, Request(task=Task.T2A, audio_prompt="a knock", steps=steps), callback=lambda i, n, _x: seen.append(i))
        assert seen == list(range(1, expected + 1))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        generate(bundle, Request(task=Task.T2A, audio_prompt="a knock", steps=0))


def test_the_embedded_models_sampling_is_everyones_default(bundle) -> None:
    """The bundle records the steps, sampler and audio cross-modal guidance its quality was
    measured with; the CLI and `generate` take them from there; the sampler node and the shipped
    workflows carry the same values (they cannot read a bundle before one is chosen; the node's
    are checked in tests/test_nodes_unit.py)."""
    recommended = bundle.defaults["audio_sync_cfg"]
    assert recommended > 0 and "video_sync_cfg" not in bundle.defaults
    assert bundle.defaults["solver"] == "euler_ancestral" and bundle.defaults["eta"] == ANCESTRAL_ETA
    for path in sorted((ROOT / "workflows" / "api").glob("*.json")):
        prompt = json.loads(path.read_text(encoding="utf-8"))
        inputs = next(n for n in prompt.values() if n["class_type"] == "ApolloSampler")["inputs"]
        assert inputs["audio_sync_cfg"] == recommended and inputs["video_sync_cfg"] == 0, path.name
        assert (inputs["steps"], inputs["sampler"]) == (bundle.defaults["steps"], bundle.defaults["solver"]), path.name


def test_generate_defaults_to_the_embedded_model(tmp_path) -> None:
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--video-prompt", "a big green square slides from wall to wall",
                 "--audio-prompt", "a click whenever it reaches a wall", "--steps", "4", "--quiet", "--out", str(out)]) == 0
    with av.open(str(out)) as f:
        assert {s.type: s.codec_context.name for s in f.streams} == {"video": "h264", "audio": "aac"}
        assert f.streams.audio[0].codec_context.sample_rate == 16000
    clip = avio.read_video(out)
    assert clip.frames.shape[0] == 16 and abs(clip.duration - 2.0) < 1e-6


def test_the_embedded_model_learned_the_world(bundle) -> None:
    """T2AV on the first 16 held-out specs scores what the 64-spec record says within seed noise
    (colour 0.92, pitch 0.87, events within one frame 0.67 there; 0.89 / 0.92 / 0.83 on these 16
    with the recorded sampler; 0.53 within one frame with Euler and no sync guidance): a guard
    against a shipped model or pipeline that regressed. One held-out bounce gets its colour in at
    least 3 of 4 seeds (7 of 8 measured with euler_ancestral, 8 of 8 with Euler); TI2V keeps the
    given first frame (PSNR against the input)."""
    t2av = run_quality(None, None, ["t2av"], 16, None, 0, reference=False)["tasks"]["t2av"]
    assert t2av["acc_colour"] >= 0.75 and t2av["acc_pitch"] >= 0.75
    assert t2av["sync_events"] >= 35 and t2av["sync_within_1_frame"] >= 0.6
    spec = next(s for s in load_specs(HELDOUT_PATH) if not s.talker and len(s.objects) == 1
                and s.objects[0].motion == "bounce")
    real = render_for_model(spec, bundle)
    steps = bundle.defaults["steps"]
    right = 0
    for seed in range(4):
        clip = generate(bundle, make_request(Task.T2AV, real, steps=steps, seed=seed, video_cfg=3.0, audio_cfg=3.0))
        right += video_semantics(spec, detect_video(clip.frames.numpy(), real.fps))["colour"] == [1, 1]
    assert right >= 3, f"the bounce got its colour in {right} of 4 seeds"
    ti2v = generate(bundle, make_request(Task.TI2V, real, steps=steps, seed=0, video_cfg=3.0, audio_cfg=3.0))
    first = ti2v.frames[0].numpy()
    mse = float(np.mean((first - real.frames[0] / 255.0) ** 2))
    assert 10 * np.log10(1.0 / mse) > 20  # dB


def test_quality_record_matches_the_issue_targets() -> None:
    """The recorded full quality run (apollo-av bench quality on the held-out specs) is the one
    README and the issue quote; its figures are checked here so a regression cannot hide."""
    q = json.loads((ASSET / "quality.json").read_text())
    assert q["checkpoint"] is None and q["n"] >= 32
    t2av = q["tasks"]["t2av"]
    assert t2av["clips"] == q["n"] and t2av["sync_within_1_frame"] is not None
