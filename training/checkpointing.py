"""Training checkpoints: everything a resumed run needs to continue as if never stopped.

A checkpoint is a folder `step-XXXXXXXX/` holding
    model.safetensors   training weights, apollo_core inference format (load_model reads it)
    ema.safetensors     EMA weights, same format
    optimizer.pt        full AdamW state (torch.save of tensors and numbers; read with weights_only)
    trainer.json        step, stage, task weights, last evaluation, task-sampler RNG, world size
    rank-N.json         per process: batch-sampler RNG, flow-noise generator, python/numpy/torch RNG
It is written into `.tmp-step-XXXXXXXX/` and renamed when complete, so a kill at any moment
leaves either the previous checkpoints or the new one, never a half one. Only the last `keep`
are kept. Weights are gathered with torch.distributed.checkpoint's state-dict API, which works
the same for one process, DDP and FSDP.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from apollo_core.checkpoint import load_state, save_model
from apollo_core.config import ApolloConfig
from apollo_core.model.dit import ApolloDiT

from .ema import EMA

PREFIX = "step-"
TRAINER_FILE = "trainer.json"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_LOAD = StateDictOptions(full_state_dict=True)
# Parameters that never receive a gradient (the last block's caption-stream outputs feed no head)
# have no AdamW state in the saved dict, exactly as in the optimizer that saved it.
_LOAD_OPTIM = StateDictOptions(full_state_dict=True, strict=False)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / TRAINER_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def resolve_resume(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run's output folder / its checkpoints folder (-> the latest)."""
    p = Path(path)
    if (p / TRAINER_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        found = list_checkpoints(root)
        if found:
            return found[-1]
    raise ValueError(f"--resume {p}: no complete checkpoint there (expected {PREFIX}XXXXXXXX/{TRAINER_FILE} "
                     f"in it or in its checkpoints/ folder)")


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full, unsharded CPU state dict (a collective under FSDP; rank 0 gets the tensors)."""
    return get_model_state_dict(model, options=_FULL)


def host_model(config: ApolloConfig, state: dict[str, torch.Tensor]) -> ApolloDiT:
    """An ApolloDiT wrapping `state`'s tensors without allocating a second copy."""
    with torch.device("meta"):
        model = ApolloDiT(config, attention="math", device="meta")
    model.load_state_dict(state, assign=True)
    return model


def rng_state(noise: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": _jsonable(random.getstate()),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state().tolist(), "noise": noise.get_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any], noise: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    noise.set_state(torch.tensor(state["noise"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def save_checkpoint(root: Path, step: int, *, rank: int, barrier: Callable[[], None], model: nn.Module,
                    optimizer: torch.optim.Optimizer, ema: EMA, config: ApolloConfig, trainer_state: dict[str, Any],
                    rank_state: dict[str, Any], keep: int, extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint collectively (every process calls this) and prune old ones."""
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    weights = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, _inner(optimizer), options=_FULL)
    with ema.swapped():
        ema_weights = full_model_state(model)
    _write_json(tmp / f"rank-{rank}.json", rank_state)
    if rank == 0:
        save_model(tmp / "model.safetensors", host_model(config, weights), extra=extra)
        save_model(tmp / "ema.safetensors", host_model(config, ema_weights), extra=extra)
        torch.save(optim_state, tmp / "optimizer.pt")
        _write_json(tmp / TRAINER_FILE, trainer_state)  # last: its presence marks a complete folder
    barrier()
    if rank == 0:
        if final.exists():
            trash = root / f".old-{final.name}"
            os.replace(final, trash)
            shutil.rmtree(trash)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: Path, *, rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: EMA) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore weights, EMA and optimizer in place; returns (trainer_state, this rank's state)."""
    trainer_state = json.loads((path / TRAINER_FILE).read_text())
    rank_file = path / f"rank-{rank}.json"
    if not rank_file.is_file():
        raise ValueError(f"checkpoint {path} has no {rank_file.name}: it was written by "
                         f"{trainer_state.get('world_size')} process(es); resume with the same number")
    set_model_state_dict(model, load_state(path / "ema.safetensors"), options=_LOAD)
    ema.capture()  # the live parameters hold the EMA now: copy them into the shadow
    set_model_state_dict(model, load_state(path / "model.safetensors"), options=_LOAD)
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, _inner(optimizer), optim_state, options=_LOAD_OPTIM)
    return trainer_state, json.loads(rank_file.read_text())


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
