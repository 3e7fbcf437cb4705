"""Model checkpoints: safetensors with the config in the metadata.

Loading validates before it touches the model: the config must parse, every tensor must be
present with the right shape, and nothing unexpected may be in the file; each error names the
tensor. Linear weights may be stored as fp32/bf16/fp16 or fp8 (e4m3fn); they are upcast at the
matmul by `CastLinear`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from .config import ApolloConfig, get_preset
from .files import atomic_save
from .model.dit import ApolloDiT

FORMAT = "apollo-av/dit"
WEIGHT_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the tensor."""


def parse_weight_dtype(name: str) -> torch.dtype | None:
    """'auto' -> None (keep the file's dtypes)."""
    if name == "auto":
        return None
    try:
        return WEIGHT_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown weight dtype {name!r}; choose auto or one of {sorted(WEIGHT_DTYPES)}") from None


def save_model(path: str | os.PathLike, model: ApolloDiT, *, weight_dtype: str = "fp32",
               extra: dict[str, Any] | None = None) -> Path:
    """Save weights (linear weights in `weight_dtype`, everything else fp32) with the config."""
    target = parse_weight_dtype(weight_dtype) or torch.float32
    linear_weights = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    tensors = {}
    for name, value in model.state_dict().items():
        dtype = target if name in linear_weights else torch.float32
        if target in (torch.bfloat16, torch.float16) and value.is_floating_point():
            dtype = target  # half checkpoints halve everything, fp8 only the big matrices
        tensors[name] = value.to(dtype)
    metadata = {"format": FORMAT, "config": model.config.to_json(), "extra": json.dumps(extra or {})}
    return atomic_save(tensors, path, metadata)


def read_config(path: str | os.PathLike) -> tuple[ApolloConfig, dict[str, Any]]:
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not an APOLLO-AV model checkpoint (metadata format={meta.get('format')!r}); "
                              "codec or other safetensors files go in their own loader")
    try:
        config = ApolloConfig.from_json(meta["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: config in metadata is invalid: {exc}") from None
    return config, json.loads(meta.get("extra", "{}"))


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from None


def validate_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing tensor {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for name, ref in expected.items():
        if tuple(state[name].shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                                  f"the config expects {tuple(ref.shape)}")


def load_model(path: str | os.PathLike, *, attention: str = "auto", weight_dtype: str = "auto",
               compute_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               expect_preset: str | None = None, operations=None) -> ApolloDiT:
    """Build the model from the checkpoint's config and load its weights.

    weight_dtype: storage of linear weights ('auto' keeps the file's); compute_dtype: activations.
    expect_preset: raise when the file was trained for another preset (e.g. a UI choice).
    """
    config, _ = read_config(path)
    if expect_preset is not None:
        wanted = get_preset(expect_preset)
        if wanted.to_dict() | {"name": ""} != config.to_dict() | {"name": ""}:
            raise CheckpointError(f"{path}: checkpoint is preset {config.name!r}, not {expect_preset!r}")
    state = load_state(path)
    with torch.device("meta"):
        model = ApolloDiT(config, attention=attention, dtype=compute_dtype, device="meta", operations=operations)
    validate_state(model, state, str(path))
    storage = parse_weight_dtype(weight_dtype)
    linear_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    converted = {}
    for name, value in state.items():
        if name in linear_weights:
            converted[name] = value.to(storage) if storage is not None else value
        else:
            converted[name] = value.to(compute_dtype) if value.is_floating_point() else value
    model.load_state_dict(converted, assign=True)
    model.compute_dtype = compute_dtype
    return model.to(device).eval()


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist or is not a file")
    return p
