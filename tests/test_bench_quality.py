"""The quality benchmark's detectors and metrics, validated on the synthetic world's ground truth:
real renders score (near) perfect, audio shifted by k frames scores the shift, shuffled pairs
score badly, FD grows with perturbation; plus one end-to-end run of every task on a tiny model."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from apollo_core.checkpoint import save_model
from apollo_core.codecs import TinyAudioVAE, TinyVideoVAE, save_codec
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from benchmarks.cli import add_quality_parser, main as bench_main, write_json_atomic
from benchmarks.detect import detect_onsets, detect_video, to_rgb255
from benchmarks.features import audio_features, frechet_distance, video_features
from benchmarks.metrics import Tally, audio_semantics, clip_sync, identity, motion_pairs, scene_kind, video_semantics
from benchmarks.quality import CASCADE, CODEC, REFERENCE, TASKS, format_table, run_quality
from training.data.world import HELDOUT_PATH, load_specs, render, sample_spec

HELD = load_specs(HELDOUT_PATH)
SPECS = HELD[:12] + HELD[48:52]  # unseen seeds (4 talkers) and four held-out attribute combos


@pytest.fixture(scope="module")
def real():
    """(sample, video detection, onsets) for each rendered real clip."""
    out = []
    for spec in SPECS:
        s = render(spec)
        out.append((s, detect_video(s.frames, s.fps), detect_onsets(s.audio, s.sample_rate)))
    return out


def _delay(audio: np.ndarray, n: int) -> np.ndarray:
    """Audio moved n samples later (n < 0: earlier), padded with silence."""
    out = np.zeros_like(audio)
    if n >= 0:
        out[n:] = audio[: len(audio) - n]
    else:
        out[:n] = audio[-n:]
    return out


def _sync(pairs) -> tuple[dict, list[float]]:
    tally, lags = Tally(), []
    for video, onsets, audio, sr in pairs:
        s = clip_sync(video, onsets, audio, sr)
        tally.add_sync(s)
        lags.append(s["lag"])
    return tally.summary(), lags


def test_specs_cover_talkers_and_every_motion() -> None:
    assert sum(s.talker is not None for s in SPECS) >= 3
    assert {o.motion for s in SPECS for o in s.objects} == {"bounce", "slide", "pulse", "blink"}


def test_detectors_recover_the_ground_truth(real) -> None:
    for s, video, onsets in real:
        spec, fps = s.spec, s.fps
        truth = sorted(spec.talker.times if spec.talker else [t for o in spec.objects for t in o.times])
        assert len(onsets) == len(truth), spec.seed
        for o, t in zip(onsets, truth):
            assert abs(o.time - t) < 0.005, (spec.seed, o.time, t)  # near sample-accurate
        if spec.talker is not None:
            assert video.talker and not video.objects
            assert video.mouth_onsets == [round(t * fps) for t in spec.talker.times]
            assert np.abs(video.mouth - s.mouth).max() < 0.05
            assert all(o.voice == spec.talker.voice for o in onsets)
            continue
        assert not video.talker and len(video.objects) == len(spec.objects)
        for obj in spec.objects:
            track = video.find(obj.color)
            assert track is not None, (spec.seed, obj.color)
            assert (track.shape, track.motion) == (obj.shape, obj.motion), (spec.seed, track.fill)
            assert track.events == [round(t * fps) for t in obj.times], spec.seed
            mine = [o for o in onsets if min(abs(o.time - t) for t in obj.times) < 0.005]
            assert len(mine) == len(obj.times)
            assert all(o.color == obj.color and o.sound == obj.motion for o in mine), spec.seed


def _blur_frames(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Frames `[T, H, W, 3]` uint8 -> float 0..1 blurred spatially by a Gaussian of `sigma` px
    (the kind of softening a latent codec gives)."""
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = torch.from_numpy(frames.astype(np.float32) / 255.0).permute(0, 3, 1, 2).reshape(-1, 1, *frames.shape[1:3])
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    kt = torch.from_numpy(k.astype(np.float32))
    x = torch.nn.functional.conv2d(x, kt.view(1, 1, -1, 1))
    x = torch.nn.functional.conv2d(x, kt.view(1, 1, 1, -1))  # [T*3, 1, H, W]
    return x.reshape(frames.shape[0], 3, *frames.shape[1:3]).permute(0, 2, 3, 1).numpy()


def test_shapes_are_read_through_blur(real) -> None:
    """Blurred squares fill far less than their bounding box (a rule on the fill alone read them as
    circles); the blurred-template fit still names every object's shape."""
    seen = set()
    for s, _, _ in real:
        if s.spec.talker is not None:
            continue
        video = detect_video(_blur_frames(s.frames, 1.5), s.fps)
        for obj in s.spec.objects:
            track = video.find(obj.color)
            assert track is not None and track.shape == obj.shape, (s.spec.seed, obj.shape, track and track.shape)
            seen.add((obj.shape, obj.size))
            if obj.shape == "square":
                assert track.fill < 0.89, (s.spec.seed, track.fill)
    assert {shape for shape, _ in seen} == {"circle", "square", "triangle"}
    assert {size for _, size in seen} == {"small", "large"}


def test_real_clips_score_perfect(real) -> None:
    tally = Tally()
    for s, video, onsets in real:
        tally.add_semantics(video_semantics(s.spec, video))
        tally.add_semantics(audio_semantics(s.spec, onsets))
        tally.add_sync(clip_sync(video, onsets, s.audio, s.sample_rate), scene_kind(s.spec))
        tally.add_motions(motion_pairs(s.spec, video))
    r = tally.summary()
    kinds = r["sync_by_kind"]
    assert {scene_kind(s.spec) for s, _, _ in real} == set(kinds) and "talker" in kinds and "slide" in kinds
    assert all(k["within_1_frame"] == 1.0 for k in kinds.values())
    assert sum(k["events"] for k in kinds.values()) == r["sync_events"]
    assert r["sync_one_object_within_1_frame"] == 1.0 and r["sync_within_1_frame"] == 1.0
    confusion = r["motion_confusion"]
    assert confusion and all(k.split("->")[0] == k.split("->")[1] for k in confusion), confusion
    assert sum(confusion.values()) == sum(len(s.spec.objects) for s, _, _ in real if s.spec.talker is None)
    for key in ("acc_talker", "acc_colour", "acc_shape", "acc_motion", "acc_count", "acc_pitch", "acc_sound",
                "acc_audio_count", "sync_in_frame", "sync_onsets_in_frame", "sync_lag0_share"):
        assert r[key] == 1.0, key
    assert r["extra_objects"] == 0.0
    assert r["sync_offset_ms"] < 3.0
    assert r["sync_offset_frames"] == {"0": r["sync_events"]} and r["sync_onsets_per_event"] == 1.0
    assert r["sync_conf"] > 0.85 and r["talker_conf"] > 0.9


@pytest.mark.parametrize("frames_shift", [1, 2, -1])
def test_audio_shifted_by_k_frames_scores_the_shift(real, frames_shift: int) -> None:
    pairs = []
    for s, video, _ in real:
        audio = _delay(s.audio, round(frames_shift * s.sample_rate / s.fps))
        pairs.append((video, detect_onsets(audio, s.sample_rate), audio, s.sample_rate))
    r, lags = _sync(pairs)
    assert np.mean(np.array(lags) == frames_shift) >= 0.9, lags
    assert r["sync_in_frame"] <= 0.25
    if abs(frames_shift) == 1:  # events are >= 2 frames apart, so the nearest onset is the shifted one
        assert abs(r["sync_offset_ms"] - 125.0) < 3.0
        assert r["sync_in_frame"] == 0.0
        # every event one frame off; where two events are two frames apart the earlier one's shifted
        # onset is as near, so a few read as the opposite frame
        hist = r["sync_offset_frames"]
        assert set(hist) <= {"1", "-1"} and hist[str(frames_shift)] > 0.8 * r["sync_events"], hist


def test_sub_frame_shift_is_measured_in_milliseconds(real) -> None:
    pairs = []
    for s, video, _ in real:
        audio = _delay(s.audio, round(0.030 * s.sample_rate))
        pairs.append((video, detect_onsets(audio, s.sample_rate), audio, s.sample_rate))
    r, _ = _sync(pairs)
    assert abs(r["sync_offset_ms"] - 30.0) < 3.0
    assert r["sync_in_frame"] == 1.0  # 30 ms is inside the event's 125 ms frame


def test_shuffled_pairs_score_badly(real) -> None:
    n = len(real)
    truth, _ = _sync([(v, o, s.audio, s.sample_rate) for s, v, o in real])
    shuffled = [(real[i][1], real[(i + 5) % n][2], real[(i + 5) % n][0].audio, real[i][0].sample_rate) for i in range(n)]
    r, lags = _sync(shuffled)
    assert r["sync_in_frame"] < 0.4 and r["sync_onsets_in_frame"] < 0.4
    assert r["sync_offset_ms"] > 100.0
    assert r["sync_conf"] < truth["sync_conf"] - 0.3
    assert np.mean(np.array(lags) == 0) < 0.5


def test_wrong_attributes_are_caught() -> None:
    spec = next(s for s in HELD if len(s.objects) == 1 and s.objects[0].motion == "bounce" and len(s.objects[0].times) >= 2)
    obj = spec.objects[0]
    other_colour = next(c for c in ("red", "green", "white") if c != obj.color)
    other_shape = next(c for c in ("circle", "square", "triangle") if c != obj.shape)
    variants = {
        "colour": dataclasses.replace(obj, color=other_colour),
        "shape": dataclasses.replace(obj, shape=other_shape),
        "motion": dataclasses.replace(obj, motion="blink"),
        "count": dataclasses.replace(obj, times=obj.times[:1]),
    }
    for attribute, changed in variants.items():
        s = render(dataclasses.replace(spec, objects=(changed,)))
        score = video_semantics(spec, detect_video(s.frames, s.fps))
        audio = audio_semantics(spec, detect_onsets(s.audio, s.sample_rate))
        assert score[attribute] == [0, 1], attribute
        assert motion_pairs(spec, detect_video(s.frames, s.fps)) == [(obj.motion, changed.motion)]
        assert all(score[k] == [1, 1] for k in ("colour", "shape", "motion", "count") if k != attribute), (attribute, score)
        expect_audio = {"colour": "pitch", "motion": "sound", "count": "audio_count"}.get(attribute)
        if expect_audio:
            assert audio[expect_audio][0] < audio[expect_audio][1], (attribute, audio)
        else:
            assert all(c == t for c, t in audio.values()), audio  # shape makes no sound


def test_identity_of_first_frame_and_later_colour(real) -> None:
    s = next(s for s, v, _ in real if v.objects and all(o.visible[0] for o in v.objects))
    same = identity(s.frames, s.frames[0])
    assert same["psnr"] == 100.0 and same["background"] == 1.0 and same["first_colour"] == 1.0
    assert same["later_colour"] > 0.95
    used = {o.color for o in s.spec.objects}
    fresh = iter(c for c in ("red", "yellow", "green", "blue", "purple", "white") if c not in used)
    other = render(dataclasses.replace(s.spec, objects=tuple(dataclasses.replace(o, color=next(fresh)) for o in s.spec.objects)))
    drift = np.concatenate([s.frames[:1], other.frames[1:]])  # the first frame is kept, then colours drift
    d = identity(drift, s.frames[0])
    assert d["psnr"] == 100.0 and d["first_colour"] == 1.0 and d["later_colour"] < 0.05
    noisy = np.clip(s.frames / 255.0 + np.random.default_rng(0).normal(0, 0.1, s.frames.shape), 0, 1)
    assert identity(noisy, s.frames[0])["psnr"] < 25.0


def test_frechet_distance_matches_closed_forms() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (50, 1)), rng.normal(2, 3, (60, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    assert frechet_distance(a, b) == pytest.approx((a.mean() - b.mean()) ** 2 + (sa - sb) ** 2, rel=1e-9)
    x = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.arange(5.0)
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    y = rng.normal(size=(30, 5))
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)
    assert np.isfinite(frechet_distance(x[:1], y[:1]))  # one clip: covariance zero
    with pytest.raises(ValueError, match="equal D"):
        frechet_distance(x, y[:, :3])


def test_fd_grows_with_perturbation(real) -> None:
    samples = [s for s, _, _ in real][:12]
    others = [render(spec) for spec in HELD[20:32]]
    rng = np.random.default_rng(0)
    v_real = np.stack([video_features(s.frames) for s in samples])
    v_other = np.stack([video_features(s.frames) for s in others])
    floor = frechet_distance(v_real, v_other)  # real vs real of other specs: the sampling floor
    assert frechet_distance(v_real, v_real) == pytest.approx(0.0, abs=1e-6)
    cast = [frechet_distance(v_real, np.stack([video_features(np.clip(s.frames / 255 + [c, 0, 0], 0, 1)) for s in samples]))
            for c in (0.1, 0.2, 0.3)]
    assert 0 < cast[0] < cast[1] < cast[2]
    noisy = np.stack([video_features(np.clip(s.frames / 255 + rng.normal(0, 0.05, s.frames.shape), 0, 1)) for s in samples])
    assert frechet_distance(v_real, noisy) > 3 * floor
    few = 8  # audio features cost more (onset detection): fewer clips
    a_real = np.stack([audio_features(s.audio, s.sample_rate, onsets=o) for s, _, o in real[:few]])
    a_other = np.stack([audio_features(s.audio, s.sample_rate) for s in others[:few]])
    a_floor = frechet_distance(a_real, a_other)
    hiss = [frechet_distance(a_real, np.stack([audio_features(s.audio + q * rng.standard_normal(len(s.audio)), s.sample_rate)
                                               for s in samples[:few]])) for q in (0.003, 0.03)]
    assert a_floor < hiss[0] < hiss[1]


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        to_rgb255(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="uint8 0..255 or float"):
        to_rgb255(np.zeros((1, 4, 4, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="sample_rate"):
        detect_onsets(np.zeros(100), 0)
    with pytest.raises(ValueError, match="fps"):
        detect_video(np.zeros((1, 16, 16, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="unknown task"):
        run_quality(None, None, ["t2x"], 1, 1, 0)
    with pytest.raises(ValueError, match="n and steps"):
        run_quality(None, None, ["t2av"], 0, 1, 0)


def test_noise_is_not_an_object() -> None:
    rng = np.random.default_rng(0)
    assert detect_video(rng.random((8, 32, 32, 3)), 8.0).objects == []
    assert detect_onsets(0.05 * rng.standard_normal(16000), 16000) == []


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    config = get_preset("debug")
    torch.manual_seed(0)
    save_model(folder / "model.safetensors", ApolloDiT(config),
               extra={"text_encoder": "minilm", "defaults": {"seconds": 2.0, "width": 32, "height": 32}})
    save_codec(folder / "video_codec.safetensors",
               TinyVideoVAE(latent_channels=4, temporal_compression=2, spatial_compression=4, fps=8.0))
    save_codec(folder / "audio_codec.safetensors", TinyAudioVAE(latent_channels=4, sample_rate=8000, hop=250))
    return folder


def test_cli_parser_and_missing_checkpoint(tmp_path, monkeypatch) -> None:
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    args = add_quality_parser(sub).parse_args(["--checkpoint", "x", "--tasks", "t2av", "v2a", "--n", "2", "--json", "o.json"])
    assert (args.tasks, args.n, args.steps, args.json) == (["t2av", "v2a"], 2, None, "o.json")
    assert (args.solver, args.eta, args.shift) == (None, None, 1.0)  # None: the checkpoint's recommendation
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bench_main(["quality", "--checkpoint", str(tmp_path / "missing"), "--n", "1", "--quiet"]) == 2


def test_run_quality_end_to_end_on_a_tiny_model(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = sample_spec(0, seconds=1.0, talker_prob=0.0)  # seeds below 1,000,000 are evaluation seeds
    results = run_quality(str(tiny_checkpoint), [spec], [*TASKS, CASCADE], 1, 2, 0)
    assert set(results["tasks"]) == {REFERENCE, CODEC, *TASKS, CASCADE}
    assert results["tasks"][CODEC]["clips"] == 1 and results["tasks"][CODEC]["fd_video"] >= 0
    assert results["geometry"] == {"size": 32, "fps": 8.0, "sample_rate": 8000}
    assert results["solver"] == "euler" and "eta" not in results  # the record names the sampler that ran
    ref = results["tasks"][REFERENCE]
    assert ref["acc_shape"] == 1.0 and ref["acc_pitch"] == 1.0 and ref["sync_in_frame"] == 1.0
    for name in (*TASKS, CASCADE):
        figures = results["tasks"][name]
        assert figures["clips"] == 1
        confusion = figures.pop("motion_confusion", {})
        assert sum(confusion.values()) == (len(spec.objects) if "acc_motion" in figures else 0), (name, confusion)
        offsets = figures.pop("sync_offset_frames", {})
        assert sum(offsets.values()) == figures.get("sync_events", 0), (name, offsets)
        kinds = figures.pop("sync_by_kind", {})
        assert sum(k["events"] for k in kinds.values()) == figures.get("sync_events", 0), (name, kinds)
        assert set(kinds) <= {scene_kind(spec)}
        assert all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in figures.values())
    for name in ("t2av", "ti2av", "ti2v", "t2v", "a2v", CASCADE):
        assert results["tasks"][name]["fd_video"] >= 0 and results["tasks"][name]["acc_colour"] is not None
    for name in ("t2av", "ti2av", "t2a", "v2a", CASCADE):
        assert results["tasks"][name]["fd_audio"] >= 0 and results["tasks"][name]["acc_pitch"] is not None
    for name in ("t2av", "ti2av", "v2a", "a2v", CASCADE):
        assert results["tasks"][name]["sync_conf"] is not None
    assert results["tasks"][CASCADE].get("id_psnr") is None  # no reference image in the cascade
    for name in ("ti2av", "ti2v"):
        assert math.isfinite(results["tasks"][name]["id_psnr"])
    table = format_table(results)
    assert all(name in table for name in TASKS)
    out = write_json_atomic(tmp_path / "q.json", results)
    assert json.loads(out.read_text())["tasks"].keys() == results["tasks"].keys()


def test_sync_by_kind_pools_one_object_clips_apart() -> None:
    tally = Tally()
    sync = {"onset_offsets": [], "confidence": 0.5, "lag": 0.0, "fps": 8.0}
    tally.add_sync({**sync, "offsets": [0.0, 0.3], "talker": False}, "slide")  # 0.3 s: more than a frame off
    tally.add_sync({**sync, "offsets": [0.1], "talker": False}, "pulse")
    tally.add_sync({**sync, "offsets": [0.3, float("inf")], "talker": False}, "bounce+pulse")
    tally.add_sync({**sync, "offsets": [0.0], "talker": True}, "talker")
    tally.add_sync({**sync, "offsets": [0.0], "talker": False})  # no kind: pooled, not per kind
    r = tally.summary()
    assert r["sync_by_kind"] == {"bounce+pulse": {"events": 2, "within_1_frame": 0.0},
                                 "pulse": {"events": 1, "within_1_frame": 1.0},
                                 "slide": {"events": 2, "within_1_frame": 0.5},
                                 "talker": {"events": 1, "within_1_frame": 1.0}}
    assert r["sync_one_object_within_1_frame"] == pytest.approx(2 / 3)
    assert r["sync_within_1_frame"] == pytest.approx(4 / 7) and r["sync_events"] == 7
