"""Pre-encode: clips -> codec latents, caption embeddings and speech ids, cached as shards.

Training then never decodes a video or runs a codec or the caption encoder: it reads the cache
into memory once. A source's cache lives in `<cache>/<source>-<fingerprint>/`; the fingerprint
covers the source's content, the clip format, the codecs and the text encoder, so changing any of
them re-encodes instead of reusing stale latents. Shards are written atomically and skipped when
present, so a killed pre-encode resumes where it stopped; several processes encode disjoint
shards in parallel.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from apollo_core.checkpoint import atomic_save
from apollo_core.codecs import TinyAudioVAE, TinyVideoVAE, check_codecs, load_codec
from apollo_core.config import ApolloConfig
from apollo_core.text import encode_speech, load_text_encoder

from ..config import CODEC_RANDOM, CodecConfig
from .sources import ClipFormat, DataSource, RawClip, SkipClip, SkipReport, fit_waveform, quality_measures

log = logging.getLogger(__name__)
MEASURES = ("quality", "motion", "loudness_db", "has_speech")
SHARD_FORMAT = "apollo-av/latent-shard-1"


@dataclass
class Encoders:
    """The frozen encoders of a run, built on first use (a warm cache never loads them)."""

    config: ApolloConfig
    codecs: CodecConfig
    fmt: ClipFormat
    text_spec: str = "minilm"
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        self._video = self._audio = self._text = None

    def identity(self) -> dict[str, Any]:
        return {"video": _codec_identity(self.codecs.video, self.codecs.seed, "video"),
                "audio": _codec_identity(self.codecs.audio, self.codecs.seed, "audio"),
                "text": self.text_spec, "caption_tokens": self.config.text.max_caption_tokens,
                "speech_tokens": self.config.text.max_speech_tokens,
                "video_cfg": self.config.video.__dict__, "audio_cfg": self.config.audio.__dict__,
                "random_fit": self.fmt.__dict__ if CODEC_RANDOM in (self.codecs.video, self.codecs.audio) else None}

    @property
    def video(self):
        if self._video is None:
            self._video, self._audio = build_codecs(self.config, self.codecs, self.fmt, self.device)
        return self._video

    @property
    def audio(self):
        if self._audio is None:
            self._video, self._audio = build_codecs(self.config, self.codecs, self.fmt, self.device)
        return self._audio

    @property
    def text(self):
        if self._text is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._text = load_text_encoder(self.text_spec, device=self.device)
        return self._text


def build_codecs(config: ApolloConfig, codecs: CodecConfig, fmt: ClipFormat, device: str | torch.device = "cpu"):
    """Codec files, or untrained tiny codecs drawn from `codecs.seed` (for tests and smoke runs)."""
    if codecs.video == CODEC_RANDOM or codecs.audio == CODEC_RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(codecs.seed)
            rand_video = TinyVideoVAE.from_config(config.video) if codecs.video == CODEC_RANDOM else None
            rand_audio = TinyAudioVAE.from_config(config.audio) if codecs.audio == CODEC_RANDOM else None
        _fit_random(rand_video, rand_audio, fmt)
    video = rand_video if codecs.video == CODEC_RANDOM else load_codec(_existing(codecs.video, "codecs.video"), kind="tiny_video")
    audio = rand_audio if codecs.audio == CODEC_RANDOM else load_codec(_existing(codecs.audio, "codecs.audio"), kind="tiny_audio")
    check_codecs(config, video, audio)
    return video.to(device).eval(), audio.to(device).eval()


@torch.no_grad()
def _fit_random(video: TinyVideoVAE | None, audio: TinyAudioVAE | None, fmt: ClipFormat, clips: int = 8) -> None:
    """Normalise an untrained codec's latents to unit variance on a few world clips, so the
    diffusion model sees latents of the scale a trained codec gives it."""
    from .world import TRAIN_SEED_START, render, sample_spec

    size = max(fmt.height, fmt.width)
    samples = [render(sample_spec(TRAIN_SEED_START + i, seconds=fmt.seconds, fps=fmt.fps, size=size,
                                  sample_rate=fmt.sample_rate)) for i in range(clips)]
    if video is not None:
        frames = torch.stack([torch.from_numpy(s.frames[:fmt.frames, :fmt.height, :fmt.width]) for s in samples])
        video.fit_latent_stats(frames.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0))  # [B, 3, T, H, W]
    if audio is not None:
        wave = torch.stack([fit_waveform(torch.from_numpy(s.audio).float(), fmt.samples) for s in samples])
        audio.fit_latent_stats(wave[:, None])  # [B, 1, S]


def _existing(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{key}: codec file {p} does not exist; train codecs first (training/codecs.py) or use 'random'")
    return p


def _codec_identity(spec: str, seed: int, kind: str) -> Any:
    if spec == CODEC_RANDOM:
        return {"random": seed, "kind": kind}
    p = Path(spec).expanduser()
    st = p.stat() if p.is_file() else None
    return {"path": str(p.resolve()), "size": st.st_size if st else None, "mtime": st.st_mtime_ns if st else None}


def fingerprint(source: DataSource, encoders: Encoders, shard_size: int) -> str:
    blob = json.dumps({"source": source.fingerprint(), "encoders": encoders.identity(), "shard_size": shard_size,
                       "format": SHARD_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# encoding


@torch.no_grad()
def encode_media(enc: Encoders, clips: list[RawClip]) -> tuple[Tensor, Tensor]:
    """Latents for clips of one format: video `[B, C, T', H', W']`, audio `[B, C, S/hop]`."""
    dev = enc.device
    wave = torch.stack([c.waveform for c in clips]).to(dev)[:, None]  # [B, 1, S]
    return video_latents(enc.video, [c.frames for c in clips], dev), enc.audio.encode(wave).float().cpu()


@torch.no_grad()
def video_latents(codec, frames: list[Tensor], device: str | torch.device = "cpu") -> Tensor:
    """Latents `[B, C, T', H', W']` (on the CPU) of frames `[T, H, W, 3]` in 0..1, all one size."""
    x = torch.stack(frames).to(device)  # [B, T, H, W, 3]
    x = x.permute(0, 4, 1, 2, 3).mul(2.0).sub(1.0)  # [B, 3, T, H, W] in [-1, 1]
    return codec.encode(x).float().cpu()


@torch.no_grad()
def encode_captions(enc: Encoders, texts: list[str], batch: int) -> tuple[Tensor, Tensor]:
    """`[U, L, D]` embeddings and `[U, L]` masks for unique captions, L = the longest real length."""
    max_tokens = enc.config.text.max_caption_tokens
    parts = [enc.text.encode(texts[i:i + batch], max_tokens) for i in range(0, len(texts), batch)]
    length = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat([p.pad_to(length).tokens for p in parts]).float().cpu()
    mask = torch.cat([p.pad_to(length).mask for p in parts]).cpu()
    return tokens, mask


def encode_shard(enc: Encoders, source: DataSource, items: list[str], path: Path, batch: int,
                 log_skip: Callable[[str, str], None] | None = None) -> None:
    """Load, encode and write one shard. Row 0 of the caption table is always "" (the
    unconditional caption used for caption dropout)."""
    report = SkipReport()
    clips: list[RawClip] = []
    for item in items:
        try:
            clips.extend(source.load(item))
        except SkipClip as exc:
            report.add(f"{source.name}:{item}", str(exc))
            if log_skip is not None:
                log_skip(f"{source.name}:{item}", str(exc))
    videos, audios = [], []
    for i in range(0, len(clips), batch):
        v, a = encode_media(enc, clips[i:i + batch])
        videos.append(v)
        audios.append(a)
    captions = [""]
    index: dict[str, int] = {"": 0}
    vidx, aidx = [], []
    for c in clips:
        for text, out in ((c.video_caption, vidx), (c.audio_caption, aidx)):
            if text not in index:
                index[text] = len(captions)
                captions.append(text)
            out.append(index[text])
    cap_tokens, cap_mask = encode_captions(enc, captions, max(batch, 32))
    speech, speech_mask = encode_speech([c.speech for c in clips] or [""], enc.config.text.max_speech_tokens)
    n = len(clips)
    tensors = {
        "video": torch.cat(videos) if videos else torch.zeros(0, *_video_shape(enc, source)),
        "audio": torch.cat(audios) if audios else torch.zeros(0, *_audio_shape(enc, source)),
        "video_caption": torch.tensor(vidx, dtype=torch.long),
        "audio_caption": torch.tensor(aidx, dtype=torch.long),
        "caption_tokens": cap_tokens,
        "caption_mask": cap_mask,
        "speech": speech[:n],
        "speech_mask": speech_mask[:n],
        "measures": torch.tensor([[quality_measures(c)[m] for m in MEASURES] for c in clips],
                                 dtype=torch.float32).reshape(n, len(MEASURES)),
    }
    meta = {"format": SHARD_FORMAT, "count": str(n), "keys": json.dumps([c.key for c in clips]),
            "skipped": json.dumps(report.to_list()), "measures": json.dumps(MEASURES)}
    atomic_save(tensors, path, meta)


def _video_shape(enc: Encoders, source: DataSource) -> tuple[int, ...]:
    v = enc.config.video
    return (v.latent_channels, v.latent_frames(source.fmt.frames), source.fmt.height // v.spatial_compression,
            source.fmt.width // v.spatial_compression)


def _audio_shape(enc: Encoders, source: DataSource) -> tuple[int, ...]:
    return (enc.config.audio.latent_channels, source.fmt.samples // enc.config.audio.hop)


def prepare_source(source: DataSource, enc: Encoders, cache_root: Path, *, shard_size: int, batch: int,
                   rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None,
                   log_skip: Callable[[str, str], None] | None = None) -> Path:
    """Encode whatever shards of `source` are missing (rank r takes shards r, r+W, ...) and
    return the cache folder holding them plus `manifest.json`."""
    folder = Path(cache_root) / f"{source.name}-{fingerprint(source, enc, shard_size)}"
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        items = source.items()
        if not items:
            raise ValueError(f"data source {source.name!r} has no items (empty folder or seed range)")
        chunks = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(rank, len(chunks), world_size):
            path = folder / f"shard-{i:05d}.safetensors"
            if not path.is_file():
                log.info("encoding %s shard %d/%d (%d items)", source.name, i + 1, len(chunks), len(chunks[i]))
                encode_shard(enc, source, chunks[i], path, batch, log_skip)
        barrier()
        if rank == 0:
            names = [f"shard-{i:05d}.safetensors" for i in range(len(chunks))]
            _write_json(manifest, {"source": source.name, "shards": names, "items": len(items),
                                   "fingerprint": source.fingerprint()})
    barrier()
    return folder


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
