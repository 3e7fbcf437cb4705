"""Codec checkpoints: safetensors weights with the codec's kind and hyper-parameters as JSON
metadata, so a file alone rebuilds the codec."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import safe_open
from torch import nn

from ..files import atomic_save
from .tiny_audio import TinyAudioVAE
from .tiny_video import TinyVideoVAE

FORMAT_VERSION = "1"
CODEC_KINDS: dict[str, type[nn.Module]] = {
    TinyVideoVAE.kind: TinyVideoVAE,
    TinyAudioVAE.kind: TinyAudioVAE,
}
Codec = Union[TinyVideoVAE, TinyAudioVAE]


class CodecCheckpointError(ValueError):
    """A codec file that cannot be loaded as asked; the message names the file and the fix."""


def save_codec(path: str | os.PathLike[str], codec: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Write `codec`'s weights and buffers to `path` atomically. `extra` (JSON-able) is stored as
    metadata too, e.g. training figures."""
    kind = getattr(codec, "kind", None)
    if kind not in CODEC_KINDS or not isinstance(codec, CODEC_KINDS[kind]):
        raise ValueError(f"cannot save {type(codec).__name__}: codec kind must be one of {sorted(CODEC_KINDS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in codec.state_dict().items()}
    metadata = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "hparams": json.dumps(codec.hparams(), sort_keys=True),  # type: ignore[operator]
    }
    if extra is not None:
        metadata["extra"] = json.dumps(extra, sort_keys=True)
    return atomic_save(tensors, path, metadata)


def read_codec_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The kind, hyper-parameters and extra metadata of a codec file, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CodecCheckpointError(f"codec file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CodecCheckpointError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
    kind = raw.get("kind")
    if kind not in CODEC_KINDS:
        raise CodecCheckpointError(
            f"{str(path)!r} has codec kind {kind!r} in its metadata; expected one of {sorted(CODEC_KINDS)} "
            "(was it written by save_codec?)"
        )
    try:
        hparams = json.loads(raw.get("hparams", ""))
        extra = json.loads(raw["extra"]) if "extra" in raw else {}
    except json.JSONDecodeError as exc:
        raise CodecCheckpointError(f"{str(path)!r} has malformed JSON metadata: {exc}") from exc
    return {"kind": kind, "format_version": raw.get("format_version"), "hparams": hparams, "extra": extra}


def load_codec(
    path: str | os.PathLike[str],
    kind: str | None = None,
    device: str | torch.device = "cpu",
) -> Codec:
    """Rebuild a codec from `path` in eval mode. `kind`, if given, is checked against the file."""
    meta = read_codec_metadata(path)
    if kind is not None and meta["kind"] != kind:
        raise CodecCheckpointError(f"{str(path)!r} holds a {meta['kind']!r} codec, expected {kind!r}")
    cls = CODEC_KINDS[meta["kind"]]
    try:
        codec = cls(**meta["hparams"])
    except TypeError as exc:
        raise CodecCheckpointError(f"{str(path)!r}: hyper-parameters do not fit {cls.__name__}: {exc}") from exc
    expected = codec.state_dict()
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        missing = sorted(set(expected) - names)
        unexpected = sorted(names - set(expected))
        if missing:
            raise CodecCheckpointError(
                f"{str(path)!r} is missing tensor(s) {missing} that {cls.__name__} with the stored hyper-parameters needs"
            )
        if unexpected:
            raise CodecCheckpointError(
                f"{str(path)!r} has unexpected tensor(s) {unexpected} for {cls.__name__}; the file and its "
                "hyper-parameters disagree"
            )
        state = {}
        for name, ref in expected.items():
            tensor = f.get_tensor(name)
            if tensor.shape != ref.shape:
                raise CodecCheckpointError(
                    f"{str(path)!r}: tensor {name!r} has shape {tuple(tensor.shape)} but {cls.__name__} "
                    f"with the stored hyper-parameters needs {tuple(ref.shape)}"
                )
            state[name] = tensor.to(ref.dtype)
    codec.load_state_dict(state, strict=True)
    return codec.to(device).eval()
