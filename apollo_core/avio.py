"""Audio/video files in and out: `AVClip` plus mp4, wav and image I/O through PyAV.

Conventions: frames are float32 `[T, H, W, 3]` in 0..1, waveforms float32 `[C, S]` in -1..1, both on
the CPU. Written mp4s are H.264 (libx264, yuv420p, tagged BT.709 limited range) with AAC audio whose
length is fitted to the video so both streams report the same duration. Every writer goes through a
temporary file in the target's folder and `os.replace`, so a failed write never leaves a half file.
Every reader turns PyAV/FFmpeg failures into `ValueError`s that name the file.
"""
from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PathLike = str | os.PathLike[str]

# Sample rates the AAC bitstream can signal; anything else must be resampled before writing.
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_FRAME = 1024  # samples per AAC frame: the granularity of the audio stream's length
_LAYOUTS = {1: "mono", 2: "stereo"}
_AUDIO_CHUNK = 1 << 16  # samples decoded/encoded per step when no video clock drives the chunking
_TIME_EPS = 1e-4  # seconds; absorbs rounding of container timestamps when matching frame times


@dataclass(frozen=True)
class AVClip:
    """A clip with video, audio or both.

    frames: `[T, H, W, 3]` float32 0..1, needs `fps`. waveform: `[C, S]` float32 -1..1, needs
    `sample_rate`. Floating inputs of other dtypes/devices are converted to float32 CPU.
    """

    frames: Tensor | None = None
    waveform: Tensor | None = None
    fps: float | None = None
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        if self.frames is None and self.waveform is None:
            raise ValueError("AVClip needs frames, a waveform or both; got neither")
        if self.frames is not None:
            f = self.frames
            if not isinstance(f, Tensor) or f.ndim != 4 or f.shape[-1] != 3 or 0 in f.shape:
                raise ValueError(f"AVClip frames must be a non-empty tensor [T, H, W, 3]; got {_describe(f)}")
            if not f.is_floating_point():
                raise ValueError(f"AVClip frames must be float in 0..1, got {f.dtype}; convert uint8 with x.float() / 255")
            if self.fps is None or not math.isfinite(self.fps) or self.fps <= 0:
                raise ValueError(f"AVClip with frames needs a positive fps, got {self.fps!r}")
            object.__setattr__(self, "frames", f.detach().to("cpu", torch.float32))
            object.__setattr__(self, "fps", float(self.fps))
        if self.waveform is not None:
            w = self.waveform
            if not isinstance(w, Tensor) or w.ndim != 2 or 0 in w.shape:
                raise ValueError(f"AVClip waveform must be a non-empty tensor [C, S]; got {_describe(w)}")
            if not w.is_floating_point():
                raise ValueError(f"AVClip waveform must be float in -1..1, got {w.dtype}; use int16 x.float() / 32768")
            _check_rate("AVClip sample_rate", self.sample_rate)
            object.__setattr__(self, "sample_rate", int(self.sample_rate))
            object.__setattr__(self, "waveform", w.detach().to("cpu", torch.float32))

    @property
    def duration(self) -> float:
        """Seconds on the video clock when there are frames (mp4 writing fits audio to it), else audio."""
        if self.frames is not None:
            return self.frames.shape[0] / self.fps
        return self.waveform.shape[1] / self.sample_rate


def write_mp4(
    path: PathLike,
    clip: AVClip,
    *,
    crf: int = 18,
    display_size: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `clip` as H.264 + AAC mp4; returns the path written.

    display_size: nearest-neighbour upscale so the larger side equals it (crisp pixels for tiny
    models). libx264 with yuv420p needs even sides, so an odd height/width (after any upscale) is
    padded by repeating the last row/column, never stretched. The audio is trimmed or zero-padded
    to exactly round(T / fps * sample_rate) samples. metadata: format-level string tags (any key,
    e.g. "comment" or "workflow"), readable back with `read_metadata`.
    """
    target = _target(path, ".mp4", "write_mp4")
    if clip.frames is None:
        raise ValueError(f"write_mp4({target}): the clip has no frames; write audio-only clips with write_wav")
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"write_mp4: crf must be an int in 0..51 (lower = better), got {crf!r}")
    tags = _check_metadata(metadata)
    T, H, W, _ = clip.frames.shape
    rows, cols = _display_index(H, W, display_size)
    rate = Fraction(clip.fps).limit_denominator(1001)
    waveform, sr = None, None
    if clip.waveform is not None:
        sr = clip.sample_rate
        if sr not in AAC_SAMPLE_RATES:
            raise ValueError(
                f"write_mp4: AAC cannot store sample_rate={sr}; resample first with "
                f"resample_audio(waveform, {sr}, 48000) (allowed: {AAC_SAMPLE_RATES})"
            )
        if clip.waveform.shape[0] not in _LAYOUTS:
            raise ValueError(f"write_mp4: audio must be mono or stereo, got {clip.waveform.shape[0]} channels; downmix")
        waveform = fit_audio(clip.waveform, round(T * sr / rate)).clamp(-1, 1).numpy()

    def write(tmp: Path) -> None:
        # use_metadata_tags: store any key (not just iTunes ones). The edit lists that hide AAC's
        # priming samples count in movie-timescale units, 1/1000 s by default, which would round
        # the audio's end to a millisecond; counting in samples keeps both durations exact.
        options = {"movflags": "use_metadata_tags+faststart", "movie_timescale": str(sr or 1000)}
        with av.open(str(tmp), "w", format="mp4", options=options) as out:
            out.metadata.update(tags)
            video = out.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = len(cols), len(rows), "yuv420p"
            video.options = {"crf": str(crf)}
            cc = video.codec_context  # tag what we encode so players do not guess BT.601 vs 709
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
            audio = None
            if waveform is not None:
                audio = out.add_stream("aac", rate=sr, layout=_LAYOUTS[waveform.shape[0]])
                audio.bit_rate = 64000 * waveform.shape[0]
            n = 0 if waveform is None else waveform.shape[1]
            for i in range(T):
                rgb = (clip.frames[i] * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[rows][:, cols]), format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
                frame.pts = i
                out.mux(video.encode(frame))
                if audio is not None:  # the audio that plays under frame i, so packets interleave
                    a, b = n * i // T, n * (i + 1) // T
                    if b > a:
                        out.mux(audio.encode(_audio_frame(waveform[:, a:b], sr, a)))
            out.mux(video.encode(None))
            if audio is not None:
                out.mux(audio.encode(None))

    return _atomic(target, write)


def write_wav(path: PathLike, waveform: Tensor, sample_rate: int) -> Path:
    """Write 16-bit PCM wav (clipped to -1..1); returns the path written."""
    target = _target(path, ".wav", "write_wav")
    clip = AVClip(waveform=waveform, sample_rate=sample_rate)  # validates shape, dtype and rate
    channels = clip.waveform.shape[0]
    if channels not in _LAYOUTS:
        raise ValueError(f"write_wav: waveform must be mono or stereo [C, S], got {channels} channels")
    # Scale by 32768 to match how decoders map s16 back to float, so a round trip is within 1 LSB.
    pcm = (clip.waveform.double() * 32768).round().clamp(-32768, 32767).to(torch.int16).numpy()

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="wav") as out:
            stream = out.add_stream("pcm_s16le", rate=sample_rate, layout=_LAYOUTS[channels])
            for a in range(0, pcm.shape[1], _AUDIO_CHUNK):
                chunk = np.ascontiguousarray(pcm[:, a : a + _AUDIO_CHUNK].T).reshape(1, -1)  # interleaved s16
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=_LAYOUTS[channels])
                frame.sample_rate, frame.pts = sample_rate, a
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))

    return _atomic(target, write)


def read_video(
    path: PathLike, *, fps: float | None = None, size: tuple[int, int] | None = None, max_seconds: float | None = None
) -> AVClip:
    """Decode the first video stream (and the first audio stream, if any) into an `AVClip`.

    fps: resample by sample-and-hold (output frame k shows the latest source frame at or before
    k / fps), which is what a player displays. size: (H, W), bilinear with antialiasing.
    max_seconds: keep only the first seconds. Audio, when present, is fitted to the video's length.
    """
    src = _source(path)
    if fps is not None and (not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"read_video({src}): fps must be positive, got {fps!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"read_video({src}): size must be (height, width) of positive ints, got {size!r}")
    _check_seconds(src, max_seconds)
    with _reading(src) as container:
        if not container.streams.video:
            raise ValueError(f"read_video({src}): the file has no video stream; use read_audio for audio-only files")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0) or None
        frames, video_start = _decode_frames(_decoded(container, stream, src), source_fps, fps, size, max_seconds)
        has_audio = bool(container.streams.audio)
        if has_audio:
            audio = container.streams.audio[0]
            audio_start = float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
    if not frames:
        raise ValueError(f"read_video({src}): the video stream holds no decodable frames")
    clip_fps = fps or source_fps
    if clip_fps is None:
        raise ValueError(f"read_video({src}): the video stream has no frame rate; pass fps=")
    video = torch.stack(frames)  # [T, H, W, 3]
    if not has_audio:
        return AVClip(frames=video, fps=clip_fps)
    seconds = video.shape[0] / clip_fps
    # Line the audio up with the first video frame by container timestamps: drop audio that
    # starts earlier, pad silence in front of audio that starts later.
    offset = video_start - audio_start
    waveform, sr = _read_audio_track(src, seconds + max(offset, 0.0))
    shift = round(offset * sr)
    waveform = waveform[:, shift:] if shift >= 0 else F.pad(waveform, (-shift, 0))
    waveform = fit_audio(waveform, round(seconds * sr))
    return AVClip(frames=video, waveform=waveform, fps=clip_fps, sample_rate=sr)


def read_audio(
    path: PathLike, *, sample_rate: int | None = None, mono: bool = False, max_seconds: float | None = None
) -> tuple[Tensor, int]:
    """Decode the first audio stream of a wav/mp3/flac/mp4/... file -> (waveform [C, S], rate)."""
    src = _source(path)
    if sample_rate is not None:
        _check_rate(f"read_audio({src}): sample_rate", sample_rate)
    _check_seconds(src, max_seconds)
    waveform, sr = _read_audio_track(src, max_seconds)
    if sample_rate is not None and sample_rate != sr:
        waveform = resample_audio(waveform, sr, sample_rate)
        sr = sample_rate
        if max_seconds is not None:
            waveform = waveform[:, : round(max_seconds * sr)]
    if mono:
        waveform = waveform.mean(0, keepdim=True)
    return waveform, sr


def read_image(path: PathLike) -> Tensor:
    """Decode a png/jpg (first frame of anything FFmpeg reads) -> float32 `[H, W, 3]` in 0..1.

    Alpha is dropped; 16-bit images keep their precision.
    """
    src = _source(path)
    with _reading(src) as container:
        if not container.streams.video:
            raise ValueError(f"read_image({src}): the file holds no image")
        frame = next(iter(container.decode(video=0)), None)
        if frame is None:
            raise ValueError(f"read_image({src}): the image could not be decoded")
        if max(c.bits for c in frame.format.components) > 8:
            return torch.from_numpy(frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0)
        return torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0


def read_metadata(path: PathLike) -> dict[str, str]:
    """The container's format-level tags (what write_mp4's `metadata` stored, plus muxer tags)."""
    src = _source(path)
    with _reading(src) as container:
        return dict(container.metadata)


def resample_audio(waveform: Tensor, from_sr: int, to_sr: int, *, zero_crossings: int = 16) -> Tensor:
    """Band-limited resampling `[C, S]` -> `[C, ceil(S * to_sr / from_sr)]` (Hann-windowed sinc).

    Works on any device/dtype. The low-pass sits at 99% of the lower Nyquist frequency so that
    downsampling does not alias.
    """
    if not isinstance(waveform, Tensor) or waveform.ndim != 2:
        raise ValueError(f"resample_audio: waveform must be a tensor [C, S], got {_describe(waveform)}")
    _check_rate("resample_audio from_sr", from_sr)
    _check_rate("resample_audio to_sr", to_sr)
    if from_sr == to_sr:
        return waveform.clone()
    g = math.gcd(from_sr, to_sr)
    up, down = to_sr // g, from_sr // g  # output phases per block, input samples per block
    S = waveform.shape[1]
    n_out = -(-S * up // down)
    cutoff = 0.99 * min(1.0, up / down) / 2  # cycles per input sample
    half = math.ceil(zero_crossings / (2 * cutoff))  # kernel half-width in input samples
    # Output j = q * up + p sits at input position q * down + p * down / up; kernel tap r reads
    # input q * down + r - half, so its distance from the output position is d below.
    if up * (down + 2 * half + 1) > 1 << 26:
        raise ValueError(
            f"resample_audio: {from_sr} -> {to_sr} Hz needs a {up}-phase filter; go through a common rate such as 48000"
        )
    r = torch.arange(down + 2 * half + 1, dtype=torch.float64)
    p = torch.arange(up, dtype=torch.float64)[:, None]
    d = p * down / up - (r - half)  # [up, K] input samples
    window = torch.cos(torch.pi * d.clamp(-half, half) / (2 * half)) ** 2
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * d) * window  # [up, K]
    kernel = kernel.to(waveform.device, waveform.dtype)[:, None]  # [up, 1, K]
    blocks = -(-n_out // up)
    right = max(0, (blocks - 1) * down + kernel.shape[-1] - (S + half))
    x = F.pad(waveform[:, None], (half, right))  # [C, 1, S + half + right]
    y = F.conv1d(x, kernel, stride=down)  # [C, up, blocks]
    return y.transpose(1, 2).reshape(waveform.shape[0], -1)[:, :n_out]  # [C, n_out]


def fit_audio(waveform: Tensor, n_samples: int) -> Tensor:
    """Trim or zero-pad `[C, S]` to exactly `[C, n_samples]`."""
    if not isinstance(waveform, Tensor) or waveform.ndim != 2:
        raise ValueError(f"fit_audio: waveform must be a tensor [C, S], got {_describe(waveform)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
        raise ValueError(f"fit_audio: n_samples must be a non-negative int, got {n_samples!r}")
    S, n = waveform.shape[1], int(n_samples)
    return waveform[:, :n] if S >= n else F.pad(waveform, (0, n - S))


def _describe(x: Any) -> str:
    return f"shape {tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _check_rate(name: str, rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive int (Hz), got {rate!r}")


def _check_seconds(src: Path, max_seconds: float | None) -> None:
    if max_seconds is not None and (not math.isfinite(max_seconds) or max_seconds <= 0):
        raise ValueError(f"reading {src}: max_seconds must be positive, got {max_seconds!r}")


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    tags = dict(metadata or {})
    for key, value in tags.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ValueError(
                f"write_mp4: metadata must map non-empty str keys to str values (json.dumps objects); bad entry {key!r}"
            )
    return tags


def _display_index(H: int, W: int, display_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Source row/column per output row/column: nearest-neighbour upscale plus even-size padding."""
    h, w = H, W
    if display_size is not None:
        if not isinstance(display_size, int) or display_size < max(H, W):
            raise ValueError(
                f"write_mp4: display_size={display_size!r} must be an int >= the frame's larger side "
                f"{max(H, W)} (it only upscales); pass None to keep {H}x{W}"
            )
        scale = display_size / max(H, W)
        h, w = max(1, round(H * scale)), max(1, round(W * scale))
    rows = np.minimum((np.arange(h) + 0.5) * H / h, H - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * W / w, W - 1).astype(np.int64)
    if h % 2:
        rows = np.append(rows, rows[-1])
    if w % 2:
        cols = np.append(cols, cols[-1])
    return rows, cols


def _audio_frame(chunk: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    chunk = np.ascontiguousarray(chunk, dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=_LAYOUTS[chunk.shape[0]])
    frame.sample_rate, frame.pts, frame.time_base = sample_rate, pts, Fraction(1, sample_rate)
    return frame


def _target(path: PathLike, suffix: str, who: str) -> Path:
    target = Path(path)
    if target.suffix.lower() != suffix:
        raise ValueError(f"{who}: {target} must end in {suffix}")
    if target.is_dir():
        raise ValueError(f"{who}: {target} is a directory; give a file name ending in {suffix}")
    return target


def _atomic(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` on a sibling temp file (same suffix, so muxers agree), then rename it over."""
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (av.FFmpegError, OSError)):
            raise ValueError(f"writing {target} failed: {exc}; the previous file (if any) is untouched") from None
        raise
    return target


def _source(path: PathLike) -> Path:
    src = Path(path)
    if not src.is_file():
        raise ValueError(f"{src}: no such file" + (" (it is a directory)" if src.is_dir() else ""))
    return src


@contextmanager
def _reading(src: Path) -> Iterator[Any]:
    """Open for reading; FFmpeg errors while opening or decoding become ValueErrors naming the file."""
    try:
        with av.open(str(src), "r") as container:
            if not container.streams:
                raise ValueError(f"{src}: no audio or video streams found (empty, truncated or not a media file)")
            yield container
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{src}: unreadable or corrupt audio/video/image file ({exc})") from None


def _decoded(container: Any, stream: Any, src: Path) -> Iterator[Any]:
    """Decoded frames of one stream. A truncated mp4/mov still opens (its index sits up front) and
    silently ends early, so at the end the demuxed packets are counted against the index."""
    packets = 0
    for packet in container.demux(stream):
        packets += packet.size > 0
        yield from packet.decode()
    if "mov" in container.format.name and stream.frames and packets < stream.frames:
        raise ValueError(
            f"{src}: truncated or corrupt, its {stream.type} index lists {stream.frames} packets but only "
            f"{packets} could be read"
        )


def _decode_frames(
    decoded: Iterator[av.VideoFrame],
    source_fps: float | None,
    fps: float | None,
    size: tuple[int, int] | None,
    max_seconds: float | None,
) -> tuple[list[Tensor], float]:
    """Decoded (and resampled/resized) frames plus the first frame's container time in seconds."""

    def convert(frame: av.VideoFrame) -> Tensor:
        rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
        x = torch.from_numpy(rgb).float().div_(255)  # [H, W, 3]
        if size is not None and tuple(x.shape[:2]) != tuple(size):
            x = x.permute(2, 0, 1)[None]  # [1, 3, H, W]
            x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
            x = x[0].permute(1, 2, 0).clamp_(0, 1)  # [H', W', 3]
        return x

    out: list[Tensor] = []
    start = last_t = None
    held: tuple[av.VideoFrame, Tensor | None] | None = None  # latest source frame (+ its conversion)
    for index, frame in enumerate(decoded):
        t = frame.time if frame.time is not None else index / (source_fps or 1.0)
        start = t if start is None else start
        t -= start
        if max_seconds is not None and t >= max_seconds - _TIME_EPS:
            break
        last_t = t
        if fps is None:
            out.append(convert(frame))
            continue
        while held is not None and len(out) / fps < t - _TIME_EPS:  # outputs shown before this frame
            if held[1] is None:
                held = (held[0], convert(held[0]))
            out.append(held[1])
        held = (frame, None)
    if fps is None or held is None:
        return out, start or 0.0
    end = last_t + 1.0 / (source_fps or fps)  # the last frame is shown for one source frame period
    if max_seconds is not None:
        end = min(end, max_seconds)
    n_total = max(1, round(end * fps))
    if len(out) < n_total:
        tail = held[1] if held[1] is not None else convert(held[0])
        out.extend([tail] * (n_total - len(out)))
    return out[:n_total], start


def _read_audio_track(src: Path, max_seconds: float | None) -> tuple[Tensor, int]:
    with _reading(src) as container:
        if not container.streams.audio:
            raise ValueError(f"read_audio({src}): the file has no audio stream")
        stream = container.streams.audio[0]
        sr = stream.rate or stream.codec_context.sample_rate
        if not sr:
            raise ValueError(f"read_audio({src}): the audio stream has no sample rate")
        limit = None if max_seconds is None else round(max_seconds * sr)
        # mp4/mov sample tables give the exact length; the AAC decoder still emits the padding of
        # the last frame, which this trims off.
        if "mov" in container.format.name and stream.duration and stream.time_base:
            exact = round(stream.duration * stream.time_base * sr)
            limit = exact if limit is None else min(limit, exact)
        to_float = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        total = 0
        for frame in _decoded(container, stream, src):
            for f in to_float.resample(frame):
                chunks.append(f.to_ndarray())
                total += chunks[-1].shape[1]
            if limit is not None and total >= limit:
                break
        else:
            chunks.extend(f.to_ndarray() for f in to_float.resample(None))
    if not chunks:
        raise ValueError(f"read_audio({src}): the audio stream holds no decodable samples")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))  # [C, S]
    return (waveform if limit is None else waveform[:, :limit]), int(sr)
