"""mp4/wav/image I/O: round trips, exact A/V durations, atomic writes and named errors."""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from apollo_core import avio
from apollo_core.avio import (
    AAC_FRAME,
    AVClip,
    fit_audio,
    read_audio,
    read_image,
    read_metadata,
    read_video,
    resample_audio,
    write_mp4,
    write_wav,
)

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.8, 0.4, 0.1]])


def flat_frames(T: int, H: int, W: int) -> torch.Tensor:
    return COLOURS[torch.arange(T) % len(COLOURS)][:, None, None, :].expand(T, H, W, 3).clone()


def sine(freq: float, seconds: float, sr: int, channels: int = 1, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    w = amp * torch.sin(2 * math.pi * freq * t)
    return w.float()[None].repeat(channels, 1)


def stream_seconds(path: Path) -> tuple[float, float | None]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        return float(v.duration * v.time_base), None if a is None else float(a.duration * a.time_base)


def test_mp4_round_trip(tmp_path: Path) -> None:
    T, H, W, fps, sr = 16, 32, 48, 8.0, 16000
    wave = sine(440, T / fps, sr, channels=2)
    path = write_mp4(tmp_path / "clip.mp4", AVClip(flat_frames(T, H, W), wave, fps, sr))
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert v.codec_context.pix_fmt == "yuv420p"
        assert v.frames == T and v.average_rate == 8 and a.rate == sr and a.channels == 2
    assert stream_seconds(path) == pytest.approx((2.0, 2.0), abs=1e-6)

    clip = read_video(path)
    assert clip.frames.shape == (T, H, W, 3) and clip.fps == fps
    assert (clip.frames - flat_frames(T, H, W)).abs().max() < 4 / 255  # flat colours survive 4:2:0 + crf 18
    assert clip.sample_rate == sr and clip.waveform.shape == (2, round(T / fps * sr))
    assert (clip.waveform - wave).abs().max() < 0.03  # AAC is lossy but aligned: no priming offset
    assert clip.duration == pytest.approx(2.0)


def test_display_size_upscales_with_crisp_pixels(tmp_path: Path) -> None:
    frames = torch.zeros(2, 6, 10, 3)
    frames[:, ::2, ::2] = 1.0  # one-pixel checkerboard: any smoothing would show
    frames[:, 1::2, 1::2] = 1.0
    clip = read_video(write_mp4(tmp_path / "big.mp4", AVClip(frames=frames, fps=4), display_size=40))
    assert clip.frames.shape == (2, 24, 40, 3)
    expected = frames.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert (clip.frames - expected).abs().mean() < 0.03
    with pytest.raises(ValueError, match="display_size"):
        write_mp4(tmp_path / "small.mp4", AVClip(frames=frames, fps=4), display_size=8)


def test_odd_sizes_are_padded_by_repeating_the_edge(tmp_path: Path) -> None:
    frames = torch.rand(3, 7, 9, 1).expand(3, 7, 9, 3).clone()
    clip = read_video(write_mp4(tmp_path / "odd.mp4", AVClip(frames=frames, fps=8), crf=0))
    assert clip.frames.shape == (3, 8, 10, 3)
    assert (clip.frames[:, :7, :9] - frames).abs().mean() < 0.02
    assert (clip.frames[:, 7] - clip.frames[:, 6]).abs().mean() < 0.02  # padded row repeats the last row
    # an odd side produced by display_size gets the same treatment: 5x3 -> 15x9 -> 16x10
    up = read_video(write_mp4(tmp_path / "odd_up.mp4", AVClip(frames=torch.rand(1, 5, 3, 3), fps=8), display_size=15))
    assert up.frames.shape == (1, 16, 10, 3)


@pytest.mark.parametrize(
    ("T", "fps", "sr", "audio_seconds"),
    [(13, 7.0, 16000, 3.0), (17, 24.0, 22050, 0.2), (30, 30000 / 1001, 48000, 1.0)],
)
def test_audio_is_fitted_so_stream_durations_agree(
    tmp_path: Path, T: int, fps: float, sr: int, audio_seconds: float
) -> None:
    wave = sine(300, audio_seconds, sr)
    path = write_mp4(tmp_path / "fit.mp4", AVClip(flat_frames(T, 16, 16), wave, fps, sr))
    video_s, audio_s = stream_seconds(path)
    expected = T / float(Fraction(fps).limit_denominator(1001))
    assert video_s == pytest.approx(expected, abs=1e-6)
    assert abs(video_s - audio_s) < AAC_FRAME / sr  # the contract; in practice they differ by < 1 sample
    assert abs(video_s - audio_s) < 1.5 / sr
    back, rate = read_audio(path)
    assert rate == sr and back.shape == (1, round(T / fps * sr))
    n_real = wave.shape[1]
    if n_real + AAC_FRAME < back.shape[1]:  # the zero padding decodes as (near) silence
        assert back[:, n_real + AAC_FRAME :].abs().max() < 0.01


def test_wav_round_trip_is_bit_close(tmp_path: Path) -> None:
    wave = torch.rand(2, 12345) * 1.8 - 0.9
    path = write_wav(tmp_path / "a.wav", wave, 22050)
    back, sr = read_audio(path)
    assert sr == 22050 and back.shape == wave.shape and back.dtype == torch.float32
    assert (back - wave).abs().max() <= 0.5 / 32768 + 1e-7
    mono, sr16 = read_audio(path, sample_rate=16000, mono=True, max_seconds=0.25)
    assert sr16 == 16000 and mono.shape == (1, 4000)
    clipped, _ = read_audio(write_wav(tmp_path / "loud.wav", torch.full((1, 100), 3.0), 8000))
    assert clipped.max() <= 1.0


def test_metadata_round_trip(tmp_path: Path) -> None:
    workflow = json.dumps({"nodes": [{"id": 1, "type": "ApolloSampler"}]})
    tags = {"comment": "made by apollo-av", "workflow": workflow, "prompt": "a dog barks"}
    path = write_mp4(tmp_path / "m.mp4", AVClip(frames=flat_frames(2, 8, 8), fps=4), metadata=tags)
    meta = read_metadata(path)
    assert {k: meta[k] for k in tags} == tags
    with pytest.raises(ValueError, match="metadata"):
        bad = {"workflow": {"a": 1}}  # objects must be json.dumps-ed first
        write_mp4(tmp_path / "bad.mp4", AVClip(frames=flat_frames(2, 8, 8), fps=4), metadata=bad)  # type: ignore[arg-type]


def test_bad_files_give_value_errors_naming_the_path(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(ValueError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    good = write_mp4(tmp_path / "good.mp4", AVClip(flat_frames(16, 32, 32), sine(200, 2.0, 16000), 8.0, 16000))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_video(truncated)
    with pytest.raises(ValueError, match="cut.mp4"):  # the AAC decoder trips over the cut packet first
        read_audio(truncated)


def test_missing_streams_are_named(tmp_path: Path) -> None:
    silent = write_mp4(tmp_path / "silent.mp4", AVClip(frames=flat_frames(4, 8, 8), fps=8))
    with av.open(str(silent)) as c:
        assert not c.streams.audio
    assert read_video(silent).waveform is None
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio(silent)
    wav = write_wav(tmp_path / "a.wav", torch.zeros(1, 800), 8000)
    with pytest.raises(ValueError, match="no video stream"):
        read_video(wav)


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_mp4(tmp_path / "out.mp4", AVClip(frames=flat_frames(4, 8, 8), fps=8))
    before = target.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(avio, "_audio_frame", broken)  # fails after the temp mp4 is open and has video
    with pytest.raises(ValueError, match="untouched"):
        write_mp4(target, AVClip(flat_frames(4, 8, 8), sine(200, 0.5, 16000), 8.0, 16000))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with pytest.raises(ValueError, match="crf"):
        write_mp4(tmp_path / "other.mp4", AVClip(frames=flat_frames(4, 8, 8), fps=8), crf=99)
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_mp4(tmp_path / "clip.webm", AVClip(frames=flat_frames(4, 8, 8), fps=8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_read_video_resamples_time_and_space(tmp_path: Path) -> None:
    levels = torch.arange(24).float() * 10 / 255  # frame i has grey level 10 * i
    frames = levels[:, None, None, None].expand(24, 16, 16, 3).clone()
    path = write_mp4(tmp_path / "ramp.mp4", AVClip(frames=frames, fps=24))

    def ids(clip: AVClip) -> list[int]:
        return (clip.frames[:, 0, 0, 0] * 25.5).round().int().tolist()

    assert ids(read_video(path, fps=8)) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert ids(read_video(path, fps=10)) == [math.floor(k * 2.4) for k in range(10)]
    assert ids(read_video(path, fps=48)) == [k // 2 for k in range(48)]
    short = read_video(path, max_seconds=0.5, size=(8, 12))
    assert short.frames.shape == (12, 8, 12, 3) and short.fps == 24.0


def test_read_image_png_and_jpg(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for codec, pix_fmt, name in (("png", "rgb24", "i.png"), ("mjpeg", "yuvj444p", "i.jpg")):
        cc = av.CodecContext.create(codec, "w")
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 9, 7, pix_fmt, Fraction(1, 1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        (tmp_path / name).write_bytes(b"".join(bytes(p) for p in cc.encode(frame) + cc.encode(None)))
        img = read_image(tmp_path / name)
        assert img.shape == (7, 9, 3) and img.dtype == torch.float32
        error = (img * 255 - torch.from_numpy(rgb).float()).abs()
        assert error.max() == 0 if codec == "png" else error.mean() < 6


def test_resample_audio_is_band_limited() -> None:
    up = resample_audio(sine(440, 1.0, 16000, amp=1.0), 16000, 44100)
    assert up.shape == (1, 44100)
    assert (up[:, 2000:-2000] - sine(440, 1.0, 44100, amp=1.0)[:, 2000:-2000]).abs().max() < 2e-3
    down = resample_audio(sine(1000, 1.0, 48000, amp=1.0), 48000, 16000)
    assert (down[:, 500:-500] - sine(1000, 1.0, 16000, amp=1.0)[:, 500:-500]).abs().max() < 2e-3
    alias = resample_audio(sine(10000, 1.0, 48000, amp=1.0), 48000, 16000)  # above the new Nyquist
    assert alias[:, 500:-500].pow(2).mean().sqrt() < 0.01
    assert resample_audio(torch.zeros(2, 101), 48000, 16000).shape == (2, 34)  # ceil(101 / 3)


def test_fit_audio_and_clip_validation() -> None:
    w = torch.ones(2, 10)
    assert fit_audio(w, 4).shape == (2, 4)
    padded = fit_audio(w, 15)
    assert padded.shape == (2, 15) and padded[:, 10:].abs().sum() == 0
    with pytest.raises(ValueError, match="fps"):
        AVClip(frames=torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match="sample_rate"):
        AVClip(waveform=torch.zeros(1, 10))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        AVClip(frames=torch.zeros(4, 4, 3), fps=8)
    with pytest.raises(ValueError, match="uint8"):
        AVClip(frames=torch.zeros(2, 4, 4, 3, dtype=torch.uint8), fps=8)
    with pytest.raises(ValueError, match="neither"):
        AVClip()
    clip = AVClip(waveform=torch.zeros(1, 8000, dtype=torch.float64), sample_rate=16000)
    assert clip.waveform.dtype == torch.float32 and clip.duration == 0.5
    with pytest.raises(ValueError, match="write_wav"):
        write_mp4("/tmp/never-written.mp4", clip)


def test_read_video_aligns_late_audio_by_timestamps(tmp_path: Path) -> None:
    path, sr = tmp_path / "late.mp4", 16000
    with av.open(str(path), "w", format="mp4") as out:  # a foreign-style file: audio starts at 0.5 s
        video = out.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        audio = out.add_stream("aac", rate=sr, layout="mono")
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        tone = av.AudioFrame.from_ndarray(sine(440, 1.0, sr, amp=0.5).numpy(), format="fltp", layout="mono")
        tone.sample_rate, tone.pts, tone.time_base = sr, sr // 2, Fraction(1, sr)
        out.mux(audio.encode(tone))
        out.mux(audio.encode(None))
    clip = read_video(path)
    assert clip.waveform.shape == (1, 2 * sr)
    onset = int((clip.waveform[0].abs() > 0.05).nonzero()[0])
    assert abs(onset - sr // 2) < 32
    assert clip.waveform[0, int(1.6 * sr) :].abs().max() < 0.01  # silence after the 1 s tone ends
