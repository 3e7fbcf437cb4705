"""Benchmark results on disk: JSON written atomically (temp file in the same folder, then rename)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from apollo_core.files import atomic_write_text


def write_json_atomic(path: str | os.PathLike[str], data: dict) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
