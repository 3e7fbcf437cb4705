"""The synthetic AV world: determinism, spec I/O, and that frames/audio match the ground truth."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from training.data.world import (
    BACKGROUNDS,
    HELDOUT_COMBOS,
    HELDOUT_PATH,
    MOTIONS,
    PALETTE,
    PITCH_HZ,
    SHAPES,
    TRAIN_SEED_START,
    Event,
    ObjectSpec,
    Sample,
    SceneSpec,
    SpecError,
    build_heldout,
    load_specs,
    render,
    sample_spec,
    save_specs,
)
from training.data.world.constants import FLOOR_RGB, MOUTH_RGB
from training.data.world.motion import floor_top

SEEDS = range(TRAIN_SEED_START, TRAIN_SEED_START + 80)


def _specs(pred) -> list[SceneSpec]:
    return [s for s in (sample_spec(seed, talker_prob=0.25) for seed in SEEDS) if pred(s)]


def _single(motion: str) -> list[SceneSpec]:
    return _specs(lambda s: len(s.objects) == 1 and s.objects[0].motion == motion)


def _mask(frames: np.ndarray, color: str, tol: float = 60.0) -> np.ndarray:
    """[T, H, W] bool: pixels at least about half covered by the object's colour."""
    d = np.linalg.norm(frames.astype(np.float32) - np.asarray(PALETTE[color], np.float32), axis=-1)
    return d < tol


def _rms(audio: np.ndarray, a: int, b: int) -> float:
    a, b = max(a, 0), min(b, len(audio))
    return float(np.sqrt(np.mean(audio[a:b].astype(np.float64) ** 2))) if b > a else 0.0


def test_sample_shapes_and_types() -> None:
    sample = render(sample_spec(TRAIN_SEED_START))
    assert isinstance(sample, Sample)
    assert sample.frames.dtype == np.uint8 and sample.frames.shape == (16, 64, 64, 3)
    assert sample.audio.dtype == np.float32 and sample.audio.shape == (32000,)
    assert sample.fps == 8.0 and sample.sample_rate == 16000
    for seed in SEEDS:
        s = render(sample_spec(seed))
        assert np.abs(s.audio).max() <= 1.0
        assert s.events and all(isinstance(e, Event) for e in s.events)
        assert [e.time for e in s.events] == sorted(e.time for e in s.events)


def test_determinism() -> None:
    for seed in (TRAIN_SEED_START, TRAIN_SEED_START + 7, 3):
        a, b = render(sample_spec(seed)), render(sample_spec(seed))
        assert a.frames.tobytes() == b.frames.tobytes()
        assert a.audio.tobytes() == b.audio.tobytes()
        assert (a.video_caption, a.audio_caption, a.speech) == (b.video_caption, b.audio_caption, b.speech)
        assert a.events == b.events
    s1, s2 = sample_spec(TRAIN_SEED_START + 1), sample_spec(TRAIN_SEED_START + 2)
    assert s1 != s2
    r1, r2 = render(s1), render(s2)
    assert r1.frames.tobytes() != r2.frames.tobytes() and r1.audio.tobytes() != r2.audio.tobytes()
    # The noise of a scene comes from its seed: the same scene under another seed sounds different.
    noisy = dataclasses.replace(s1, ambience=0.01)
    assert render(noisy).audio.tobytes() != render(dataclasses.replace(noisy, seed=5)).audio.tobytes()


def _digest(seeds) -> str:
    h = hashlib.sha256()
    for seed in seeds:
        sample = render(sample_spec(seed, talker_prob=0.5))
        h.update(sample.frames.tobytes() + sample.audio.tobytes() + sample.video_caption.encode() + sample.audio_caption.encode())
    return h.hexdigest()


def test_determinism_across_processes() -> None:
    """No hidden state (caches, import order): a fresh interpreter renders the same bytes."""
    seeds = [TRAIN_SEED_START + i for i in range(6)] + [0, 1]
    code = (
        "import hashlib\nfrom training.data.world import render, sample_spec\n"
        f"h = hashlib.sha256()\nfor seed in {seeds!r}:\n"
        "    s = render(sample_spec(seed, talker_prob=0.5))\n"
        "    h.update(s.frames.tobytes() + s.audio.tobytes() + s.video_caption.encode() + s.audio_caption.encode())\n"
        "print(h.hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(seeds)


def test_json_round_trip(tmp_path) -> None:
    specs = [sample_spec(seed, talker_prob=0.5) for seed in SEEDS[:20]]
    assert any(s.talker for s in specs) and any(len(s.objects) == 2 for s in specs)
    for s in specs:
        assert SceneSpec.from_dict(s.to_dict()) == s
        assert SceneSpec.from_json(s.to_json()) == s
        assert json.loads(s.to_json()) == s.to_dict()
    path = tmp_path / "sub" / "specs.jsonl"
    save_specs(path, specs)
    assert load_specs(path) == specs
    assert [p.name for p in path.parent.iterdir()] == ["specs.jsonl"]  # no temp file left behind
    assert render(load_specs(path)[3]).audio.tobytes() == render(specs[3]).audio.tobytes()


def _edit(d: dict, path: str, value) -> dict:
    d = json.loads(json.dumps(d))
    node, keys = d, path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "field", "hint"),
    [
        ("objects.0.color", "pink", "objects[0].color", "'red'"),
        ("objects.0.shape", "star", "objects[0].shape", "'triangle'"),
        ("objects.0.motion", "spin", "objects[0].motion", "'blink'"),
        ("objects.0.size", "huge", "objects[0].size", "'large'"),
        ("objects.0.times", [0.5, 0.25], "objects[0].times", "increasing"),
        ("objects.0.times", [2.5], "objects[0].times", "inside the clip"),
        ("objects.0.times", [], "objects[0].times", "at least one"),
        ("objects.0.x", 1.5, "objects[0].x", "[0.0, 1.0]"),
        ("objects.0.direction", "up", "objects[0].direction", "'left'"),
        ("objects.0.colour", "red", "objects[0].colour", "allowed"),
        ("background", "pink", "background", "'black'"),
        ("fps", "8", "fps", "number"),
        ("fps", 7.3, "seconds", "whole number"),
        ("size", 64.0, "size", "integer"),
        ("ambience", 0.5, "ambience", "0.1"),
        ("objects", [], "objects", "1 to 2"),
        ("wibble", 1, "wibble", "allowed"),
        ("version", 9, "version", "supported"),
    ],
)
def test_invalid_specs_name_the_field(path: str, value, field: str, hint: str) -> None:
    base = _single("bounce")[0].to_dict()
    with pytest.raises(SpecError) as err:
        SceneSpec.from_dict(_edit(base, path, value))
    assert err.value.field == field
    assert field in str(err.value) and hint in str(err.value)


def test_invalid_talker_and_direct_construction() -> None:
    talker = _specs(lambda s: s.talker is not None)[0].to_dict()
    for path, value, field in [
        ("talker.syllables", ["bx"], "talker.syllables[0]"),
        ("talker.times", [0.5], "talker.times"),
        ("talker.voice", "robot", "talker.voice"),
        ("objects", [_single("bounce")[0].to_dict()["objects"][0]], "objects"),
    ]:
        with pytest.raises(SpecError) as err:
            SceneSpec.from_dict(_edit(talker, path, value))
        assert err.value.field == field, str(err.value)
    with pytest.raises(ValueError, match="'color'.*'purple'"):
        ObjectSpec(shape="circle", color="pink", size="small", motion="bounce", times=(0.5,))


def test_load_specs_names_the_line(tmp_path) -> None:
    good = sample_spec(TRAIN_SEED_START).to_json()
    bad = json.dumps(_edit(json.loads(good), "background", "mauve"))
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: .*background"):
        load_specs(path)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r":1: .*not valid JSON"):
        load_specs(path)


def test_event_onsets_in_audio() -> None:
    """Every object event's sound starts at its time: loud right after, quiet right before, and its
    spectral peak is the object's pitch."""
    checked = {m: 0 for m in MOTIONS}
    for spec in _specs(lambda s: len(s.objects) == 1):
        sample = render(spec)
        sr, audio = sample.sample_rate, sample.audio
        win = int(0.02 * sr)
        for e in sample.events:
            n0 = e.sample(sr)
            assert n0 == round(e.time * sr)
            before, after = _rms(audio, n0 - win, n0), _rms(audio, n0, n0 + win)
            ratio = 10.0 if e.kind in ("impact", "wall") else 4.0
            assert after > ratio * max(before, 1e-4), (spec.to_json(), e, before, after)
            seg = audio[n0 + int(0.005 * sr): n0 + int(0.045 * sr)].astype(np.float64)
            spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
            peak = np.fft.rfftfreq(8 * len(seg), 1.0 / sr)[np.argmax(spectrum)]
            assert abs(peak - e.pitch_hz) < 0.04 * e.pitch_hz, (e, peak)
            assert e.pitch_hz == PITCH_HZ[spec.objects[e.object].color]
            checked[spec.objects[e.object].motion] += 1
    assert all(n >= 3 for n in checked.values()), checked


def test_sound_starts_exactly_at_the_event_sample() -> None:
    quiet = [s for s in _single("blink") + _single("bounce") if s.ambience == 0.0]
    assert quiet
    for spec in quiet:
        sample = render(spec)
        first = sample.events[0].sample(sample.sample_rate)
        assert not np.any(sample.audio[:first])
        assert np.any(sample.audio[first: first + 4])


def test_bounce_touches_floor_exactly_at_impact_frames() -> None:
    specs = _specs(lambda s: any(o.motion == "bounce" for o in s.objects))
    assert len(specs) >= 5
    for spec in specs:
        sample = render(spec)
        floor = floor_top(spec.size)
        assert np.all(sample.frames[:, floor:] == np.asarray(FLOOR_RGB, np.uint8))
        for i, obj in enumerate(spec.objects):
            if obj.motion != "bounce":
                continue
            mask = _mask(sample.frames, obj.color)[:, :floor]
            lowest = np.array([np.flatnonzero(m.any(axis=1)).max() for m in mask])
            touching = set(np.flatnonzero(lowest == floor - 1).tolist())
            expected = {e.frame(spec.fps) for e in sample.events if e.object == i}
            assert touching == expected, (spec.to_json(), lowest)


def test_slide_reverses_at_wall_frames() -> None:
    specs = _single("slide")
    assert len(specs) >= 3
    for spec in specs:
        sample = render(spec)
        mask = _mask(sample.frames, spec.objects[0].color)
        xs = np.array([np.flatnonzero(m.any(axis=0)).mean() for m in mask])
        step = np.sign(np.diff(xs))
        reversals = {k for k in range(1, len(xs) - 1) if step[k - 1] != step[k]}
        assert reversals == {e.frame(spec.fps) for e in sample.events}, (spec.to_json(), xs)
        bg = np.asarray(BACKGROUNDS[spec.background], np.int16)
        for k, frame in enumerate(sample.frames[:, : floor_top(spec.size)]):
            # Footprint = every pixel the object tints (a triangle meets the wall with one corner).
            cols = np.flatnonzero((np.abs(frame.astype(np.int16) - bg).max(-1) > 8).any(0))
            at_wall = cols.min() == 0 or cols.max() == spec.size - 1
            assert at_wall == (k in reversals), (spec.to_json(), k, cols)


def test_blink_and_pulse_frames() -> None:
    for spec in _single("blink"):
        sample = render(spec)
        area = _mask(sample.frames, spec.objects[0].color).sum(axis=(1, 2))
        appears = {k for k in range(1, len(area)) if area[k] > 0 and area[k - 1] == 0}
        assert appears == {e.frame(spec.fps) for e in sample.events}
        assert area[0] == 0
    for spec in _single("pulse"):
        sample = render(spec)
        area = _mask(sample.frames, spec.objects[0].color).sum(axis=(1, 2))
        for e in sample.events:
            k = e.frame(spec.fps)
            assert area[k] > 1.3 * area[k - 1] and area[k + 1] > area[k], (spec.to_json(), area)


def test_talker_mouth_follows_voice() -> None:
    specs = _specs(lambda s: s.talker is not None)
    assert len(specs) >= 3
    for spec in specs:
        sample = render(spec)
        assert sample.speech == spec.talker.text and sample.speech in sample.audio_caption
        mouth = np.linalg.norm(sample.frames.astype(np.float32) - np.asarray(MOUTH_RGB, np.float32), axis=-1) < 40
        opening = mouth.sum(axis=(1, 2)).astype(np.float64)
        hop = sample.sample_rate / sample.fps
        loud = np.array([_rms(sample.audio, int(j * hop), int((j + 1) * hop)) for j in range(len(opening))])
        assert np.corrcoef(opening, loud)[0, 1] > 0.9, (opening, loud)
        win = int(0.02 * sample.sample_rate)
        for e in sample.events:
            assert e.kind == "syllable" and e.object == -1
            n0 = e.sample(sample.sample_rate)
            assert _rms(sample.audio, n0, n0 + win) > 4 * max(_rms(sample.audio, n0 - win, n0), 1e-4)
            assert opening[e.frame(spec.fps)] > opening[e.frame(spec.fps) - 1]


def test_captions_state_the_attributes() -> None:
    for spec in _specs(lambda s: True)[:30]:
        sample = render(spec)
        assert spec.background in sample.video_caption
        if spec.talker is None:
            assert sample.speech == ""
            for obj in spec.objects:
                words = {"purple": ("purple", "violet")}.get(obj.color, (obj.color,))
                assert any(w in sample.video_caption for w in words), sample.video_caption
        assert (spec.ambience > 0) == any(
            w in sample.audio_caption for w in ("hiss", "background noise", "room noise"))
    captions = {render(dataclasses.replace(sample_spec(TRAIN_SEED_START + 3), caption_seed=c)).video_caption
                for c in range(12)}
    assert len(captions) > 3  # the caption seed varies the wording


def test_unseen_combination_and_off_grid_times_render() -> None:
    d = _single("bounce")[0].to_dict()
    d.update(seconds=1.5, fps=10.0, size=48, sample_rate=22050, ambience=0.0, background="dark purple")
    d["objects"] = [dict(d["objects"][0], shape="triangle", color="purple", motion="pulse", times=[0.3, 1.03]),
                    dict(d["objects"][0], shape="circle", color="white", motion="slide", times=[0.61], y=0.1)]
    spec = SceneSpec.from_dict(d)
    sample = render(spec)
    assert sample.frames.shape == (15, 48, 48, 3) and sample.audio.shape == (33075,)
    assert [(e.kind, e.object) for e in sample.events] == [("pulse", 0), ("wall", 1), ("pulse", 0)]
    first = sample.events[0].sample(spec.sample_rate)
    assert first == int(np.ceil(0.3 * 22050)) and not np.any(sample.audio[:first])
    assert np.any(sample.audio[first: first + 200])
    assert sample.events[2].frame(spec.fps) == 11  # 1.03 s at 10 fps shows from frame 11


def test_heldout_file() -> None:
    specs = load_specs(HELDOUT_PATH)
    assert specs == build_heldout(), "heldout.jsonl is stale: run python -m training.data.world"
    assert len(specs) == 64 and len({s.seed for s in specs}) == 64
    assert all(s.seed < TRAIN_SEED_START for s in specs)
    combos = {(o.shape, o.color, o.motion) for s in specs for o in s.objects}
    assert set(HELDOUT_COMBOS) <= combos
    assert any(s.talker for s in specs)
    for s in specs:
        sample = render(s)
        assert sample.frames.shape == (16, 64, 64, 3) and sample.events
    # Training never draws a held-out combination.
    drawn = {(o.shape, o.color, o.motion) for seed in SEEDS for o in sample_spec(seed, talker_prob=0.0).objects}
    assert not drawn & set(HELDOUT_COMBOS)
    assert {c[0] for c in drawn} == set(SHAPES)


def test_render_speed_report() -> None:
    specs = [sample_spec(seed) for seed in SEEDS]
    render(specs[0])
    wall, cpu = time.perf_counter(), time.process_time()
    for s in specs:
        render(s)
    n = len(specs)
    wall_ms = (time.perf_counter() - wall) / n * 1e3
    cpu_ms = (time.process_time() - cpu) / n * 1e3
    print(f"\nrender: {wall_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU per default clip (mean of {n})")
    assert cpu_ms < 100.0  # loose: the machine is shared; the figure above is the report


def test_two_objects_never_overlap() -> None:
    from training.data.world.motion import track

    pairs = [s for s in (sample_spec(seed, talker_prob=0.0) for seed in SEEDS) if len(s.objects) == 2]
    assert len(pairs) >= 10
    for spec in pairs:
        q = np.arange(spec.num_frames) / spec.fps
        a, b = (track(o, q, size=spec.size, seconds=spec.seconds) for o in spec.objects)
        apart = (np.abs(a.cx - b.cx) >= a.r + b.r + 1) | (np.abs(a.cy - b.cy) >= a.r + b.r + 1)
        assert np.all(apart | ~a.visible | ~b.visible), spec.to_json()
