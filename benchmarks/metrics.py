"""Per-clip quality metrics against a scene spec's ground truth: AV sync (event offsets and a
SyncNet-style lag correlation), semantic accuracy per attribute, and TI2V identity.

Clip scores are dicts of plain numbers; `Tally` pools them over clips into the figures a task
reports. Detection comes from `benchmarks.detect`; nothing here reads pixels or samples itself
except `identity`.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from training.data.world import SceneSpec
from training.data.world.motion import track

from .detect import COLOURS, MIN_AREA, Onset, VideoDetection, colour_areas_rgb255, frame_envelope, onset_envelope, to_rgb255

SYNC_MAX_LAG = 0.5  # s: lags searched by the correlation (SyncNet searches +-15 frames at 25 fps)


# -- sync -------------------------------------------------------------------------------------
def event_offsets(video: VideoDetection, onsets: list[Onset]) -> list[float]:
    """For every detected visual event: (nearest audio onset time) - (event frame time), seconds;
    +inf when the clip has no audio onset at all."""
    times = np.array([o.time for o in onsets])
    out = []
    for frame in video.visual_events():
        t = frame / video.fps
        out.append(float(times[np.abs(times - t).argmin()] - t) if len(times) else math.inf)
    return out


def onset_offsets(video: VideoDetection, onsets: list[Onset]) -> list[float]:
    """The other direction, so audio full of onsets cannot look in sync: for every audio onset,
    (onset time) - (nearest visual event time), seconds; +inf when the clip has no visual event."""
    times = np.array(video.visual_events(), dtype=np.float64) / video.fps
    return [float(o.time - times[np.abs(times - o.time).argmin()]) if len(times) else math.inf for o in onsets]


def lag_correlation(visual: np.ndarray, audio: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised cross-correlation `[2 max_lag + 1]` of two per-frame signals at lags -max_lag ..
    max_lag; lag L compares visual frame j with audio frame j + L (L > 0: audio late). Both are
    made zero-mean over the clip and the norms are of the whole signals, so a lag that slides
    events off the clip scores lower rather than being renormalised up."""
    v = np.asarray(visual, np.float64) - np.mean(visual)
    a = np.asarray(audio, np.float64) - np.mean(audio)
    norm = float(np.linalg.norm(v) * np.linalg.norm(a))
    out = np.zeros(2 * max_lag + 1)
    if norm <= 1e-12:
        return out
    n = len(v)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        lo, hi = max(0, -lag), min(n, n - lag)
        if hi > lo:
            out[i] = float(v[lo:hi] @ a[lo + lag: hi + lag]) / norm
    return out


def sync_confidence(visual: np.ndarray, audio: np.ndarray, fps: float) -> tuple[float, float]:
    """SyncNet-style (confidence, lag in frames): the correlation's peak minus its median over lags
    within +-SYNC_MAX_LAG (0 .. 2; real clips ~1, mismatched pairs ~0.5), and the lag of the peak
    (NaN when a signal is flat)."""
    max_lag = max(1, int(round(SYNC_MAX_LAG * fps)))
    corr = lag_correlation(visual, audio, max_lag)
    if not np.any(corr):
        return 0.0, math.nan
    best = int(corr.argmax())
    return float(corr[best] - np.median(corr)), float(best - max_lag)


def clip_sync(video: VideoDetection, onsets: list[Onset], audio: np.ndarray | torch.Tensor, sample_rate: int) -> dict:
    """Sync of one clip: event offsets, and the correlation of the visual event signal with the
    audio onset envelope (objects) or of the mouth opening with the voice's RMS (talker)."""
    visual = video.strength()
    if video.talker:
        envelope = frame_envelope(audio, sample_rate, video.fps, video.frames)
    else:
        envelope = onset_envelope(onsets, video.fps, video.frames)
    conf, lag = sync_confidence(visual, envelope, video.fps)
    return {"offsets": event_offsets(video, onsets), "onset_offsets": onset_offsets(video, onsets), "confidence": conf, "lag": lag, "talker": video.talker,
            "fps": video.fps}


# -- semantics ----------------------------------------------------------------------------------
def _mean_x(spec: SceneSpec, i: int) -> float:
    """Ground-truth mean centre x of object i as a fraction of the frame width."""
    times = np.arange(spec.num_frames) / spec.fps
    return float(track(spec.objects[i], times, size=spec.size, seconds=spec.seconds).cx.mean() / spec.size)


def match_objects(spec: SceneSpec, video: VideoDetection) -> list[int | None]:
    """Detected object index for each spec object: same colour first; objects whose colour was
    not found take the remaining detection nearest in mean x (their colour then counts as wrong)."""
    found = {o.color: k for k, o in enumerate(video.objects)}
    out: list[int | None] = [found.get(o.color) for o in spec.objects]
    free = [k for k in range(len(video.objects)) if k not in out]
    missing = [i for i, k in enumerate(out) if k is None]
    if missing and free:
        best, best_cost = None, math.inf
        for perm in itertools.permutations(free, min(len(missing), len(free))):
            cost = sum(abs(float(np.nanmean(video.objects[k].cx)) / video.width - _mean_x(spec, i))
                       for i, k in zip(missing, perm))
            if cost < best_cost:
                best, best_cost = perm, cost
        for i, k in zip(missing, best or ()):
            out[i] = k
    return out


def video_semantics(spec: SceneSpec, video: VideoDetection) -> dict[str, list[int]]:
    """attribute -> [correct, total] for the visual attributes of one clip."""
    score: dict[str, list[int]] = {"talker": [int(video.talker == (spec.talker is not None)), 1]}
    if spec.talker is not None:
        score["count"] = [int(video.talker and len(video.mouth_onsets) == len(spec.talker.times)), 1]
        return score
    matched = match_objects(spec, video) if not video.talker else [None] * len(spec.objects)
    for key in ("colour", "shape", "motion", "count"):
        score[key] = [0, len(spec.objects)]
    for obj, k in zip(spec.objects, matched):
        if k is None:
            continue
        det = video.objects[k]
        score["colour"][0] += int(det.color == obj.color)
        score["shape"][0] += int(det.shape == obj.shape)
        score["motion"][0] += int(det.motion == obj.motion)
        score["count"][0] += int(len(det.events) == len(obj.times))
    score["extra_objects"] = [len(video.objects) - sum(k is not None for k in matched), 1]
    return score


def motion_pairs(spec: SceneSpec, video: VideoDetection) -> list[tuple[str, str]]:
    """(asked, detected) motion per spec object, "missing" when no detected object matches it:
    the confusion behind acc_motion (e.g. whether wrong motions are one class, such as objects
    that flicker and so read as "blink"). Talker scenes have no object motions."""
    if spec.talker is not None:
        return []
    matched = match_objects(spec, video) if not video.talker else [None] * len(spec.objects)
    return [(obj.motion, "missing" if k is None else video.objects[k].motion) for obj, k in zip(spec.objects, matched)]


def audio_semantics(spec: SceneSpec, onsets: list[Onset]) -> dict[str, list[int]]:
    """attribute -> [correct, total] for the audio of one clip. Onsets are assigned to objects by
    pitch class. pitch: onsets whose pitch is one of the scene's colours (an object that made no
    sound counts as one wrong); sound: assigned onsets whose sound type fits the object's motion;
    audio_count: objects with the right number of onsets. For the talker, pitch is the voice class
    (low/high) and audio_count the number of syllables."""
    if spec.talker is not None:
        return {"pitch": [sum(o.voice == spec.talker.voice for o in onsets), max(1, len(onsets))],
                "audio_count": [int(len(onsets) == len(spec.talker.times)), 1]}
    colours = {o.color: o for o in spec.objects}
    silent = [o for o in spec.objects if not any(x.color == o.color for x in onsets)]
    assigned = [x for x in onsets if x.color in colours]
    return {
        "pitch": [len(assigned), len(onsets) + len(silent)],
        "sound": [sum(x.sound == colours[x.color].motion for x in assigned), len(assigned) + len(silent)],
        "audio_count": [sum(sum(x.color == o.color for x in onsets) == len(o.times) for o in spec.objects),
                        len(spec.objects)],
    }


# -- identity (TI2V / TI2AV) --------------------------------------------------------------------
def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """[T, H, W, 3] -> [T, height, width, 3] by area averaging (or bilinear when enlarging)."""
    if rgb.shape[1:3] == (height, width):
        return rgb
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)  # [T, 3, H, W]
    mode = "area" if rgb.shape[1] >= height else "bilinear"
    y = F.interpolate(x, size=(height, width), mode=mode)
    return y.permute(0, 2, 3, 1).numpy()


def _colour_set(areas: np.ndarray, pixels: int) -> set[str]:
    return {c for c, a in zip(COLOURS, areas) if a >= MIN_AREA * pixels}


def identity(frames: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor) -> dict[str, float]:
    """How well a generated clip keeps the given first frame.

    psnr: first generated frame vs the image (dB, 0..255 scale; the clip is resized to the image
    when sizes differ). background: same named background. first_colour: Jaccard index of the
    object colours in the first frame and in the image (1 when both have none). later_colour: of
    the object-coloured pixels in the later frames, the share whose colour is one the image shows
    (NaN when the image shows no object, e.g. a blink object not yet visible).
    """
    img = to_rgb255(np.asarray(image)[None] if np.ndim(image) == 3 else image, "image")[:1]
    rgb = _resize(to_rgb255(frames), img.shape[1], img.shape[2])
    mse = float(np.mean((rgb[0] - img[0]) ** 2))
    psnr = 10.0 * math.log10(255.0 ** 2 / mse) if mse > 1e-10 else 100.0
    img_areas, img_bg = colour_areas_rgb255(img)
    gen_areas, gen_bg = colour_areas_rgb255(rgb)
    pixels = img.shape[1] * img.shape[2]
    want, first = _colour_set(img_areas[0], pixels), _colour_set(gen_areas[0], pixels)
    union = want | first
    later = gen_areas[1:].sum(axis=0)  # [6]
    if not want:
        later_share = math.nan
    else:
        total = float(later.sum())
        later_share = float(sum(a for c, a in zip(COLOURS, later) if c in want) / total) if total > 0 else 0.0
    return {"psnr": psnr, "background": float(img_bg is not None and img_bg == gen_bg),
            "first_colour": len(want & first) / len(union) if union else 1.0, "later_colour": later_share}


def scene_kind(spec: SceneSpec) -> str:
    """What makes a clip's sounds: "talker", or its objects' motions joined by "+" (sorted)."""
    return "talker" if spec.talker is not None else "+".join(sorted(o.motion for o in spec.objects))


# -- pooling ------------------------------------------------------------------------------------
def _frames_key(k: str) -> float:
    return math.inf if k == "none" else float(k)


class Tally:
    """Pools per-clip scores into one task's figures."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.offsets: list[float] = []
        self.frame_periods: list[float] = []
        self.onset_hits: list[bool] = []
        self.kinds: list[str] = []  # the scene kind of each offset's clip
        self.conf: dict[str, list[float]] = defaultdict(list)
        self.lags: dict[str, list[float]] = defaultdict(list)
        self.ident: dict[str, list[float]] = defaultdict(list)
        self.motions: Counter[tuple[str, str]] = Counter()
        self.clips = 0

    def add_semantics(self, score: dict[str, list[int]]) -> None:
        for k, (c, t) in score.items():
            self.counts[k][0] += c
            self.counts[k][1] += t

    def add_sync(self, sync: dict, kind: str = "") -> None:
        """`kind`: the clip's `scene_kind` ("" when unknown, left out of the per-kind figures)."""
        self.offsets += sync["offsets"]
        self.kinds += [kind] * len(sync["offsets"])
        self.frame_periods += [1.0 / sync["fps"]] * len(sync["offsets"])
        self.onset_hits += [abs(x) < 0.5 / sync["fps"] for x in sync["onset_offsets"]]
        key = "talker" if sync["talker"] else "objects"
        self.conf[key].append(sync["confidence"])
        self.lags[key].append(sync["lag"])

    def add_motions(self, pairs: list[tuple[str, str]]) -> None:
        self.motions.update(pairs)

    def add_identity(self, ident: dict[str, float]) -> None:
        for k, v in ident.items():
            self.ident[k].append(v)

    def summary(self) -> dict[str, float | int | dict[str, int] | None]:
        """Figures (a key is absent when nothing fed it):
        acc_<attribute>: pooled accuracy (talker, colour, shape, motion, count; pitch, sound,
          audio_count); extra_objects: detected objects the spec does not have, per clip;
        sync_events: visual events scored; sync_offset_ms: mean |nearest onset - event| over events
          with any onset; sync_in_frame: share of events whose nearest onset is within half a frame
          (it falls on the frame that shows the event; clips without onsets count as misses);
          sync_within_1_frame: share within one frame period (+1 ms); sync_onsets_in_frame: share of
          onsets within half a frame of a visual event (penalises audio full of onsets);
          sync_offset_frames: {"k": events} over the signed nearest-onset offset in frame periods,
          rounded (+ = audio late; "none": the clip has no onset), where the misses lie;
          sync_onsets_per_event: audio onsets per visual event (1 with as many onsets as events);
          sync_by_kind: {scene kind: {"events", "within_1_frame"}} (`scene_kind`; a two-object
          clip's event may take the other object's onset as its nearest, so one-object kinds are
          the strict reading); sync_one_object_within_1_frame: within one frame pooled over them;
        sync_conf / sync_lag_frames / sync_lag0_share: mean SyncNet-style confidence, mean lag of
          its peak (frames, + = audio late) and share of clips peaking at lag 0; talker_conf and
          talker_lag_frames: the same over talker clips (mouth opening vs voice RMS);
        id_psnr, id_background, id_first_colour, id_later_colour: mean identity figures;
        motion_confusion: {"asked->detected": objects} over every scored object (`motion_pairs`)."""
        out: dict[str, float | int | None] = {"clips": self.clips}
        for k, (c, t) in sorted(self.counts.items()):
            if k == "extra_objects":
                out["extra_objects"] = c / max(t, 1)
            elif t:
                out[f"acc_{k}"] = c / t
        if self.offsets:
            off = np.array(self.offsets)
            period = np.array(self.frame_periods)
            finite = np.isfinite(off)
            out["sync_events"] = int(len(off))
            out["sync_offset_ms"] = float(np.mean(np.abs(off[finite])) * 1000) if finite.any() else None
            out["sync_in_frame"] = float(np.mean(np.abs(off) < 0.5 * period))
            hit = np.abs(off) <= period + 1e-3  # within one frame period (+1 ms)
            out["sync_within_1_frame"] = float(np.mean(hit))
            steps = [str(int(k)) if math.isfinite(k) else "none" for k in np.round(off / period)]
            out["sync_offset_frames"] = {k: steps.count(k) for k in sorted(set(steps), key=_frames_key)}
            out["sync_onsets_per_event"] = len(self.onset_hits) / len(off)
            kinds = np.array(self.kinds)
            named = sorted({k for k in self.kinds if k})
            if named:
                out["sync_by_kind"] = {k: {"events": int((kinds == k).sum()),
                                           "within_1_frame": float(hit[kinds == k].mean())} for k in named}
            one = [k for k in named if k != "talker" and "+" not in k]
            if one:
                out["sync_one_object_within_1_frame"] = float(hit[np.isin(kinds, one)].mean())
        if self.onset_hits:
            out["sync_onsets_in_frame"] = float(np.mean(self.onset_hits))
        both = self.conf["objects"] + self.conf["talker"]
        if both:
            lags = np.array(self.lags["objects"] + self.lags["talker"])
            out["sync_conf"] = float(np.mean(both))
            out["sync_lag_frames"] = float(np.nanmean(lags)) if np.isfinite(lags).any() else None
            out["sync_lag0_share"] = float(np.mean(lags == 0))
        if self.conf["talker"]:
            out["talker_conf"] = float(np.mean(self.conf["talker"]))
            lags = np.array(self.lags["talker"])
            out["talker_lag_frames"] = float(np.nanmean(lags)) if np.isfinite(lags).any() else None
        for k, v in self.ident.items():
            arr = np.array(v, dtype=np.float64)
            out[f"id_{k}"] = float(np.nanmean(arr)) if np.isfinite(arr).any() else None
        if self.motions:
            out["motion_confusion"] = {f"{a}->{b}": n for (a, b), n in sorted(self.motions.items())}
        return out
