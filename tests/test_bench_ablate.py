"""`apollo-av bench ablate` in CI size: micro runs of the debug config, the comparison logic."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.ablate import COMPARISONS, VARIANTS, compare, split_steps, summarise, tasks_to_score, variant_config
from benchmarks.cli import main as bench_main
from benchmarks.quality import CASCADE
from training.data.world import sample_spec

DEBUG = Path(__file__).resolve().parents[1] / "training" / "configs" / "debug.yaml"


def test_variant_configs_change_only_what_they_ablate(tmp_path) -> None:
    kw = dict(seed=3, steps=20, out=tmp_path / "o", cache=tmp_path / "c")
    omni = variant_config(DEBUG, VARIANTS["omni"], **kw)
    assert omni.seed == 3 and omni.total_steps == 20 and omni.data.cache_dir == str(tmp_path / "c")
    assert [s.steps for s in omni.stages] == [12, 4, 4]  # the base 24/8/8 split
    dual = variant_config(DEBUG, VARIANTS["dual_tower"], **kw)
    assert dual.model.build().architecture == "dual_tower" and omni.model.build().architecture == "single_tower"
    assert variant_config(DEBUG, VARIANTS["offset_rope"], **kw).model.build().rope_audio == "offset"
    only = variant_config(DEBUG, VARIANTS["t2av_only"], **kw)
    assert all(set(s.tasks) == {"t2av"} for s in only.stages)
    assert all(set(s.tasks) == {"t2av", "t2v"} for s in variant_config(DEBUG, VARIANTS["t2v_t2av"], **kw).stages)
    assert dataclass_without(dual, "model") == dataclass_without(omni, "model")


def dataclass_without(cfg, field: str) -> dict:
    d = cfg.to_dict()
    d.pop(field)
    return d


def test_tasks_to_score_follow_the_comparisons() -> None:
    need = tasks_to_score(list(VARIANTS))
    assert need["omni"] == ["t2av", "t2v", CASCADE]
    assert need["t2v_t2av"] == ["t2av", "t2v"] and need["dual_tower"] == ["t2av"]
    assert tasks_to_score(["dual_tower"]) == {"dual_tower": []}  # nothing to compare with
    assert split_steps(6, [24, 8, 8]) == [4, 1, 1] and split_steps(20, [24, 8, 8]) == [12, 4, 4]
    assert split_steps(7, [1, 1, 1]) == [3, 2, 2] and sum(split_steps(1000, [68, 21, 11])) == 1000


def test_compare_reports_direction_and_separation() -> None:
    runs = {
        "omni": {"t2av": {"sync_in_frame": [0.9, 0.8], "sync_offset_ms": [10.0, 12.0], "fd_video": [5.0, 9.0]}},
        "dual_tower": {"t2av": {"sync_in_frame": [0.5, 0.6], "sync_offset_ms": [11.0, 30.0], "fd_video": [4.0, 6.0]}},
    }
    rows = {r["metric"]: r for r in compare(runs, [c for c in COMPARISONS if c.worse[0] == "dual_tower"])}
    assert rows["sync_in_frame"]["agrees"] == "yes" and rows["sync_in_frame"]["separated"] is True
    assert rows["sync_offset_ms"]["agrees"] == "yes" and rows["sync_offset_ms"]["separated"] is False  # 12 > 11
    assert rows["fd_video"]["agrees"] == "no" and rows["fd_video"]["separated"] is False
    assert rows["sync_conf"]["agrees"] is None  # not measured on either side
    assert rows["sync_in_frame"]["better"] == pytest.approx({"mean": 0.85, "std": 0.0707107, "min": 0.8, "max": 0.9, "n": 2})
    assert summarise([None, float("nan")])["mean"] is None


def test_ablate_command_trains_scores_and_writes_json(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = tmp_path / "specs.jsonl"
    specs.write_text(json.dumps(sample_spec(0, seconds=1.0, talker_prob=0.0).to_dict()) + "\n")
    out = tmp_path / "result.json"
    code = bench_main(["ablate", "--config", str(DEBUG), "--train-steps", "6", "--seeds", "0", "1",
                       "--variants", "omni", "offset_rope", "--out", str(tmp_path / "runs"), "--specs", str(specs),
                       "--n", "1", "--steps", "1", "--quiet", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("apollo-av bench ablate --config")
    assert [(r["variant"], r["seed"], r["steps"]) for r in result["runs"]] == [
        ("omni", 0, 6), ("omni", 1, 6), ("offset_rope", 0, 6), ("offset_rope", 1, 6)]
    # only what the comparisons need: omni also runs the cascade (joint vs cascade needs no other variant)
    assert set(result["runs"][0]["tasks"]) == {"t2av", CASCADE} and set(result["runs"][2]["tasks"]) == {"t2av"}
    rows = [r for r in result["comparisons"] if r["comparison"] == "aligned vs offset MixD-RoPE"]
    assert {r["metric"] for r in rows} == {"sync_within_1_frame", "sync_in_frame", "sync_conf", "sync_offset_ms"}
    conf = next(r for r in rows if r["metric"] == "sync_conf")
    assert conf["better"]["n"] == 2 and conf["worse"]["n"] == 2
    assert (tmp_path / "runs" / "omni-seed1" / "export" / "model.safetensors").is_file()


def test_ablate_rejects_bad_arguments(tmp_path) -> None:
    assert bench_main(["ablate", "--budget-minutes", "0", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        bench_main(["ablate", "--variants", "triple_tower"])
