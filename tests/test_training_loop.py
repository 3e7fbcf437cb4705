"""Training the debug preset on the synthetic world: the loss goes down, the export loads, and a
run killed with SIGKILL and resumed reproduces the uninterrupted run's losses bit for bit."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from apollo_core.checkpoint import load_model
from apollo_core.pipeline import load_bundle
from training.checkpointing import list_checkpoints
from training.data.batches import Draw
from training.data.world import sample_spec
from apollo_core.tasks import Task
from training.config import load_config
from training.export import export_checkpoint
from apollo_core.objective import training_loss
from training import trainer as trainer_module
from training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "debug.yaml"
SMALL = ["data.sources.world.seeds=[1000000, 1000032]", "data.sources.world_val.seeds=[1900000, 1900008]",
         "eval.samples=8", "data.shard_size=16", "tensorboard=false"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("latent-cache")


@pytest.fixture(autouse=True)
def one_thread():
    # Bitwise equality across processes needs the same intra-op thread count; one thread is also
    # the fastest for a model this small on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def per_modality(record: dict) -> float:
    return sum(m["total"] / (("video" in m) + ("audio" in m)) for m in record["micro"]) / len(record["micro"])


def structure_free_floor(latents: torch.Tensor) -> float:
    """Flow-matching loss of the best predictor that knows only each channel's mean and variance
    (Gaussian x1 ~ N(m, s^2), x0 ~ N(0, 1), t logit-normal): Var(x1 - x0 | x_t), averaged."""
    var = latents.transpose(0, 1).flatten(1).var(1)[:, None]  # [C, 1]
    t = torch.sigmoid(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))[None]  # [1, N]
    floor = (1 + var) - (t * var - (1 - t)) ** 2 / (t * t * var + (1 - t) ** 2)
    return float(floor.mean())


@pytest.mark.slow
def test_loss_goes_down_checkpoints_and_export(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIG, SMALL + [f"output_dir={tmp_path}", f"data.cache_dir={cache}",
                                       "stages.2.flow.logit_mean=-1.5"])
    drawn_with: list[float] = []  # each training step's flow-time logit mean

    def recording_loss(*args, **kwargs):
        drawn_with.append(kwargs["logit_mean"])
        return training_loss(*args, **kwargs)
    monkeypatch.setattr(trainer_module, "training_loss", recording_loss)
    trainer = Trainer(cfg)
    result = trainer.run()
    # the last stage draws its flow times from its own distribution, the others from the run's
    sizes = [s.steps * s.grad_accum for s in cfg.stages]
    assert drawn_with == [0.0] * (sizes[0] + sizes[1]) + [-1.5] * sizes[2]
    records = train_records(tmp_path)
    assert [r["step"] for r in records] == list(range(1, cfg.total_steps + 1))
    losses = [per_modality(r) for r in records]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # Unit-variance latents put a floor of ~1.74 under this loss for any model that has not
    # learned the data (see structure_free_floor), so a few dozen steps cannot reach 0.8x of the
    # untrained ~2.0; below the floor is the evidence of learning.
    assert last < 0.85 * first, f"loss did not go down: first 5 {first:.4f}, last 5 {last:.4f}"
    # Held-out video loss ends below that floor (the model learned the clips' structure, not only
    # their statistics); every task's held-out loss improves from the first evaluation to the last.
    floor = structure_free_floor(trainer.bank.video[trainer.evaluator.indices])
    video = [v for k, v in result.last_eval.items() if k.endswith("/video")]
    assert sum(video) / len(video) < floor, f"held-out video loss {video} not below the structure-free floor {floor:.3f}"
    evals = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert len(evals) == 3
    for key in (k for k in evals[0] if k.startswith("val/") and k.endswith("/total")):
        assert evals[-1][key] < evals[0][key], f"{key}: {evals[0][key]} -> {evals[-1][key]}"
    # every task of the mixture was trained in stage I; the rebalanced weights were logged
    assert {m["task"] for r in records[:24] for m in r["micro"]} >= {"t2av", "t2a", "t2v"}
    stages = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"stage"' in l]
    rebalanced = [s for s in stages if s["kind"] == "stage" and s["rebalanced"]]
    assert len(rebalanced) == 1 and abs(sum(rebalanced[0]["task_weights"].values()) - 1) < 1e-9
    assert min(rebalanced[0]["task_weights"].values()) > 0
    # checkpoints: the last `keep` survive, complete; no temp folder left behind
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step-00000032", "step-00000040"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    # the export is an apollo_core bundle (model + codecs) holding the EMA weights
    assert result.export is not None and result.step == 40
    bundle = load_bundle(result.export, attention="math")
    assert bundle.defaults == {"width": 32, "height": 32, "seconds": 1.0}
    model = load_model(result.export / "model.safetensors", attention="math")
    ema = load_model(kept[-1] / "ema.safetensors", attention="math")
    for (name, a), b in zip(model.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(a, b), name
    # any checkpoint exports later too, here in bf16
    again = export_checkpoint(tmp_path, tmp_path / "bf16", weight_dtype="bf16", steps=7, sync_cfg={"audio": 2.0},
                              solver="Euler_Ancestral", eta=0.25)
    assert load_bundle(again, attention="math").defaults == {"width": 32, "height": 32, "seconds": 1.0, "steps": 7,
                                                             "audio_sync_cfg": 2.0, "solver": "euler_ancestral",
                                                             "eta": 0.25}
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        export_checkpoint(tmp_path, tmp_path / "bad", solver="rk4")
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        export_checkpoint(tmp_path, tmp_path / "bad", eta=1.5)
    with pytest.raises(ValueError, match="sync_cfg takes"):
        export_checkpoint(tmp_path, tmp_path / "bad", sync_cfg={"text": 1.0})
    with pytest.raises(ValueError, match="steps must be >= 1"):
        export_checkpoint(tmp_path, tmp_path / "bad", steps=0)
    small = load_bundle(again, attention="math").model
    assert small.video_embed.weight.dtype == torch.bfloat16
    assert torch.equal(small.video_embed.weight, model.video_embed.weight.to(torch.bfloat16))


@pytest.mark.slow
def test_kill_and_resume_matches_straight_run(tmp_path: Path, cache: Path) -> None:
    common = SMALL + [f"data.cache_dir={cache}", "checkpoint.every=4", "checkpoint.keep=3",
                      "stages.0.steps=24", "stages.1.steps=4", "stages.2.steps=4"]
    straight = tmp_path / "straight"
    Trainer(load_config(CONFIG, common + [f"output_dir={straight}"])).run()
    expected = {r["step"]: r for r in train_records(straight)}

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "training", "--config", str(CONFIG), *common, f"output_dir={killed}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not (killed / "checkpoints" / "step-00000008").is_dir():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the subprocess never wrote its step-8 checkpoint"
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = train_records(killed)
    assert 8 <= before[-1]["step"] < 32, "the kill must land mid-run"

    result = Trainer(load_config(CONFIG, common + [f"output_dir={killed}"]), resume=killed).run()
    assert result.step == 32
    records = train_records(killed)
    resumed_from = int(list_checkpoints(killed / "checkpoints")[0].name.split("-")[1])
    assert records[len(before)]["step"] <= before[-1]["step"] + 1
    assert {r["step"] for r in records} == set(expected)
    for r in records:  # killed run before the kill, and the resumed run after it
        want = expected[r["step"]]
        assert r["micro"] == want["micro"] and r["loss"] == want["loss"] and r["grad_norm"] == want["grad_norm"], \
            f"step {r['step']} differs (resumed from a checkpoint at step >= {resumed_from})"


@pytest.mark.slow
def test_counterfactuals_reach_only_their_rows_and_tasks(tmp_path: Path, cache: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from training.data.counterfactual import main as write_counterfactual

    swaps = tmp_path / "swaps.safetensors"
    write_counterfactual(["--config", str(CONFIG), "--out", str(swaps), "data.sources.world.seeds=[1000000, 1000032]"])
    spec = f"{{latents: {swaps}, share: 0.75, t_min: 0.0, t_max: 0.99}}"
    cfg = load_config(CONFIG, SMALL + [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={cache}", "stages.0.steps=12",
                                       "stages.1.steps=2", "stages.2.steps=2", f"stages.0.counterfactual={spec}",
                                       "stages.0.retime={share: 1.0}"])
    seen: list[tuple[str, object]] = []
    retimes: list[tuple[str, object]] = []

    def recording_loss(*args, **kwargs):
        seen.append((args[1].value, kwargs["swap"]))
        retimes.append((args[1].value, kwargs["retime"]))
        return training_loss(*args, **kwargs)
    monkeypatch.setattr(trainer_module, "training_loss", recording_loss)
    trainer = Trainer(cfg)
    _, has = trainer.swaps["pretrain"]
    for key, h in zip(trainer.bank.keys, has.tolist()):  # a swap for each object scene of the trained source
        source, _, item = key.partition(":")
        assert h == (source == "world" and sample_spec(int(item[5:])).talker is None), key
    stage = cfg.stages[0]
    idx = np.nonzero(has.numpy())[0][:8]
    assert trainer._swap(stage, Task.TI2V, Draw(idx, np.zeros(8, bool))) is None  # its first frame is given
    assert trainer._swap(stage, Task.V2A, Draw(idx, np.zeros(8, bool))) is None
    assert not trainer._swap(stage, Task.T2V, Draw(idx, np.ones(8, bool))).rows.any()  # no caption, no swap
    assert trainer._swap(stage, Task.T2V, Draw(idx, np.zeros(8, bool))).rows.any()
    # With `speech: false` the talker scenes' audio stays in time, the object scenes' still moves.
    keys = trainer.bank.keys
    talker = np.array([sample_spec(int(k.partition(":")[2][5:])).talker is not None for k in keys])
    assert talker.any() and not talker.all()
    quiet = dataclasses.replace(stage, retime=dataclasses.replace(stage.retime, speech=False))
    shift = trainer._retime(quiet, Task.T2AV, np.arange(len(keys))).shift
    assert not shift[torch.as_tensor(talker)].any() and shift[torch.as_tensor(~talker)].ne(0).all()
    trainer.run()
    whole_video = {"t2av", "t2v", "a2v"}
    first = seen[:12]
    assert all((swap is not None) == (task in whole_video) for task, swap in first)
    assert sum(int(swap.rows.sum()) for _, swap in first if swap is not None) > 0
    assert all(swap is None for _, swap in seen[12:])  # the other stages have none
    # Audio is retimed where the task generates it beside a video, on every row at share 1.
    with_video = {"t2av", "ti2av", "v2a"}
    assert all((rt is not None) == (task in with_video) for task, rt in retimes[:12])
    assert all(bool((rt.shift != 0).all()) for _, rt in retimes[:12] if rt is not None)
    assert all(rt is None for _, rt in retimes[12:])
    records = train_records(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
