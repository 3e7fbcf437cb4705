"""Two DDP processes on the CPU (gloo) through `accelerate launch -m training`: both encode their
share of the cache, train in bf16 with activation checkpointing, the loss goes down, and both
replicas hold bit-identical weights at every checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "debug.yaml"


@pytest.mark.slow
def test_two_process_ddp(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # accelerate's launcher starts several CPU processes through its torchrun path (--multi_gpu);
    # the trainer then runs them as a gloo group.
    args = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
            "-m", "training", "--config", str(CONFIG), f"output_dir={out}", "precision=bf16",
            "activation_checkpointing=true", "tensorboard=false", "data.shard_size=16", "eval.samples=8",
            "data.sources.world.seeds=[1000000, 1000032]", "data.sources.world_val.seeds=[1900000, 1900008]",
            "stages.0.steps=20", "stages.0.lr.peak=0.006", "stages.1.steps=4", "stages.2.steps=4",
            "checkpoint.every=10", "checkpoint.keep=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    cache = next((out / "cache").glob("world-*"))
    assert sorted(p.name for p in cache.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 29))
    per_modality = [sum(m["total"] / (("video" in m) + ("audio" in m)) for m in r["micro"]) for r in train]
    first, last = sum(per_modality[:5]) / 5, sum(per_modality[-5:]) / 5
    assert last < 0.85 * first, f"loss did not go down: {first:.4f} -> {last:.4f}"
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert [p.name for p in checkpoints] == ["step-00000010", "step-00000020", "step-00000024", "step-00000028"]
    for ckpt in checkpoints:
        ranks = [json.loads((ckpt / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"], f"replicas differ at {ckpt.name}"
        # each rank drew its own batches
        assert ranks[0]["batch_sampler"] != ranks[1]["batch_sampler"]
    trainer = json.loads((checkpoints[-1] / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and trainer["step"] == 28
    assert (out / "export" / "model.safetensors").is_file()
