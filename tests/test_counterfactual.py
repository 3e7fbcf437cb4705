"""Counterfactual noisy inputs (a stage's `counterfactual`): the world scene with its shapes or
motions changed, and the objective that feeds it to the model while scoring against the true clip."""
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from apollo_core.config import get_preset
from apollo_core.objective import Retime, Swap, roll_frames, training_loss
from apollo_core.tasks import Task
from training.config import RetimeConfig
from training.trainer import draw_retime
from training.data.counterfactual import encode_swaps, load_swaps, swap_motions, swap_shapes, write_swaps
from training.data.world import TRAIN_SEED_START, render, sample_spec
from training.data.world.constants import HELDOUT_COMBOS, MOTIONS
from training.data.world.sampler import MIN_GAP

from tiny_inputs import debug_case

CFG = get_preset("debug").replace(prediction="x1")  # the oracles answer with clean latents


class Oracle:
    """A model that answers with fixed clean latents (x1-prediction) and records what it reads."""

    def __init__(self, video: torch.Tensor, audio: torch.Tensor) -> None:
        self.config, self.answer, self.seen = CFG, {"video": video, "audio": audio}, []

    def __call__(self, inputs):
        self.seen.append(inputs.video.latent.clone())
        return dict(self.answer)


def _case(b: int = 2):
    cond, video, audio = debug_case(b)
    alt = video + torch.randn(video.shape, generator=torch.Generator().manual_seed(2))  # the counterfactual clip
    return cond, video, alt, audio


def _loss(model, cond, video, audio, t, swap=None) -> dict:
    return training_loss(model, Task.T2AV, video=video, audio=audio, cond=cond, t=t, swap=swap,
                         generator=torch.Generator().manual_seed(5))


def test_swapped_rows_read_the_counterfactual_and_are_scored_against_the_clip() -> None:
    cond, video, alt, audio = _case()
    t = torch.tensor([0.4, 0.4])
    swap = Swap(alt, torch.tensor([True, False]), t_min=0.2, t_max=0.7)
    truth, follower = Oracle(video, audio), Oracle(alt, audio)
    plain = _loss(truth, cond, video, audio, t)
    swapped = _loss(truth, cond, video, audio, t, swap)
    _loss(follower, cond, video, audio, t, swap)
    # Same noise: row 0's noisy video moved by t * (alt - x1), row 1's did not move.
    before, after = truth.seen[0], truth.seen[1]
    assert torch.allclose(after[0] - before[0], 0.4 * (alt[0] - video[0]), atol=1e-6)
    assert torch.equal(after[1], before[1])
    # The true clip is the answer on every row; the clip the noisy input came from is not.
    assert plain["video"].item() == pytest.approx(0.0, abs=1e-10)
    assert swapped["video"].item() == pytest.approx(0.0, abs=1e-10)
    follow = _loss(follower, cond, video, audio, t, swap)
    assert follow["video"].item() > 0.1
    assert torch.equal(swapped["audio"], plain["audio"])


def test_rows_outside_the_time_window_or_not_chosen_are_untouched() -> None:
    cond, video, alt, audio = _case()
    model = Oracle(alt, audio)  # a wrong answer, so any change to input or target shows
    t = torch.tensor([0.1, 0.9])
    plain = _loss(model, cond, video, audio, t)
    outside = _loss(model, cond, video, audio, t, Swap(alt, torch.tensor([True, True]), 0.2, 0.7))
    assert torch.equal(plain["video"], outside["video"]) and torch.equal(model.seen[0], model.seen[1])
    t = torch.tensor([0.4, 0.5])
    unchosen = _loss(model, cond, video, audio, t, Swap(alt, torch.tensor([False, False])))
    assert torch.equal(unchosen["video"], _loss(model, cond, video, audio, t)["video"])


def test_swap_must_match_the_batch() -> None:
    cond, video, alt, audio = _case()
    with pytest.raises(ValueError, match="swap: video"):
        _loss(Oracle(video, audio), cond, video, audio, torch.tensor([0.4, 0.4]),
              Swap(alt[:1], torch.tensor([True])))


def test_swap_shapes_changes_only_the_shapes() -> None:
    seeds = range(TRAIN_SEED_START, TRAIN_SEED_START + 60)
    objects = talkers = 0
    for seed in seeds:
        spec = sample_spec(seed)
        swapped = swap_shapes(spec, seed)
        if spec.talker is not None:
            assert swapped is None
            talkers += 1
            continue
        objects += 1
        assert swapped == swap_shapes(spec, seed)  # deterministic
        for a, b in zip(spec.objects, swapped.objects):
            assert a.shape != b.shape
            assert a.to_dict() | {"shape": b.shape} == b.to_dict()
        assert (swapped.objects[0].shape, swapped.objects[0].color, swapped.objects[0].motion) not in HELDOUT_COMBOS
        assert spec.to_dict() | {"objects": [o.to_dict() for o in swapped.objects]} == swapped.to_dict()
        # the same scene and sound, another picture
        a, b = render(spec), render(swapped)
        assert (a.audio == b.audio).all() and (a.frames != b.frames).any()
    assert objects > 30 and talkers > 3


def _fits(spec, i: int, motion: str) -> bool:
    """Whether object i could take `motion` as a counterfactual: another motion, which can hit its
    event times, no new slide beside a second object, no held-out triple for object 0."""
    o = spec.objects[i]
    gaps = [b - a for a, b in zip(o.times, o.times[1:])]
    return (motion != o.motion and all(g >= MIN_GAP[motion] - 1e-6 for g in gaps)
            and not (len(spec.objects) == 2 and motion == "slide")
            and (i > 0 or (o.shape, o.color, motion) not in HELDOUT_COMBOS))


def test_swap_motions_changes_only_the_motions() -> None:
    changed = skipped = 0
    seen: set[str] = set()
    for seed in range(TRAIN_SEED_START, TRAIN_SEED_START + 120):
        spec = sample_spec(seed)
        swapped = swap_motions(spec, seed)
        if swapped is None:
            skipped += 1
            # only talkers, or an object that no other motion fits
            assert spec.talker is not None or any(
                not any(_fits(spec, i, m) for m in MOTIONS) for i in range(len(spec.objects)))
            continue
        changed += 1
        assert swapped == swap_motions(spec, seed)  # deterministic
        for i, (a, b) in enumerate(zip(spec.objects, swapped.objects)):
            assert a.to_dict() | {"motion": b.motion} == b.to_dict()  # the same object and event times
            assert _fits(spec, i, b.motion)
            seen.add(b.motion)
        assert (render(spec).frames != render(swapped).frames).any()
    assert changed > 60 and skipped > 3
    assert seen == set(MOTIONS)  # every motion is drawn as a counterfactual


@dataclass
class _Bank:
    video: torch.Tensor
    keys: list

    def __len__(self) -> int:
        return len(self.keys)


def test_load_swaps_aligns_rows_by_seed(tmp_path) -> None:
    shape = (8, 2, 2, 2)
    bank = _Bank(torch.zeros(4, *shape), ["world:seed-1000005", "world_val:seed-1900000", "world:seed-1000003",
                                          "world:seed-1000004"])
    video = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, *shape).contiguous()  # row i filled with i
    path = tmp_path / "swaps.safetensors"
    write_swaps({"video": video, "valid": torch.tensor([True, True, False]),
                 "seeds": torch.tensor([1000005, 1000003, 1000004])}, path)
    out, has = load_swaps(bank, path)
    assert has.tolist() == [True, False, True, False]  # 1000004 is a talker, world_val has none
    assert out[0].unique().tolist() == [0.0] and out[2].unique().tolist() == [1.0]
    with pytest.raises(ValueError, match="do not match the cache"):
        load_swaps(_Bank(torch.zeros(4, 8, 2, 2, 3), bank.keys), path)
    with pytest.raises(ValueError, match="no row of the cache"):
        load_swaps(_Bank(torch.zeros(1, *shape), ["world:seed-1000099"]), path)
    with pytest.raises(ValueError, match="unreadable"):
        load_swaps(bank, tmp_path / "missing.safetensors")
    save_file({"video": video, "valid": torch.tensor([True] * 3), "seeds": torch.tensor([1000005, 1000003, 1000004])},
              str(tmp_path / "old.safetensors"), metadata={"format": "apollo-av/shape-swap/1"})
    with pytest.raises(ValueError, match="format 'apollo-av/shape-swap/1', expected apollo-av/counterfactual/1"):
        load_swaps(bank, tmp_path / "old.safetensors")


def test_counterfactual_cli_names_a_bad_source(tmp_path) -> None:
    from pathlib import Path

    from training.data.counterfactual import main

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "debug.yaml"
    with pytest.raises(SystemExit, match=r"--source 'nope' must name a world source .*\['world', 'world_val'\]"):
        main(["--config", str(config), "--source", "nope", "--out", str(tmp_path / "s.safetensors")])
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["--config", str(config), "--change", "colour", "--out", str(tmp_path / "s.safetensors")])
    with pytest.raises(ValueError, match=r"change 'colour': expected one of \['motion', 'shape'\]"):
        encode_swaps(None, range(1), None, change="colour")
    with pytest.raises(SystemExit, match="stages"):
        main(["--config", str(config), "--out", str(tmp_path / "s.safetensors"), "stages.0.steps=0"])
    assert not (tmp_path / "s.safetensors").exists()


class AudioOracle(Oracle):
    """An oracle that records the noisy audio it reads."""

    def __call__(self, inputs):
        self.seen.append(inputs.audio.latent.clone())
        return dict(self.answer)


def _retime_loss(model, task, cond, video, audio, t, retime=None) -> dict:
    return training_loss(model, task, video=video, audio=audio, cond=cond, t=t, retime=retime,
                         generator=torch.Generator().manual_seed(5))


def test_roll_frames_moves_each_row_by_its_own_shift() -> None:
    x = torch.arange(6.0).view(1, 1, 6).repeat(2, 3, 1)  # [2, 3, 6]
    out = roll_frames(x, torch.tensor([2, -1]))
    assert out[0, 1].tolist() == [4.0, 5.0, 0.0, 1.0, 2.0, 3.0]  # two frames later, wrapping round
    assert out[1, 2].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]  # one frame earlier
    assert torch.equal(roll_frames(x, torch.zeros(2, dtype=torch.long)), x)


def test_retimed_rows_read_the_moved_audio_and_are_scored_against_the_clip() -> None:
    cond, video, _, audio = _case()
    t = torch.tensor([0.2, 0.2])
    retime = Retime(torch.tensor([3, 0]), t_min=0.0, t_max=0.35)
    moved = roll_frames(audio, torch.tensor([3, 3]))
    truth, follower = AudioOracle(video, audio), AudioOracle(video, moved)
    plain = _retime_loss(truth, Task.V2A, cond, video, audio, t)
    retimed = _retime_loss(truth, Task.V2A, cond, video, audio, t, retime)
    # Same noise: row 0's noisy audio moved by t * (moved - x1), row 1's (shift 0) did not move.
    before, after = truth.seen[0], truth.seen[1]
    assert torch.allclose(after[0] - before[0], 0.2 * (moved[0] - audio[0]), atol=1e-6)
    assert torch.equal(after[1], before[1])
    # The in-time audio is the answer on every row; the moved audio the input came from is not.
    assert plain["audio"].item() == pytest.approx(0.0, abs=1e-10)
    assert retimed["audio"].item() == pytest.approx(0.0, abs=1e-10)
    assert _retime_loss(follower, Task.V2A, cond, video, audio, t, retime)["audio"].item() > 0.1
    joint = _retime_loss(truth, Task.T2AV, cond, video, audio, t, retime)  # the video stays as it was
    assert torch.equal(joint["video"], _retime_loss(truth, Task.T2AV, cond, video, audio, t)["video"])


def test_retime_leaves_rows_outside_its_window_and_tasks_without_video() -> None:
    cond, video, _, audio = _case()
    retime = Retime(torch.tensor([3, -2]), t_min=0.0, t_max=0.35)
    model = AudioOracle(video, roll_frames(audio, torch.tensor([1, 1])))  # a wrong answer: any change shows
    for task, t in ((Task.V2A, torch.tensor([0.5, 0.9])), (Task.T2A, torch.tensor([0.2, 0.2]))):
        assert torch.equal(_retime_loss(model, task, cond, video, audio, t)["audio"],
                           _retime_loss(model, task, cond, video, audio, t, retime)["audio"])
        assert torch.equal(model.seen[-2], model.seen[-1])
    with pytest.raises(ValueError, match="retime: shift"):
        _retime_loss(model, Task.V2A, cond, video, audio, torch.tensor([0.2, 0.2]), Retime(torch.tensor([1])))


def test_draw_retime_moves_a_share_of_rows_within_the_range() -> None:
    rt = RetimeConfig(share=0.5, min_seconds=0.0625, max_seconds=0.375, t_min=0.0, t_max=0.3)
    out = draw_retime(rt, 4000, 64.0, torch.Generator().manual_seed(0))
    moved = out.shift[out.shift != 0]
    assert 0.45 < len(moved) / 4000 < 0.55
    assert int(moved.abs().min()) == 4 and int(moved.abs().max()) == 24  # 0.0625 s and 0.375 s at 64 frames/s
    assert 0.45 < float((moved > 0).float().mean()) < 0.55  # either sign
    assert (out.t_min, out.t_max) == (0.0, 0.3)
    assert torch.equal(draw_retime(rt, 4000, 64.0, torch.Generator().manual_seed(0)).shift, out.shift)
    # at 2 frames/s the range rounds to 0 or 1 frame; a moved row moves at least one
    assert set(draw_retime(rt, 64, 2.0, torch.Generator().manual_seed(1)).shift.abs().tolist()) == {0, 1}


def test_draw_retime_can_leave_the_speech_rows_in_time() -> None:
    rt = RetimeConfig(share=1.0, speech=False)
    speech = torch.arange(64) % 3 == 0
    out = draw_retime(rt, 64, 64.0, torch.Generator().manual_seed(0), has_speech=speech)
    every = draw_retime(RetimeConfig(share=1.0), 64, 64.0, torch.Generator().manual_seed(0), has_speech=speech)
    assert not out.shift[speech].any() and out.shift[~speech].ne(0).all()
    assert torch.equal(out.shift[~speech], every.shift[~speech])  # the same draws; only the speech rows stay
    assert every.shift.ne(0).all()  # speech: true (the default) moves them too
    with pytest.raises(ValueError, match="has_speech must mark each of the 64 rows"):
        draw_retime(rt, 64, 64.0, torch.Generator().manual_seed(0))
