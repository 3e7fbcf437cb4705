"""Example inputs for the shipped workflows (a still, a short video, a short sound).

The TI2V/TI2AV, V2A and A2V templates load `apollo_example.*` with core LoadImage / LoadVideo /
LoadAudio, which only read ComfyUI's input folder; copying these few kilobytes there once (never
overwriting a user's file) is what lets every template run straight after install.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import folder_paths

MEDIA = Path(__file__).resolve().parent.parent / "workflows" / "media"
PATTERN = "apollo_example.*"


def install_example_inputs() -> list[str]:
    """Copy missing example files into the input folder; returns the names copied."""
    copied: list[str] = []
    try:
        target = Path(folder_paths.get_input_directory())
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(MEDIA.glob(PATTERN)):
            destination = target / source.name
            if destination.exists():
                continue
            tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, destination)
            copied.append(source.name)
    except OSError as exc:  # a read-only input folder must not stop the pack from loading
        logging.warning("APOLLO-AV: could not copy the example inputs into the input folder: %s", exc)
    return copied
