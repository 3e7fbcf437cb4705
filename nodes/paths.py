"""Where the loaders look for files, and how a listed name turns back into a path.

The embedded apollo-tiny lives inside the package (apollo_core/assets/apollo-tiny); it is listed
under one fixed name and resolved to that folder, so nothing is copied into ComfyUI's models.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..apollo_core.pipeline import AUDIO_CODEC_FILE, MODEL_FILE, VIDEO_CODEC_FILE, default_checkpoint

EMBEDDED = "apollo-tiny (embedded)"
APOLLO_FOLDER = "apollo"
MODEL_FOLDERS = (APOLLO_FOLDER, "diffusion_models")
CODEC_FOLDERS = (APOLLO_FOLDER, "vae")
TEXT_ENCODER_FOLDER = "text_encoders"
_CODEC_NAMES = {VIDEO_CODEC_FILE, AUDIO_CODEC_FILE}


def register_folders() -> None:
    """Add `models/apollo` (safetensors only) without dropping paths a user's yaml already set."""
    folder_paths.add_model_folder_path(APOLLO_FOLDER, os.path.join(folder_paths.models_dir, APOLLO_FOLDER),
                                       is_default=True)
    folder_paths.folder_names_and_paths[APOLLO_FOLDER][1].add(".safetensors")


def _listed(folders: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths:
            names += [n for n in folder_paths.get_filename_list(folder) if n.endswith(".safetensors")]
    return list(dict.fromkeys(names))


def model_choices() -> list[str]:
    """The embedded model first, then model files (codec files of a bundle folder are left out)."""
    return [EMBEDDED] + [n for n in _listed(MODEL_FOLDERS) if os.path.basename(n) not in _CODEC_NAMES]


def codec_choices() -> list[str]:
    return [EMBEDDED] + _listed(CODEC_FOLDERS)


def _resolve(name: str, folders: tuple[str, ...], what: str, input_name: str) -> Path:
    for folder in folders:
        if folder in folder_paths.folder_names_and_paths:
            found = folder_paths.get_full_path(folder, name)
            if found is not None:
                return Path(found)
    where = " or ".join(f"models/{f}" for f in folders)
    raise ValueError(f"{input_name}: {what} {name!r} was not found in {where}; put the file there and "
                     "refresh the node list (press R), or pick a listed file")


def resolve_model(name: str) -> Path:
    if name == EMBEDDED:
        return _embedded(MODEL_FILE, "checkpoint")
    return _resolve(name, MODEL_FOLDERS, "checkpoint", "checkpoint")


def resolve_codec(name: str, embedded_file: str, input_name: str) -> Path:
    if name == EMBEDDED:
        return _embedded(embedded_file, input_name)
    return _resolve(name, CODEC_FOLDERS, "codec file", input_name)


def _embedded(filename: str, input_name: str) -> Path:
    path = default_checkpoint() / filename
    if not path.is_file():
        raise ValueError(f"{input_name}: the embedded apollo-tiny is not installed ({path} is missing); "
                         "update the APOLLO-AV pack, or pick a checkpoint from models/apollo")
    return path


def text_encoder_folders() -> dict[str, Path]:
    """Local transformers folders (config.json + *.safetensors) under models/text_encoders, by name."""
    found: dict[str, Path] = {}
    for base in folder_paths.get_folder_paths(TEXT_ENCODER_FOLDER):
        root = Path(base)
        if not root.is_dir():
            continue
        for config in sorted(root.rglob("config.json")):
            folder = config.parent
            if folder != root and any(folder.glob("*.safetensors")):
                found.setdefault(folder.relative_to(root).as_posix(), folder)
    return found
