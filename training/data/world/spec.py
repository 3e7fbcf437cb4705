"""Scene specs: frozen, validated, JSON-serialisable descriptions from which render() is pure.

Every field is checked on construction (directly or through from_dict); a bad value raises
SpecError (a ValueError) naming the field path, e.g. `objects[1].color`, and the allowed values.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from apollo_core.files import atomic_write_text

from .constants import (
    BACKGROUNDS,
    CONSONANTS,
    DIRECTIONS,
    MAX_AMBIENCE,
    MAX_SYLLABLE_SECONDS,
    MOTIONS,
    PALETTE,
    SHAPES,
    SIZES,
    VOICES,
    VOWELS,
)

SPEC_VERSION = 1
MAX_OBJECTS = 2
_SYLLABLE = re.compile(f"^[{''.join(CONSONANTS)}]?[{''.join(VOWELS)}]$")


class SpecError(ValueError):
    """A spec field is invalid; `field` is its dotted path inside the scene."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"spec field {field!r}: {problem}")

    def under(self, prefix: str) -> "SpecError":
        return SpecError(f"{prefix}.{self.field}", self.problem)


def _choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise SpecError(name, f"{value!r} is not one of {options}")
    return value


def _number(name: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(name, f"must be a finite number, got {value!r}")
    if value < lo or value > hi or (open_lo and value == lo):
        bracket = "(" if open_lo else "["
        raise SpecError(name, f"{value!r} is outside {bracket}{lo}, {hi}]")
    return float(value)


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(name, f"{value!r} is outside [{lo}, {hi}]")
    return int(value)


def _times(name: str, value: Any, *, allow_empty: bool = False) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpecError(name, f"must be a list of times in seconds, got {value!r}")
    out = tuple(_number(f"{name}[{i}]", t, 0.0, math.inf) for i, t in enumerate(value))
    if not out and not allow_empty:
        raise SpecError(name, "must list at least one event time (seconds)")
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise SpecError(name, f"times must be strictly increasing, got {list(out)}")
    return out


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass field in __post_init__


def _keys(data: Any, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(where or "scene", f"must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    extra = sorted(set(data) - known - ({"version"} if cls is SceneSpec else set()))
    if extra:
        raise SpecError(f"{where}.{extra[0]}" if where else extra[0], f"unknown field; allowed: {sorted(known)}")
    return {k: v for k, v in data.items() if k != "version"}


@dataclass(frozen=True)
class ObjectSpec:
    """One moving object. `times` are its event times (seconds); the motion is built to hit them.

    x and y place the object inside its free range (0 = left/top, 1 = right/bottom); the axis a
    motion drives is ignored (bounce drives y, slide drives x). `direction` is where a sliding
    object is heading at t = 0 (so which wall its first event hits); other motions ignore it.
    """

    shape: str
    color: str
    size: str
    motion: str
    times: tuple[float, ...]
    x: float = 0.5
    y: float = 0.5
    direction: str = "right"

    def __post_init__(self) -> None:
        _choice("shape", self.shape, SHAPES)
        _choice("color", self.color, PALETTE)
        _choice("size", self.size, SIZES)
        _choice("motion", self.motion, MOTIONS)
        _set(self, "times", _times("times", self.times))
        _set(self, "x", _number("x", self.x, 0.0, 1.0))
        _set(self, "y", _number("y", self.y, 0.0, 1.0))
        _choice("direction", self.direction, DIRECTIONS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "color": self.color, "size": self.size, "motion": self.motion,
            "times": list(self.times), "x": self.x, "y": self.y, "direction": self.direction,
        }

    @staticmethod
    def from_dict(data: Any, where: str = "object") -> "ObjectSpec":
        values = _keys(data, ObjectSpec, where)
        try:
            return ObjectSpec(**values)
        except SpecError as e:
            raise e.under(where) from None
        except TypeError as e:  # a required field is missing
            raise SpecError(where, f"{e}; required: shape, color, size, motion, times") from None


@dataclass(frozen=True)
class TalkerSpec:
    """A face saying `syllables` (consonant? + vowel each), syllable i starting at times[i]."""

    syllables: tuple[str, ...]
    times: tuple[float, ...]
    voice: str = "low"
    syllable_seconds: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.syllables, str) or not isinstance(self.syllables, Sequence):
            raise SpecError("syllables", f"must be a list of syllables like ['ba', 'di'], got {self.syllables!r}")
        syllables = tuple(self.syllables)
        if not syllables:
            raise SpecError("syllables", "must list at least one syllable")
        for i, s in enumerate(syllables):
            if not isinstance(s, str) or not _SYLLABLE.match(s):
                raise SpecError(
                    f"syllables[{i}]",
                    f"{s!r} is not an optional consonant from {sorted(CONSONANTS)} followed by a vowel from {sorted(VOWELS)}",
                )
        _set(self, "syllables", syllables)
        _set(self, "times", _times("times", self.times))
        if len(self.times) != len(syllables):
            raise SpecError("times", f"has {len(self.times)} entries but there are {len(syllables)} syllables")
        _choice("voice", self.voice, VOICES)
        _set(self, "syllable_seconds", _number("syllable_seconds", self.syllable_seconds, 0.0, MAX_SYLLABLE_SECONDS, open_lo=True))

    @property
    def text(self) -> str:
        return " ".join(self.syllables)

    def to_dict(self) -> dict[str, Any]:
        return {"syllables": list(self.syllables), "times": list(self.times), "voice": self.voice,
                "syllable_seconds": self.syllable_seconds}

    @staticmethod
    def from_dict(data: Any, where: str = "talker") -> "TalkerSpec":
        values = _keys(data, TalkerSpec, where)
        try:
            return TalkerSpec(**values)
        except SpecError as e:
            raise e.under(where) from None
        except TypeError as e:
            raise SpecError(where, f"{e}; required: syllables, times") from None


@dataclass(frozen=True)
class SceneSpec:
    """Everything render() needs. Either 1-2 objects or a talker (never both, never neither).

    `seed` names the scene's origin and seeds its noise (ambience, click and consonant noise);
    `caption_seed` picks caption templates and synonyms.
    """

    seed: int
    background: str
    objects: tuple[ObjectSpec, ...] = ()
    talker: TalkerSpec | None = None
    seconds: float = 2.0
    fps: float = 8.0
    size: int = 64
    sample_rate: int = 16000
    ambience: float = 0.0
    caption_seed: int = 0

    def __post_init__(self) -> None:
        _integer("seed", self.seed, 0, 2**63 - 1)
        _integer("caption_seed", self.caption_seed, 0, 2**63 - 1)
        _choice("background", self.background, BACKGROUNDS)
        seconds = _number("seconds", self.seconds, 0.0, 600.0, open_lo=True)
        fps = _number("fps", self.fps, 0.0, 240.0, open_lo=True)
        _set(self, "seconds", seconds)
        _set(self, "fps", fps)
        _integer("size", self.size, 16, 1024)
        _integer("sample_rate", self.sample_rate, 8000, 192000)
        _set(self, "ambience", _number("ambience", self.ambience, 0.0, MAX_AMBIENCE))
        for name, rate in (("fps", fps), ("sample_rate", float(self.sample_rate))):
            count = seconds * rate
            if abs(count - round(count)) > 1e-6 * max(1.0, count) or round(count) < 1:
                raise SpecError("seconds", f"seconds * {name} = {count} must be a whole number >= 1; pick seconds to fit {name}")
        if isinstance(self.objects, (str, bytes)) or not isinstance(self.objects, Sequence):
            raise SpecError("objects", f"must be a list of objects, got {self.objects!r}")
        objects = tuple(self.objects)
        _set(self, "objects", objects)
        for i, o in enumerate(objects):
            if not isinstance(o, ObjectSpec):
                raise SpecError(f"objects[{i}]", f"must be an ObjectSpec, got {type(o).__name__}")
        if self.talker is not None and not isinstance(self.talker, TalkerSpec):
            raise SpecError("talker", f"must be a TalkerSpec or null, got {type(self.talker).__name__}")
        if self.talker is None and not 1 <= len(objects) <= MAX_OBJECTS:
            raise SpecError("objects", f"a scene without a talker needs 1 to {MAX_OBJECTS} objects, got {len(objects)}")
        if self.talker is not None and objects:
            raise SpecError("objects", "a talker scene has no objects; use objects=[] with a talker, or talker=null")
        timed = [(f"objects[{i}].times", o.times) for i, o in enumerate(objects)]
        if self.talker is not None:
            timed.append(("talker.times", self.talker.times))
        for name, times in timed:
            if times[-1] >= seconds:
                raise SpecError(name, f"event time {times[-1]} is not inside the clip [0, {seconds})")

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def kind(self) -> str:
        return "talker" if self.talker is not None else "objects"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION, "seed": self.seed, "caption_seed": self.caption_seed,
            "seconds": self.seconds, "fps": self.fps, "size": self.size, "sample_rate": self.sample_rate,
            "background": self.background, "ambience": self.ambience,
            "objects": [o.to_dict() for o in self.objects],
            "talker": None if self.talker is None else self.talker.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(data: Any) -> "SceneSpec":
        values = _keys(data, SceneSpec, "")
        if isinstance(data, dict) and data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise SpecError("version", f"{data['version']!r} is not a supported version ({SPEC_VERSION})")
        objects = values.get("objects", [])
        if isinstance(objects, (str, bytes, dict)) or not isinstance(objects, Sequence):
            raise SpecError("objects", f"must be a list of objects, got {objects!r}")
        values["objects"] = tuple(ObjectSpec.from_dict(o, f"objects[{i}]") for i, o in enumerate(objects))
        if values.get("talker") is not None:
            values["talker"] = TalkerSpec.from_dict(values["talker"])
        try:
            return SceneSpec(**values)
        except TypeError as e:
            raise SpecError("scene", f"{e}; required: seed, background") from None

    @staticmethod
    def from_json(text: str) -> "SceneSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"scene spec is not valid JSON: {e}") from None
        return SceneSpec.from_dict(data)


def load_specs(path: str | os.PathLike[str]) -> list[SceneSpec]:
    """One SceneSpec per non-blank line of a JSONL file; errors name the file and line number."""
    specs: list[SceneSpec] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                specs.append(SceneSpec.from_json(line))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return specs


def save_specs(path: str | os.PathLike[str], specs: Iterable[SceneSpec]) -> None:
    """Write specs as JSONL atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    lines = []
    for i, s in enumerate(specs):
        if not isinstance(s, SceneSpec):
            raise ValueError(f"save_specs: item {i} is a {type(s).__name__}, not a SceneSpec")
        lines.append(s.to_json() + "\n")
    atomic_write_text(path, "".join(lines))
