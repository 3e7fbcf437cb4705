"""Real clips: a folder of mp4/mkv/webm files, each with a sidecar JSON of captions.

Sidecar `clip.json` beside `clip.mp4`:
    {"video_caption": "...", "audio_caption": "...", "speech": "optional transcript",
     "quality": 0.9}   # quality optional, 0..1, used by the stages' quality filters

Each file is decoded with apollo_core.avio at the model's frame rate, its audio resampled to the
model's sample rate and mixed to mono, frames resized (shorter side to fit) and centre-cropped to
the clip size, and cut into up to `max_windows` consecutive windows of `clip.seconds`. A file
that is corrupt, has no audio track, lacks a sidecar or is too short raises `SkipClip`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from apollo_core import avio

from ..config import SourceConfig
from .sources import ClipFormat, RawClip, SkipClip

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")


class ClipFolderSource:
    def __init__(self, name: str, cfg: SourceConfig, fmt: ClipFormat) -> None:
        if cfg.path is None:
            raise ValueError(f"clips source {name!r} needs path: the folder holding the video files")
        self.name, self.cfg, self.fmt = name, cfg, fmt
        self.root = Path(cfg.path).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"clips source {name!r}: folder {self.root} does not exist; set data.sources.{name}.path")

    def items(self) -> list[str]:
        files = [p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        return sorted(str(p.relative_to(self.root)) for p in files)

    def load(self, item: str) -> list[RawClip]:
        path = self.root / item
        meta = read_sidecar(path)
        try:
            clip = avio.read_video(path, fps=self.fmt.fps, max_seconds=self.fmt.seconds * self.cfg.max_windows)
        except (ValueError, OSError, RuntimeError) as exc:
            raise SkipClip(f"unreadable: {exc}") from None
        if clip.waveform is None:
            raise SkipClip("no audio track: the file has video only; training needs both")
        windows = min(self.cfg.max_windows, clip.frames.shape[0] // self.fmt.frames)
        if windows < 1:
            raise SkipClip(f"too short: {clip.duration:.2f} s, each clip needs {self.fmt.seconds:g} s")
        wave = clip.waveform.mean(0, keepdim=True)  # [1, S] mono
        if clip.sample_rate != self.fmt.sample_rate:
            wave = avio.resample_audio(wave, clip.sample_rate, self.fmt.sample_rate)
        wave = avio.fit_audio(wave, round(clip.frames.shape[0] / self.fmt.fps * self.fmt.sample_rate))[0]  # [S]
        frames = resize_crop(clip.frames, self.fmt.height, self.fmt.width)  # [T, H, W, 3]
        out = []
        for i in range(windows):
            f0, s0 = i * self.fmt.frames, round(i * self.fmt.seconds * self.fmt.sample_rate)
            out.append(RawClip(
                key=f"{item}#{i}",
                frames=frames[f0:f0 + self.fmt.frames].contiguous(),
                waveform=avio.fit_audio(wave[None, s0:s0 + self.fmt.samples], self.fmt.samples)[0].contiguous(),
                video_caption=meta["video_caption"], audio_caption=meta["audio_caption"],
                speech=meta.get("speech", ""), quality=float(meta.get("quality", 1.0))))
        return out

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for item in self.items():
            p, side = self.root / item, (self.root / item).with_suffix(".json")
            st = p.stat()
            side_stamp = [side.stat().st_size, side.stat().st_mtime_ns] if side.is_file() else None
            files.append([item, st.st_size, st.st_mtime_ns, side_stamp])
        return {"kind": "clips", "root": str(self.root.resolve()), "files": files,
                "max_windows": self.cfg.max_windows, "format": self.fmt.__dict__}


def read_sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise SkipClip(f"no sidecar: {side.name} is missing (needs video_caption and audio_caption)")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SkipClip(f"bad sidecar: {side.name} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise SkipClip(f"bad sidecar: {side.name} must hold a JSON object")
    for key in ("video_caption", "audio_caption"):
        if not isinstance(meta.get(key), str):
            raise SkipClip(f"bad sidecar: {side.name} needs a string {key!r}")
    if not isinstance(meta.get("speech", ""), str):
        raise SkipClip(f"bad sidecar: {side.name} 'speech' must be a string")
    q = meta.get("quality", 1.0)
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
        raise SkipClip(f"bad sidecar: {side.name} 'quality' must be a number in [0, 1], got {q!r}")
    return meta


def resize_crop(frames: Tensor, height: int, width: int) -> Tensor:
    """`[T, h, w, 3]` -> `[T, height, width, 3]`: scale so the frame covers the target (aspect
    kept, antialiased), then centre-crop."""
    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = frames.permute(0, 3, 1, 2)  # [T, 3, h, w]
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width]  # [T, 3, height, width]
    return x.permute(0, 2, 3, 1).clamp(0.0, 1.0).contiguous()
