"""Sampling from a later flow time (SDEdit starts) and the single-object probe built on it."""
from __future__ import annotations

import json
import math

import pytest
import torch

from apollo_core import sampling
from apollo_core.pipeline import Request, generate, load_bundle
from apollo_core.tasks import Task
from benchmarks.cli import main as bench_main
from benchmarks.probe import GROUPS, probe_clips, probe_specs, run_probe
from benchmarks.quality import render_for_model
from test_flow import exact_velocity


def test_time_grid_from_a_start_covers_only_what_is_left() -> None:
    assert sampling.time_grid(4, 3.0, 0.0) == sampling.time_grid(4, 3.0)  # start 0: the old grid, exactly
    grid = sampling.time_grid(4, 1.0, 0.6)
    assert grid[0] == 0.6 and grid[-1] == 1.0
    assert [round(b - a, 12) for a, b in zip(grid, grid[1:])] == [0.1] * 4
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"start must be in \[0, 1\)"):
            sampling.time_grid(4, 1.0, bad)


@pytest.mark.parametrize("solver, steps, tol", [("euler", 100, 0.03), ("euler_ancestral", 100, 0.04),
                                                ("dpmpp_2m", 20, 0.02)])
def test_sampling_on_from_the_noised_target_recovers_it(solver: str, steps: int, tol: float) -> None:
    mu, s, start = 2.0, 0.5, 0.6
    g = torch.Generator().manual_seed(0)
    x1 = mu + s * torch.randn(20_000, generator=g, dtype=torch.float64)
    x0 = torch.randn(20_000, generator=g, dtype=torch.float64)
    init = {"x": start * x1 + (1 - start) * x0}  # the marginal at t = start
    seen: list[float] = []

    def field(state, t):
        seen.append(t)
        return exact_velocity(mu, s)(state, t)

    out = sampling.sample(field, init, steps=steps, solver=solver, start=start, generator=g)["x"]
    assert abs(float(out.mean()) - mu) < tol and abs(float(out.std()) - s) < tol
    assert min(seen) == start  # no step is spent on [0, start)
    with pytest.raises(ValueError, match="needs spread 0"):
        sampling.sample(field, init, steps=2, start=start, spread=1.0)


def test_probe_groups_hold_one_object_of_the_asked_motion_and_event_count() -> None:
    groups = probe_specs(3)
    assert list(groups) == list(GROUPS)
    for name, specs in groups.items():
        motion, events = GROUPS[name]
        assert len(specs) == 3 and len({s.seed for s in specs}) == 3
        for spec in specs:
            assert spec.talker is None and len(spec.objects) == 1
            assert spec.objects[0].motion == motion and len(spec.objects[0].times) == events
    assert [s.seed for s in probe_specs(3)["pulse, 1"]] == [s.seed for s in groups["pulse, 1"]]  # deterministic
    with pytest.raises(ValueError, match="n >= 1"):
        probe_specs(0)


def test_probe_from_noise_is_the_generated_clip_and_from_a_late_start_keeps_the_real_one() -> None:
    bundle = load_bundle(None)
    spec = probe_specs(1)["bounce, 2 hits"][0]
    real = render_for_model(spec, bundle)
    kw = {"steps": 3, "video_cfg": 3.0, "solver": "euler_ancestral", "eta": 0.5, "spread": 0.0}
    clips = probe_clips(bundle, spec, (0.0, 0.97), seed=5, **kw)
    from_noise = clips[0.0]
    clip = generate(bundle, Request(task=Task.T2V, video_prompt=real.video_caption, audio_prompt=real.audio_caption,
                                    steps=3, seed=5, solver="euler_ancestral", eta=0.5))
    assert torch.equal(from_noise, clip.frames)
    frames = torch.from_numpy(real.frames).float() / 255.0
    late = clips[0.97]
    assert float(((late - frames) ** 2).mean()) < 0.2 * float(((from_noise - frames) ** 2).mean())


def test_probe_counts_and_cli(tmp_path, capsys) -> None:
    groups = probe_specs(1)
    out = run_probe(load_bundle(None), groups, starts=(0.0, 0.97), steps=2)
    assert list(out["starts"]) == ["0", "0.97"]
    for rows in out["starts"].values():
        assert all(rows[g]["shape"][1] == 1 for g in GROUPS)  # one object per clip
        assert rows["all"]["colour"][1] == 3
    assert out["starts"]["0.97"]["all"]["colour"][0] == 3  # the nearly clean clips keep their colours
    path = tmp_path / "probe.json"
    assert bench_main(["probe", "--n", "1", "--starts", "0.9", "--steps", "1", "--quiet", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["command"].startswith("apollo-av bench probe --n 1") and list(data["starts"]) == ["0.9"]
    assert "shape colour motion count" in capsys.readouterr().out
    assert bench_main(["probe", "--n", "1", "--starts", "1"]) == 2
    assert "start must be in [0, 1)" in capsys.readouterr().err
