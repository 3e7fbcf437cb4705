"""Visual detectors for the synthetic world (training/data/world/SPEC.md): objects found by colour
segmentation against the background, their colour, shape, motion and events, and the talker's mouth.

Pure numpy. Every length threshold is a fraction of the frame size, so the detectors read clips at
whatever resolution a model generates. Audio detectors live in `benchmarks.audio` and are
re-exported here so one module holds every detector.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from training.data.world.constants import BACKGROUNDS, EYE_RGB, FLOOR_RGB, MOUTH_RGB, PALETTE, SKIN_RGB
from training.data.world.motion import floor_top
from training.data.world.raster import coverage

from .audio import (  # noqa: F401  (re-exported: one import point for every detector)
    Onset,
    detect_onsets,
    frame_envelope,
    onset_envelope,
    pitch_class,
    sound_motion,
    voice_class,
)

COLOURS: tuple[str, ...] = tuple(PALETTE)
# Scene parts that are not objects: a pixel nearest to one of these is never an object pixel.
SCENE_PARTS: dict[str, tuple[int, int, int]] = {"floor": FLOOR_RGB, "skin": SKIN_RGB, "eye": EYE_RGB, "mouth": MOUTH_RGB}
_LINE_COLOURS = np.asarray(list(PALETTE.values()) + list(SCENE_PARTS.values()), dtype=np.float32)  # [10, 3]

BG_SNAP = 40.0  # RGB distance within which the clip's median colour is taken to be a named background
MIN_ALPHA = 0.12  # coverage below which a pixel is background (all colour lines meet at the background)
LINE_TOLERANCE = 45.0  # RGB distance from a background->colour line still counted as that colour
MIN_AREA = 0.005  # smallest object area / frame area (a quarter of a small triangle)
WINDOW = 0.3  # half-size of the window around an object's median point / frame size (largest object: 0.24)
MIN_FILL = 0.3  # a blob filling less of its bounding box is scattered pixels, not an object (triangle: 0.5)
VISIBLE_SHARE = 0.35  # an object is visible in frames with at least this share of its largest area
EDGE_COVERAGE = 0.02  # row/column coverage that counts as part of the object's footprint
TALKER_SKIN = 0.15  # skin share of the frame above which the clip shows the talker
# Gaussian blurs (sigma / frame size; 0 to 3 px at 64 px) a shape template may carry: a codec's or a
# model's frames round corners and spread edges, so a shape is read as the best fit over blurs.
SHAPE_BLURS = (0.0, 0.75 / 64, 1.5 / 64, 2.25 / 64, 3.0 / 64)
# Half-extent r of each shape from its area: circle pi r^2, square (2r)^2, triangle (base 2r, height 2r) 2 r^2.
_HALF_EXTENT = {"circle": lambda a: math.sqrt(a / math.pi), "square": lambda a: math.sqrt(a) / 2,
                "triangle": lambda a: math.sqrt(a / 2)}
MOTION_RANGE = 0.15  # centre travel / frame size that counts as sliding or bouncing
PULSE_AREA_RATIO = 1.5  # largest / smallest visible area of a pulsing object (2.25 at the top of a swell)
PULSE_JUMP = 1.4  # area ratio to the previous frame at a pulse onset (1.69 exactly, 1.23 the frame after)
CONTACT = 0.012  # distance to the floor or a wall / frame size that counts as touching
MOUTH_OPEN, MOUTH_RISE = 0.3, 0.2  # mouth opening (0..1) and its rise that mark a syllable's first frame
MOUTH_SLACK = 0.15  # a frame this much above the one before still counts as closing (pixel bias at 32 px)


def to_rgb255(frames: np.ndarray | torch.Tensor, name: str = "frames") -> np.ndarray:
    """uint8 (0..255) or float (0..1) frames `[T, H, W, 3]` -> float32 0..255."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape:
        raise ValueError(f"{name} must be an array [T, H, W, 3] with T, H, W >= 1; got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 0..255 or float 0..1, got dtype {x.dtype}")
    return np.clip(np.nan_to_num(x.astype(np.float32)), 0.0, 1.0) * 255.0


def estimate_background(rgb: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The clip's background colour and its name. Objects (and even the talker's head) cover less
    than half of the frame, so the per-channel median is the background."""
    step = max(1, rgb.shape[0] * rgb.shape[1] * rgb.shape[2] // 20_000)
    med = np.median(rgb.reshape(-1, 3)[::step], axis=0)
    names = list(BACKGROUNDS)
    dist = [float(np.linalg.norm(med - np.asarray(BACKGROUNDS[n], np.float32))) for n in names]
    best = int(np.argmin(dist))
    if dist[best] <= BG_SNAP:
        return np.asarray(BACKGROUNDS[names[best]], np.float32), names[best]
    return med.astype(np.float32), None


def segment(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label every pixel with the colour whose background->colour line it lies on.

    Anti-aliased pixels are `bg + a (colour - bg)`, so the projection `a` is the pixel's coverage
    and the distance to the line says whether it is that colour at all. Returns labels `[...]`
    (index into PALETTE, then SCENE_PARTS; -1 for background) and coverage `[...]` in 0..1.
    """
    flat = (rgb - bg).reshape(-1, 3)  # [N, 3]
    d = _LINE_COLOURS - bg  # [K, 3]
    dd = np.maximum((d * d).sum(-1), 1e-6)  # [K]
    labels = np.full(len(flat), -1, dtype=np.int64)
    alpha = np.zeros(len(flat), dtype=np.float32)
    # A pixel with coverage >= MIN_ALPHA on some line is at least that far from the background:
    # only those few pixels need the per-colour projection.
    cand = np.flatnonzero((flat * flat).sum(-1) >= (MIN_ALPHA ** 2) * dd.min() * 0.99)
    if len(cand):
        p = flat[cand]  # [M, 3]
        a = np.clip((p @ d.T) / dd, 0.0, 1.0)  # [M, K]
        resid2 = (p * p).sum(-1, keepdims=True) - 2 * a * (p @ d.T) + a * a * dd  # |p - a d|^2, [M, K]
        resid2 = np.where(a >= MIN_ALPHA, resid2, np.inf)
        best = resid2.argmin(-1)  # [M]
        rows = np.arange(len(best))
        ok = resid2[rows, best] <= LINE_TOLERANCE ** 2
        labels[cand[ok]] = best[ok]
        alpha[cand[ok]] = a[rows, best][ok]
    return labels.reshape(rgb.shape[:-1]), alpha.reshape(rgb.shape[:-1])


def _soft_extent(profile: np.ndarray) -> tuple[float, float]:
    """First and last edge (pixel units) of a coverage profile: a partly covered edge pixel with
    coverage c adds c of a pixel, so flat edges are found to sub-pixel accuracy."""
    idx = np.flatnonzero(profile > EDGE_COVERAGE)
    if len(idx) == 0:
        return float("nan"), float("nan")
    i0, i1 = int(idx[0]), int(idx[-1])
    return i0 + 1.0 - float(profile[i0]), i1 + float(profile[i1])


@dataclass
class ObjectTrack:
    """One detected object: per-frame geometry (NaN where invisible, area 0 there) and what it is."""

    color: str
    area: np.ndarray  # [T] coverage-weighted pixels
    cx: np.ndarray  # [T] centroid x, px
    cy: np.ndarray  # [T]
    top: np.ndarray  # [T] soft edges, px
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    visible: np.ndarray  # [T] bool
    fill: float  # median area / bounding-box area
    shape: str = ""
    motion: str = ""
    events: list[int] = field(default_factory=list)  # frames
    strength: np.ndarray | None = None  # [T] visual event strength in 0..1 (for sync correlation)


@dataclass
class VideoDetection:
    fps: float
    frames: int
    height: int
    width: int
    background: str | None
    talker: bool
    objects: list[ObjectTrack]
    mouth: np.ndarray | None  # [T] opening 0..1 (talker clips)
    mouth_onsets: list[int]  # frames where a syllable starts on the lips

    def find(self, color: str) -> ObjectTrack | None:
        return next((o for o in self.objects if o.color == color), None)

    def visual_events(self) -> list[int]:
        """Frames of every visual event: object events, or the talker's mouth onsets."""
        if self.talker:
            return list(self.mouth_onsets)
        return sorted(f for o in self.objects for f in o.events)

    def strength(self) -> np.ndarray:
        """[T] visual event signal: summed object event strengths, or the mouth opening."""
        if self.talker and self.mouth is not None:
            return self.mouth.copy()
        out = np.zeros(self.frames)
        for o in self.objects:
            if o.strength is not None:
                out += o.strength
        return out


def _weighted_median(weights: np.ndarray) -> int:
    c = np.cumsum(weights)
    return int(np.searchsorted(c, 0.5 * c[-1]))


def _window(alpha: np.ndarray, reach: int) -> tuple[int, int, np.ndarray]:
    """Top row, left column and coverage of the window of half-size `reach` around a frame's
    coverage median point `[H, W]`: the pixels that belong to the object in that frame."""
    my, mx = _weighted_median(alpha.sum(1)), _weighted_median(alpha.sum(0))
    y0, x0 = max(0, my - reach), max(0, mx - reach)
    return y0, x0, alpha[y0: my + reach + 1, x0: mx + reach + 1]


def _shape_frames(visible: np.ndarray, left: np.ndarray, right: np.ndarray, top: np.ndarray, w: int) -> np.ndarray:
    """[T] bool: the frames a shape is read from: visible ones clear of the frame's sides and top
    (a cut-off object has the wrong outline), or every visible one when none is."""
    inside = visible & (left > 0.5) & (right < w - 0.5) & (top > 0.5)
    return inside if inside.any() else visible


def _track(color: str, alpha: np.ndarray, size: int) -> ObjectTrack | None:
    """An object of one colour from its coverage `[T, H, W]`, or None when no frame holds a compact
    blob of it. Per frame, only pixels within WINDOW x size of the coverage's median point count,
    so stray pixels elsewhere (generation noise) neither bend the geometry nor fake an object;
    a frame counts as showing the object when that blob is big enough and fills at least
    MIN_FILL of its bounding box."""
    t, h, w = alpha.shape
    reach = int(math.ceil(WINDOW * size))
    min_area = MIN_AREA * h * w
    nan = np.full(t, np.nan)
    area = np.zeros(t)
    cx, cy, top, bottom, left, right = (nan.copy() for _ in range(6))
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    for j in np.flatnonzero(alpha.sum(axis=(1, 2)) >= min_area):
        y0, x0, a = _window(alpha[j], reach)
        area[j] = float(a.sum())
        if area[j] <= 0:
            continue
        cx[j] = x0 + float((a.sum(0) * xs[: a.shape[1]]).sum() / area[j])
        cy[j] = y0 + float((a.sum(1) * ys[: a.shape[0]]).sum() / area[j])
        t0, b0 = _soft_extent(a.max(axis=1))
        l0, r0 = _soft_extent(a.max(axis=0))
        top[j], bottom[j], left[j], right[j] = y0 + t0, y0 + b0, x0 + l0, x0 + r0
    box = (right - left) * (bottom - top)
    fill_all = np.where(box > 0, area / np.where(box > 0, box, 1.0), np.nan)
    shown = (area >= min_area) & (np.nan_to_num(fill_all) >= MIN_FILL)
    if not shown.any():
        return None
    visible = shown & (area >= VISIBLE_SHARE * area[shown].max())
    for arr in (cx, cy, top, bottom, left, right, fill_all):
        arr[~visible] = np.nan
    pick = fill_all[_shape_frames(visible, left, right, top, w)]
    fill = float(np.nanmedian(pick))
    return ObjectTrack(color, np.where(visible, area, 0.0), cx, cy, top, bottom, left, right, visible, fill)


@lru_cache(maxsize=256)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] Gaussian blur along one axis (zero outside): `G @ x` blurs the rows of x."""
    d = np.arange(n, dtype=np.float32)
    k = np.exp(-0.5 * ((d[:, None] - d[None, :]) / sigma) ** 2)
    g = k / k.sum(1, keepdims=True).max()  # one normalisation: mass leaves at the window's edge
    g.setflags(write=False)  # cached and shared between calls
    return g


def classify_shape(track: ObjectTrack, alpha: np.ndarray, size: int) -> str:
    """The world shape that best explains the object's coverage `alpha` `[T, H, W]` (its colour
    only): per frame, each shape is drawn with the object's area and centroid, blurred by each of
    SHAPE_BLURS, and scored by its least squared error (over the area); frames touching the
    frame's edge are left out when others exist, as for the fill. The bounding-box fill alone
    (square 1.0, circle 0.785, triangle 0.5) does not survive blur: through the shipped video
    codec a small square fills 0.50-0.79 of its box and a small circle 0.51-0.70."""
    h, w = alpha.shape[1:]
    frames = np.flatnonzero(_shape_frames(track.visible, track.left, track.right, track.top, w))
    if len(frames) == 0:
        return ""
    reach = int(math.ceil(WINDOW * size))
    error = dict.fromkeys(_HALF_EXTENT, 0.0)
    for j in frames:
        y0, x0, a = _window(alpha[j], reach)
        box = (y0, y0 + a.shape[0], x0, x0 + a.shape[1])
        blurs = [(_blur_matrix(a.shape[0], b * size), _blur_matrix(a.shape[1], b * size)) for b in SHAPE_BLURS if b > 0]
        for shape, r_of in _HALF_EXTENT.items():
            r = r_of(track.area[j])
            # a triangle's centroid lies r/3 below the centre `coverage` draws it around
            cy = track.cy[j] - r / 3 if shape == "triangle" else track.cy[j]
            t = coverage(shape, np.array([track.cx[j]]), np.array([cy]), np.array([r]), max(h, w), box)[0]  # [h', w']
            fits = [t] + [gy @ t @ gx.T for gy, gx in blurs]
            error[shape] += min(float(((f - a) ** 2).sum()) for f in fits) / track.area[j]
    return min(error, key=lambda k: error[k])


def classify_motion(o: ObjectTrack, size: int) -> str:
    """Blink if it disappears, else whichever of sliding, bouncing or pulsing varies most."""
    vis = o.visible
    if vis.any() and not vis.all():
        return "blink"
    x_range = (np.nanmax(o.cx) - np.nanmin(o.cx)) / size
    y_range = (np.nanmax(o.bottom) - np.nanmin(o.bottom)) / size
    lo, hi = np.percentile(o.area[vis], [5, 95])
    ratio = hi / max(lo, 1e-6)
    scores = {"slide": x_range / MOTION_RANGE, "bounce": y_range / MOTION_RANGE,
              "pulse": (ratio - 1.0) / (PULSE_AREA_RATIO - 1.0)}
    return max(scores, key=lambda k: scores[k])


def _peaks(score: np.ndarray, ok: np.ndarray) -> list[int]:
    """Frames where `ok` holds, keeping one frame (the highest score, earliest on ties) per run of
    consecutive frames."""
    out: list[int] = []
    run: list[int] = []
    for j in range(len(score) + 1):
        if j < len(score) and ok[j]:
            run.append(j)
            continue
        if run:
            out.append(max(run, key=lambda i: (score[i], -i)))
            run = []
    return out


def _second_diff(x: np.ndarray) -> np.ndarray:
    d = np.zeros_like(x)
    d[1:-1] = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return np.nan_to_num(d)


def object_events(o: ObjectTrack, size: int, width: int, floor: int) -> tuple[list[int], np.ndarray]:
    """Event frames of the object's motion and its event-strength signal `[T]`.

    bounce: the bottom reaches the floor at a local maximum; slide: the footprint reaches a side
    wall; blink: the first visible frame of each appearance; pulse: the area jumps by PULSE_JUMP
    over the previous frame. Strength peaks on those frames (bottom deceleration, horizontal
    reversal, area growth), scaled to a peak of 1.
    """
    t = len(o.area)
    tol = max(0.75, CONTACT * size)
    vis = o.visible
    prev_area = np.concatenate([[0.0], o.area[:-1]])
    growth = np.maximum(0.0, o.area - prev_area)
    if o.motion == "bounce":
        b = np.where(vis, o.bottom, -np.inf)
        left_ok = np.concatenate([[True], b[1:] >= b[:-1]])
        right_ok = np.concatenate([b[:-1] >= b[1:], [True]])
        events = _peaks(b, vis & (b >= floor - tol) & left_ok & right_ok)
        strength = np.maximum(0.0, -_second_diff(np.where(vis, o.bottom, np.nan)))
    elif o.motion == "slide":
        wall = np.where(vis, np.maximum(-o.left, o.right - width), -np.inf)  # 0 at contact
        events = _peaks(wall, vis & (wall >= -tol))
        strength = np.abs(_second_diff(np.where(vis, o.cx, np.nan)))
    elif o.motion == "blink":
        was = np.concatenate([[False], vis[:-1]])
        events = [int(j) for j in np.flatnonzero(vis & ~was)]
        strength = growth
    else:  # pulse: before the clip the object had its resting (smallest) size
        prev = np.concatenate([[np.nanmin(np.where(vis, o.area, np.nan))], o.area[:-1]])
        jump = o.area / np.maximum(prev, 1e-6)
        events = _peaks(jump, vis & (jump >= PULSE_JUMP))
        strength = np.maximum(0.0, o.area - prev)
    peak = strength.max() if t else 0.0
    return events, (strength / peak if peak > 0 else strength)


def mouth_opening(rgb: np.ndarray) -> np.ndarray:
    """[T] talker mouth opening 0..1 from the mouth ellipse's area against the skin.

    The mouth is an ellipse of half-width 0.12 s and half-height (0.012 + 0.075 m) s (s = frame
    size), so its coverage-weighted area gives m back.
    """
    _, h, w, _ = rgb.shape
    s = float(h)
    r0, r1 = max(0, int(0.63 * s - 0.09 * s) - 2), min(h, int(0.63 * s + 0.09 * s) + 3)
    c0, c1 = max(0, int(0.5 * w - 0.12 * w) - 2), min(w, int(0.5 * w + 0.12 * w) + 3)
    region = rgb[:, r0:r1, c0:c1]  # [T, h', w', 3]
    skin, mouth = np.asarray(SKIN_RGB, np.float32), np.asarray(MOUTH_RGB, np.float32)
    d = mouth - skin
    p = region - skin
    a = np.clip((p * d).sum(-1) / float((d * d).sum()), 0.0, 1.0)  # [T, h', w']
    resid = np.linalg.norm(p - a[..., None] * d, axis=-1)
    area = np.where(resid <= LINE_TOLERANCE, a, 0.0).sum(axis=(1, 2))  # [T]
    half_h = area / (np.pi * 0.12 * w)
    return np.clip((half_h / s - 0.012) / 0.075, 0.0, 1.5)


def mouth_onsets(mouth: np.ndarray, fps: float) -> list[int]:
    """Frames where the lips open for a syllable: open enough, risen from a frame that was itself
    closing (a local minimum: a consonant-to-vowel rise inside a syllable starts from an opening
    frame), and at least a quarter second after the previous onset (syllables are >= 0.375 s apart)."""
    out: list[int] = []
    gap = max(1, int(round(0.25 * fps)))
    padded = np.concatenate([[0.0, 0.0], mouth])
    for j, m in enumerate(mouth):
        prev, prev2 = padded[j + 1], padded[j]
        if m >= MOUTH_OPEN and m - prev >= MOUTH_RISE and prev <= prev2 + MOUTH_SLACK and (not out or j - out[-1] >= gap):
            out.append(j)
    return out


def detect_video(frames: np.ndarray | torch.Tensor, fps: float) -> VideoDetection:
    """Everything visual in a clip: background, talker or objects (with shape, motion and event
    frames), mouth opening and syllable onsets."""
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    rgb = to_rgb255(frames)
    t, h, w, _ = rgb.shape
    bg, bg_name = estimate_background(rgb)
    skin = np.abs(rgb[:, ::2, ::2] - np.asarray(SKIN_RGB, np.float32)).max(-1) <= LINE_TOLERANCE  # subsampled
    if float(skin.mean()) >= TALKER_SKIN:
        mouth = mouth_opening(rgb)
        return VideoDetection(fps, t, h, w, bg_name, True, [], mouth, mouth_onsets(mouth, fps))
    floor = floor_top(h)
    labels, alpha = segment(rgb[:, :floor], bg)  # the floor band never holds an object pixel
    objects: list[ObjectTrack] = []
    for k, color in enumerate(COLOURS):
        a = np.where(labels == k, alpha, 0.0)  # [T, floor, W]
        track = _track(color, a, h)
        if track is None:
            continue
        track.shape = classify_shape(track, a, h)
        track.motion = classify_motion(track, h)
        track.events, track.strength = object_events(track, h, w, floor)
        objects.append(track)
    return VideoDetection(fps, t, h, w, bg_name, False, objects, None, [])


def colour_areas(frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, str | None]:
    """Per-frame coverage area of each palette colour `[T, 6]` (order of PALETTE) and the
    background name: the colour content of a clip, for identity checks against a given image."""
    return colour_areas_rgb255(to_rgb255(frames))


def colour_areas_rgb255(rgb: np.ndarray) -> tuple[np.ndarray, str | None]:
    """`colour_areas` of frames already converted by `to_rgb255`."""
    bg, name = estimate_background(rgb)
    labels, alpha = segment(rgb, bg)
    out = np.stack([np.where(labels == k, alpha, 0.0).sum(axis=(1, 2)) for k in range(len(COLOURS))], axis=-1)
    return out, name
