"""Data sources behind one interface: a list of items, each loading to zero or more clips.

An item is the unit a source can fail on (one world seed, one video file). `load(item)` returns
the clips cut from it, all of exactly the run's clip size, or raises `SkipClip` with the reason;
the pre-encode step counts and reports skips and carries on. Items are what shards are cut from,
so several processes can encode disjoint shards of one source.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ..config import ClipConfig, SourceConfig


@dataclass(frozen=True)
class ClipFormat:
    """The shape every training clip is brought to."""

    seconds: float
    height: int
    width: int
    fps: float
    sample_rate: int

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def samples(self) -> int:
        return round(self.seconds * self.sample_rate)

    @staticmethod
    def from_config(clip: ClipConfig, fps: float, sample_rate: int) -> "ClipFormat":
        return ClipFormat(clip.seconds, clip.height, clip.width, float(fps), int(sample_rate))


@dataclass(frozen=True)
class RawClip:
    key: str  # unique within the source, e.g. "seed-000042" or "walk.mp4#1"
    frames: Tensor  # [T, H, W, 3] float32 0..1
    waveform: Tensor  # [S] float32 mono -1..1
    video_caption: str
    audio_caption: str
    speech: str = ""  # transcript; "" when nobody speaks
    quality: float = 1.0  # the source's own quality score (sidecar `quality`)


class SkipClip(ValueError):
    """An item that yields no usable clip; the message is the reason shown in the report."""


@dataclass
class SkipReport:
    """Skipped items with their reasons; merged across shards for the run's summary."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: str, reason: str) -> None:
        self.items.append((item, reason))

    @property
    def count(self) -> int:
        return len(self.items)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason in self.items))

    def merge(self, other: "SkipReport") -> None:
        self.items.extend(other.items)

    def to_list(self) -> list[list[str]]:
        return [list(x) for x in self.items]

    @staticmethod
    def from_list(items: list[list[str]]) -> "SkipReport":
        return SkipReport([(str(a), str(b)) for a, b in items])


class DataSource(Protocol):
    name: str
    fmt: ClipFormat

    def items(self) -> list[str]: ...

    def load(self, item: str) -> list[RawClip]: ...

    def fingerprint(self) -> dict[str, Any]:
        """What determines the clips: a cache made for another fingerprint is not reused."""
        ...


class WorldSource:
    """The synthetic AV world, rendered on demand from seeds (training/data/world)."""

    def __init__(self, name: str, cfg: SourceConfig, fmt: ClipFormat) -> None:
        if cfg.seeds is None:
            raise ValueError(f"world source {name!r} needs seeds: [start, stop)")
        self.name, self.cfg, self.fmt = name, cfg, fmt
        self.start, self.stop = int(cfg.seeds[0]), int(cfg.seeds[1])
        from .world import TRAIN_SEED_START

        if self.start < TRAIN_SEED_START:
            raise ValueError(f"world source {name!r}: seeds below {TRAIN_SEED_START} are reserved for held-out "
                             f"evaluation (training/data/world); start the range at {TRAIN_SEED_START} or above")
        if fmt.height != fmt.width:
            raise ValueError(f"world source {name!r}: the world renders square frames; set data.clip.height = "
                             f"data.clip.width (got {fmt.height}x{fmt.width})")

    def items(self) -> list[str]:
        return [str(s) for s in range(self.start, self.stop)]

    def load(self, item: str) -> list[RawClip]:
        from .world import render, sample_spec  # imported late: the world is only needed when rendering

        seed = int(item)
        try:
            sample = render(sample_spec(seed, seconds=self.fmt.seconds, fps=self.fmt.fps, size=self.fmt.height,
                                        sample_rate=self.fmt.sample_rate))
        except ValueError as exc:
            raise SkipClip(f"world: seed {seed} cannot be rendered ({exc})") from None
        frames = torch.from_numpy(sample.frames).float().div_(255.0)  # [T, H, W, 3]
        audio = torch.from_numpy(sample.audio).float().reshape(-1)  # [S]
        return [RawClip(key=f"seed-{seed:07d}", frames=fit_frames(frames, self.fmt.frames),
                        waveform=fit_waveform(audio, self.fmt.samples), video_caption=sample.video_caption,
                        audio_caption=sample.audio_caption, speech=sample.speech or "")]

    def fingerprint(self) -> dict[str, Any]:
        # The world's code is its version: any change to how it renders invalidates the cache.
        code = hashlib.sha256()
        for path in sorted((Path(__file__).parent / "world").glob("*.py")):
            code.update(path.read_bytes())
        return {"kind": "world", "seeds": [self.start, self.stop], "format": self.fmt.__dict__,
                "world_code": code.hexdigest()}


def fit_frames(frames: Tensor, count: int) -> Tensor:
    """Exactly `count` frames: cut the tail or repeat the last frame (a frame short from rounding)."""
    if frames.shape[0] >= count:
        return frames[:count].contiguous()
    pad = frames[-1:].expand(count - frames.shape[0], *frames.shape[1:])
    return torch.cat([frames, pad]).contiguous()


def fit_waveform(wave: Tensor, count: int) -> Tensor:
    if wave.shape[0] >= count:
        return wave[:count].contiguous()
    return torch.cat([wave, wave.new_zeros(count - wave.shape[0])])


def build_source(name: str, cfg: SourceConfig, fmt: ClipFormat) -> DataSource:
    if cfg.kind == "world":
        return WorldSource(name, cfg, fmt)
    from .clips import ClipFolderSource

    return ClipFolderSource(name, cfg, fmt)


def quality_measures(clip: RawClip) -> dict[str, float]:
    """Cheap signal measures stored with every cached sample, for the stages' quality filters."""
    motion = float((clip.frames[1:] - clip.frames[:-1]).abs().mean()) if clip.frames.shape[0] > 1 else 0.0
    rms = float(clip.waveform.pow(2).mean().sqrt())
    loudness = 20.0 * math.log10(max(rms, 1e-6))
    return {"quality": float(clip.quality), "motion": motion, "loudness_db": loudness,
            "has_speech": float(bool(clip.speech.strip()))}
