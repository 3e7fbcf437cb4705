"""Run-config validation, the learning-rate schedule, the task sampler and the Stage II rule."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from apollo_core.tasks import Task
from training.config import ConfigError, load_config, parse_config
from training.curriculum import rebalance, shortfalls, stage_task_weights
from training.config import RebalanceConfig, LRConfig
from training.optim import lr_at
from training.tasks import TaskSampler

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def raw_debug() -> dict:
    return yaml.safe_load((CONFIGS / "debug.yaml").read_text())


def test_shipped_configs_validate() -> None:
    debug = load_config(CONFIGS / "debug.yaml")
    assert debug.model.preset == "debug" and len(debug.stages) == 3
    tiny = load_config(CONFIGS / "apollo-tiny.yaml")
    assert tiny.model.preset == "apollo-tiny" and tiny.total_steps > 0
    assert [s.name for s in tiny.stages] == ["pretrain", "specialise", "finetune"]
    assert tiny.stages[1].rebalance is not None
    tasks = {t for s in tiny.stages for t in s.tasks}
    assert {t.value for t in Task} <= tasks
    polish = load_config(CONFIGS / "apollo-tiny-polish.yaml")  # the second run starts from the first's export
    assert polish.model.init_from == f"{tiny.output_dir}/export" and polish.flow.shift == 3.0
    assert polish.data.sources == tiny.data.sources
    sync = load_config(CONFIGS / "apollo-tiny-sync.yaml")  # the third starts from the second's export
    assert sync.model.init_from == f"{polish.output_dir}/export" and sync.data.sources == tiny.data.sources
    assert sync.stages[0].flow.logit_mean == -0.5 and sync.flow == tiny.flow


def test_unknown_key_is_named_with_its_path() -> None:
    raw = raw_debug()
    raw["stages"][1]["lr"]["peek"] = 1e-3
    with pytest.raises(ConfigError, match=r"stages\[1\]\.lr\.peek"):
        parse_config(raw)
    raw = raw_debug()
    raw["optimiser"] = "adam"
    with pytest.raises(ConfigError, match="unknown key 'optimiser'"):
        parse_config(raw)


@pytest.mark.parametrize("path,value,match", [
    (("stages", 0, "tasks"), {"t2x": 1.0}, "unknown task 't2x'"),
    (("stages", 0, "steps"), 0, r"stages\[0\]\.steps must be > 0"),
    (("stages", 0, "data"), {"nowhere": 1.0}, "not in data.sources"),
    (("stages", 0, "lr", "warmup"), 500, "warmup=500 must be below"),
    (("stages", 0, "tasks"), {"t2av": 0.0}, "weights sum to 0"),
    (("stages", 0, "batch_size"), "8", "must be an integer"),
    (("stages", 1, "rebalance", "floor"), 0.0, "floor must be > 0"),
    (("stages", 0, "onset_boost"), -1.0, r"stages\[0\]\.onset_boost must be >= 0"),
    (("stages", 0, "foreground_boost"), -0.5, r"stages\[0\]\.foreground_boost must be >= 0"),
    (("stages", 0, "motion_boost"), -0.5, r"stages\[0\]\.motion_boost must be >= 0"),
    (("stages", 0, "counterfactual"), {"latents": "s.safetensors", "share": 1.5}, r"counterfactual\.share must be in"),
    (("stages", 0, "counterfactual"), {"latents": "s.safetensors", "t_max": 1.0}, r"t_min <= t_max < 1"),
    (("stages", 0, "counterfactual"), {"share": 0.5}, r"missing key 'stages\[0\]\.counterfactual\.latents'"),
    (("stages", 0, "retime"), {"share": -0.1}, r"retime\.share must be in"),
    (("stages", 0, "retime"), {"min_seconds": 0.0}, r"0 < min_seconds <= max_seconds"),
    (("stages", 0, "retime"), {"min_seconds": 0.5, "max_seconds": 0.25}, r"0 < min_seconds <= max_seconds"),
    (("stages", 0, "retime"), {"t_max": 1.0}, r"retime needs 0 <= t_min <= t_max < 1"),
    (("precision",), "fp8", "precision='fp8'"),
    (("flow", "weight_cap"), -1.0, r"flow\.weight_cap must be >= 0"),
])
def test_bad_stage_values(path: tuple, value: object, match: str) -> None:
    raw = raw_debug()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_structural_errors() -> None:
    raw = raw_debug()
    raw["stages"][0]["rebalance"] = {"by": "validation_loss"}
    with pytest.raises(ConfigError, match="needs a previous stage"):
        parse_config(raw)
    raw = raw_debug()
    raw["stages"][2]["name"] = "pretrain"
    with pytest.raises(ConfigError, match="unique"):
        parse_config(raw)
    raw = raw_debug()
    raw["stages"][0]["data"]["world_val"] = 0.5
    with pytest.raises(ConfigError, match="also trained on"):
        parse_config(raw)
    raw = raw_debug()
    del raw["stages"][0]["steps"]
    with pytest.raises(ConfigError, match=r"missing key 'stages\[0\]\.steps'"):
        parse_config(raw)


def test_stage_flow_inherits_the_runs_and_is_validated() -> None:
    raw = raw_debug()
    raw["flow"] = {"shift": 3.0, "logit_std": 1.5}
    raw["stages"][2]["flow"] = {"logit_mean": -1.0}
    cfg = parse_config(raw)
    assert cfg.stages[0].flow is None
    assert (cfg.stages[2].flow.logit_mean, cfg.stages[2].flow.logit_std, cfg.stages[2].flow.shift) == (-1.0, 1.5, 3.0)
    assert cfg.flow.logit_mean == 0.0  # the run's (and validation's) distribution is unchanged
    with pytest.raises(ConfigError, match=r"stages\[1\]\.flow\.shift must be > 0"):
        parse_config(raw_debug(), ["stages.1.flow.shift=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'stages\[1\]\.flow\.mean'"):
        parse_config(raw_debug(), ["stages.1.flow.mean=-1"])


def test_overrides() -> None:
    cfg = parse_config(raw_debug(), ["stages.0.steps=5", "seed=7", "data.sources.world.seeds=[1000000, 1000004]"])
    assert cfg.stages[0].steps == 5 and cfg.seed == 7 and cfg.data.sources["world"].seeds == [1000000, 1000004]
    with pytest.raises(ConfigError, match="index below 3"):
        parse_config(raw_debug(), ["stages.9.steps=5"])
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_config(raw_debug(), ["stages.0.steps"])
    with pytest.raises(ConfigError, match="unknown key 'stages\\[0\\].stepz'"):
        parse_config(raw_debug(), ["stages.0.stepz=5"])


def test_lr_schedule() -> None:
    lr = LRConfig(peak=1.0, warmup=4, schedule="cosine", final=0.1)
    values = [lr_at(lr, s, 20) for s in range(20)]
    assert values[:4] == [0.2, 0.4, 0.6, 0.8]
    assert values[4] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert lr_at(LRConfig(peak=0.5, schedule="constant"), 10, 20) == 0.5


def test_task_sampler_follows_weights_and_resumes() -> None:
    sampler = TaskSampler({Task.T2AV: 3.0, Task.T2A: 1.0}, seed=0)
    draws = [sampler.draw() for _ in range(4000)]
    assert abs(draws.count(Task.T2AV) / 4000 - 0.75) < 0.03
    state = sampler.state_dict()
    ahead = [sampler.draw() for _ in range(10)]
    other = TaskSampler({Task.T2AV: 3.0, Task.T2A: 1.0}, seed=123)
    other.load_state_dict(state)
    assert [other.draw() for _ in range(10)] == ahead


def test_rebalance_rule() -> None:
    base = {Task.T2AV: 2.0, Task.T2V: 1.0, Task.T2A: 1.0}
    losses = {Task.T2AV: 0.3, Task.T2V: 0.2, Task.T2A: 0.4}  # T2V best, T2A worst
    falls = shortfalls(losses, higher_is_better=False)
    assert falls[Task.T2V] == 0.0 and falls[Task.T2A] == pytest.approx(1.0)
    w = rebalance(base, falls, floor=0.25)
    # multipliers: T2A 1, T2AV 0.25 + 0.75 * 0.5, T2V 0.25 (the floor keeps it in the mixture)
    raw = {Task.T2AV: 2.0 * 0.625, Task.T2V: 0.25, Task.T2A: 1.0}
    total = sum(raw.values())
    assert w == pytest.approx({t: v / total for t, v in raw.items()})
    assert min(w.values()) > 0
    same = rebalance(base, {t: 0.0 for t in base}, floor=0.25)
    assert same == pytest.approx({Task.T2AV: 0.5, Task.T2V: 0.25, Task.T2A: 0.25})
    evaluation = {"val/t2av/per_modality": 0.3, "val/t2v/per_modality": 0.2, "val/t2a/per_modality": 0.4}
    assert stage_task_weights(base, RebalanceConfig(floor=0.25), evaluation) == pytest.approx(w)
    metrics = {"metrics/t2av/sync": 0.9, "metrics/t2v/fid_score": 0.5, "metrics/t2a/clap": 0.7}
    wm = stage_task_weights(base, RebalanceConfig(by="metrics", floor=0.5), metrics)
    assert wm[Task.T2V] / base[Task.T2V] > wm[Task.T2A] / base[Task.T2A] > wm[Task.T2AV] / base[Task.T2AV]
    with pytest.raises(ValueError, match="no evaluation score"):
        stage_task_weights(base, RebalanceConfig(), {"val/t2av/per_modality": 0.3})
