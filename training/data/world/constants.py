"""The world's vocabulary: every named attribute and the exact number it stands for.

Benchmarks detect attributes and events analytically against these values, so they are part of
the contract documented in SPEC.md; change them only together with that file and the held-out set.
"""
from __future__ import annotations

# Object colours: far apart in RGB (min pairwise distance > 120) so the nearest-palette colour of
# an object's interior pixels identifies it without ambiguity.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "yellow": (240, 210, 40),
    "green": (40, 190, 70),
    "blue": (50, 110, 240),
    "purple": (170, 70, 220),
    "white": (235, 235, 235),
}

# Pitch is a function of colour only (size never changes it). Tones are pure sines half an octave
# apart (ratio sqrt(2)), C4 .. F#6: no pitch is within 40 % of another, so a spectral peak over a
# 20 ms window names the colour.
PITCH_HZ: dict[str, float] = {
    "red": 261.63,
    "yellow": 369.99,
    "green": 523.25,
    "blue": 739.99,
    "purple": 1046.50,
    "white": 1479.98,
}
PITCH_BAND: dict[str, str] = {
    "red": "low",
    "yellow": "low",
    "green": "mid",
    "blue": "mid",
    "purple": "high",
    "white": "high",
}

# Dark backgrounds, so every palette colour stands out against every background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 16),
    "dark blue": (20, 28, 70),
    "dark green": (16, 52, 30),
    "dark grey": (52, 52, 56),
    "dark purple": (46, 20, 56),
}
FLOOR_RGB: tuple[int, int, int] = (120, 110, 100)
FLOOR_FRACTION = 1.0 / 16.0  # floor band height / frame size (4 px at 64 px)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("bounce", "slide", "pulse", "blink")
DIRECTIONS: tuple[str, ...] = ("left", "right")
# Half-extent r of an object as a fraction of the frame size (its bounding box is 2r x 2r).
SIZES: dict[str, float] = {"small": 0.10, "large": 0.16}

# Which event each motion produces; 'syllable' belongs to the talker.
EVENT_OF_MOTION: dict[str, str] = {"bounce": "impact", "slide": "wall", "pulse": "pulse", "blink": "appear"}
EVENT_KINDS: tuple[str, ...] = ("impact", "wall", "appear", "pulse", "syllable")
TALKER_OBJECT = -1  # Event.object of a syllable: the talker is not an entry of SceneSpec.objects

# Motion timing (seconds) and geometry.
BOUNCE_APEX = 0.8  # apex height / free height above the floor
DEFAULT_GAP = 0.75  # assumed gap before/after a lone bounce or wall hit
PULSE_SECONDS = 0.5  # length of one swell
PULSE_MAX_SCALE = 1.5  # object size at the top of a swell / base size
PULSE_ONSET = 0.6  # swell envelope at its onset (so the event frame is already enlarged)
BLINK_ON_SECONDS = 0.5  # longest time an object stays visible after it appears

# Event sounds. Amplitudes are linear peaks of each component before mixing.
KNOCK_AMP, KNOCK_DECAY, KNOCK_CLICK = 0.5, 0.060, 0.25
CLACK_AMP, CLACK_DECAY, CLACK_CLICK = 0.45, 0.025, 0.35
CLICK_DECAY = 0.002
CLICK_SECONDS = 10 * CLICK_DECAY
BEEP_AMP, BEEP_SECONDS = 0.3, 0.15
SWELL_AMP = 0.3
ATTACK_SECONDS = 0.001  # knocks/clacks; beeps and swells use 3 ms and 5 ms
RELEASE_SECONDS = 0.01
SOUND_SECONDS = 0.3  # knocks and clacks are cut (with a release) after this
MAX_AMBIENCE = 0.1

# Talker. Voice f0 by voice name; formants (Hz) F1..F3 per vowel (adult averages).
VOICES: dict[str, float] = {"low": 120.0, "high": 220.0}
VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
FORMANT_BANDWIDTHS: tuple[float, float, float] = (80.0, 100.0, 150.0)
# Consonant -> (manner, centre frequency of its noise burst in Hz).
CONSONANTS: dict[str, tuple[str, float]] = {
    "b": ("voiced_stop", 700.0),
    "d": ("voiced_stop", 3500.0),
    "g": ("voiced_stop", 1800.0),
    "p": ("voiceless_stop", 700.0),
    "t": ("voiceless_stop", 3500.0),
    "k": ("voiceless_stop", 1800.0),
    "m": ("nasal", 1100.0),
    "n": ("nasal", 1700.0),
    "s": ("fricative", 5500.0),
}
VOICE_AMP = 0.5
MAX_SYLLABLE_SECONDS = 1.0
SKIN_RGB: tuple[int, int, int] = (225, 180, 140)
EYE_RGB: tuple[int, int, int] = (30, 30, 40)
MOUTH_RGB: tuple[int, int, int] = (110, 25, 35)

# Split rule: training draws sample_spec(seed) with seed >= TRAIN_SEED_START; smaller seeds are
# reserved for evaluation. sample_spec never draws these (shape, colour, motion) triples, so they
# appear only in the held-out file (compositional generalisation: each pair is still seen).
TRAIN_SEED_START = 1_000_000
HELDOUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("triangle", "purple", "pulse"),
    ("square", "yellow", "bounce"),
    ("circle", "white", "slide"),
    ("triangle", "green", "blink"),
    ("square", "red", "pulse"),
    ("circle", "blue", "blink"),
)

# Frame/sample boundary tolerance: times within this of a boundary count as on it.
TIME_EPS = 1e-9
