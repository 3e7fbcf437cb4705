"""Captions rendered from a spec: templates and synonyms picked by a Generator seeded from
spec.caption_seed, always in the same draw order, so the text is a pure function of the spec.

Every caption states the true attributes; synonyms only vary the wording (see SPEC.md).
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np

from .constants import PITCH_BAND
from .spec import ObjectSpec, SceneSpec

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
COLOR_WORDS = {
    "red": ("red",), "yellow": ("yellow",), "green": ("green",), "blue": ("blue",),
    "purple": ("purple", "violet"), "white": ("white",),
}
SHAPE_WORDS = {"circle": ("circle", "ball", "disc"), "square": ("square", "box", "block"), "triangle": ("triangle",)}
MOTION_WORDS = {
    "bounce": ("bounces", "bounces on the floor", "is bouncing up and down"),
    "slide": ("slides from wall to wall", "slides back and forth", "slides sideways"),
    "pulse": ("pulses", "swells and shrinks", "throbs"),
    "blink": ("blinks on and off", "blinks", "flashes on and off"),
}
BACKGROUND_WORDS = ("on a {bg} background", "against a {bg} background", "in front of a {bg} backdrop")
TALKER_WORDS = ("a cartoon face talks", "a simple face speaks", "a face is talking")
PITCH_WORDS = {"low": ("low-pitched", "low"), "mid": ("mid-pitched", "medium-pitched"), "high": ("high-pitched", "high")}
# Event sound per motion: (singular, plural, "each time" clause).
SOUND_WORDS = {
    "bounce": (("knock", "knocks", "each time it lands"), ("tap", "taps", "each time it hits the floor")),
    "slide": (("clack", "clacks", "each time it hits a wall"), ("click", "clicks", "whenever it reaches a wall")),
    "pulse": (("swelling hum", "swelling hums", "with each pulse"), ("swell", "swells", "each time it grows")),
    "blink": (("beep", "beeps", "each time it appears"), ("bleep", "bleeps", "whenever it appears")),
}
VOICE_WORDS = {"low": ("a low voice", "a deep voice"), "high": ("a high voice", "a high-pitched voice")}
SPEECH_TEMPLATES = ("{who} says {text}", "{who} speaks: {text}", "{who} saying {text}")
AMBIENCE_WORDS = (" over a quiet hiss", " with faint background noise", " over soft room noise")
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


T = TypeVar("T")


class _Picker:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 3])

    def __call__(self, options: tuple[T, ...]) -> T:
        return options[int(self.rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def count_word(n: int) -> str:
    return COUNT_WORDS[n] if n < len(COUNT_WORDS) else str(n)


def _object_phrase(obj: ObjectSpec, pick: _Picker) -> str:
    size, color, shape = pick(SIZE_WORDS[obj.size]), pick(COLOR_WORDS[obj.color]), pick(SHAPE_WORDS[obj.shape])
    return f"{_article(size)} {size} {color} {shape}"


def video_caption(spec: SceneSpec, pick: _Picker) -> str:
    bg = pick(BACKGROUND_WORDS).format(bg=spec.background)
    if spec.talker is not None:
        return f"{pick(TALKER_WORDS)} {bg}"
    clauses = [f"{_object_phrase(o, pick)} {pick(MOTION_WORDS[o.motion])}" for o in spec.objects]
    if len(clauses) == 1:
        return f"{clauses[0]} {bg}" if pick(("after", "before")) == "after" else f"{bg}, {clauses[0]}"
    joiner = pick((" and ", " while "))
    return f"{clauses[0]}{joiner}{clauses[1]} {bg}"


def _sound_phrase(obj: ObjectSpec, pick: _Picker) -> str:
    single, plural, each = pick(SOUND_WORDS[obj.motion])
    pitch = pick(PITCH_WORDS[PITCH_BAND[obj.color]])
    n = len(obj.times)
    if pick(("count", "each")) == "each":
        return f"{_article(pitch)} {pitch} {single} {each}"
    if n == 1:
        return f"{pick((_article(pitch), 'one'))} {pitch} {single}"
    return f"{count_word(n)} {pitch} {plural}"


def audio_caption(spec: SceneSpec, pick: _Picker) -> str:
    if spec.talker is not None:
        text = pick(SPEECH_TEMPLATES).format(who=pick(("a person",) + VOICE_WORDS[spec.talker.voice]), text=spec.talker.text)
    else:
        text = " and ".join(_sound_phrase(o, pick) for o in spec.objects)
    if spec.ambience > 0:
        text += pick(AMBIENCE_WORDS)
    return text


def captions(spec: SceneSpec) -> tuple[str, str, str]:
    """(video caption, audio caption, speech transcript) for a spec."""
    pick = _Picker(spec.caption_seed)
    video = video_caption(spec, pick)
    audio = audio_caption(spec, pick)
    speech = spec.talker.text if spec.talker is not None else ""
    return video, audio, speech
