"""Train the tiny video and audio codecs on clips of the synthetic AV world, then measure them.

    python -m training.codecs --preset apollo-tiny --out DIR --minutes 5 --seed 0

`--minutes` is the wall-clock budget of each codec. Both are saved with `save_codec` as
DIR/video_codec.safetensors and DIR/audio_codec.safetensors, their held-out figures in the
file metadata and in DIR/codecs_report.json. `--resume --decoder-only` trains the decoders of
the codecs in DIR further with their encoders and latent statistics frozen: the latents (and
any model trained on them) stay valid while the decoded clips improve.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from apollo_core.codecs import (
    TinyAudioVAE,
    TinyVideoVAE,
    check_codecs,
    load_codec,
    read_codec_metadata,
    save_codec,
)
from apollo_core.codecs.metrics import (
    dominant_frequency,
    kl_divergence,
    log_spectral_distance,
    multi_resolution_stft_loss,
    onset_times,
    psnr,
    snr,
)
from apollo_core.config import ApolloConfig, get_preset
from apollo_core.files import atomic_write_text



@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [S], mono
    tones: list[tuple[float, float]]  # (onset seconds, pitch Hz) of each pitched event


@dataclass(frozen=True)
class ClipSet:
    video: Tensor  # [N, 3, T, H, W] in [-1, 1]
    audio: Tensor  # [N, 1, S], S a multiple of the hop
    tones: list[list[tuple[float, float]]]


ClipSource = Callable[[int], Clip]
# The world's split rule: training draws seeds >= 1_000_000, smaller seeds are for evaluation.
TRAIN_SEED_START = 1_000_000
HELD_OUT_SEED = 900_000


def world_source(config: ApolloConfig, seconds: float, size: int) -> ClipSource:
    """Clips rendered by the synthetic AV world at the config's frame and sample rates."""
    from training.data.world import render, sample_spec  # imported late: only this source needs it

    def clip(seed: int) -> Clip:
        sample = render(sample_spec(seed, seconds=seconds, fps=config.video.fps, size=size,
                                    sample_rate=config.audio.sample_rate))
        # A syllable's pitch is the talker's nominal f0, not a spectral peak one can check.
        tones = [(e.time, e.pitch_hz) for e in sample.events if e.kind != "syllable" and e.pitch_hz]
        return Clip(sample.frames, sample.audio, tones)

    return clip


def synthetic_source(config: ApolloConfig, seconds: float, size: int) -> ClipSource:
    """A stand-in world with no dependencies: a coloured square sliding over a flat background
    and a sine burst (pitch set by the colour) at a random frame boundary."""
    fps, sr = config.video.fps, config.audio.sample_rate
    frames_n, samples_n = int(round(seconds * fps)), int(round(seconds * sr))

    def clip(seed: int) -> Clip:
        rng = np.random.default_rng(seed)
        background = rng.integers(0, 256, 3)
        colour_id = int(rng.integers(0, 4))
        colour = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [240, 220, 40]][colour_id])
        side = int(rng.integers(size // 6, size // 3))
        pos, vel = rng.uniform(0, size - side, 2), rng.uniform(-3, 3, 2) * size / 32
        frames = np.empty((frames_n, size, size, 3), np.uint8)
        for t in range(frames_n):
            frames[t] = background
            y, x = np.clip(pos + vel * t, 0, size - side).astype(int)
            frames[t, y:y + side, x:x + side] = colour
        audio = np.zeros(samples_n, np.float32)
        start = int(rng.integers(0, frames_n - 1) * sr / fps)
        length = min(int(0.15 * sr), samples_n - start)
        n = np.arange(length)
        pitch = (330.0, 440.0, 587.0, 784.0)[colour_id]
        audio[start:start + length] = 0.5 * np.sin(2 * np.pi * pitch * n / sr) * np.exp(-n / (0.05 * sr))
        return Clip(frames, audio, [(start / sr, pitch)])

    return clip


def load_clips(source: ClipSource, seeds: list[int], hop: int) -> ClipSet:
    """Render `seeds` into tensors, trimming audio to a multiple of the hop."""
    videos, audios, tones = [], [], []
    for seed in seeds:
        clip = source(seed)
        videos.append(torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(3, 0, 1, 2))  # [3, T, H, W]
        usable = clip.audio.shape[-1] // hop * hop
        audios.append(torch.from_numpy(np.asarray(clip.audio, np.float32)[:usable]))
        tones.append(list(clip.tones))
    video = torch.stack(videos).float() / 127.5 - 1.0
    return ClipSet(video, torch.stack(audios).unsqueeze(1), tones)


def _cosine_lr(optimizer: torch.optim.Optimizer, base_lr: float, progress: float) -> None:
    lr = base_lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
    for group in optimizer.param_groups:
        group["lr"] = lr


def video_loss(codec: TinyVideoVAE, frames: Tensor, beta: float) -> tuple[Tensor, dict[str, float]]:
    recon, mean, logvar = codec(frames)
    mse = F.mse_loss(recon, frames)
    # MSE is what PSNR measures; L1 keeps edges sharp where MSE alone settles for blur.
    rec = mse + 0.5 * F.l1_loss(recon, frames)
    kl = kl_divergence(mean, logvar)
    return rec + beta * kl, {"rec": rec.item(), "kl": kl.item(), "psnr": 10 * math.log10(4 / max(mse.item(), 1e-12))}


def audio_loss(codec: TinyAudioVAE, wave: Tensor, beta: float) -> tuple[Tensor, dict[str, float]]:
    recon, mean, logvar = codec(wave)
    l1 = F.l1_loss(recon, wave)
    stft = multi_resolution_stft_loss(recon, wave)
    kl = kl_divergence(mean, logvar)
    # The waveform term is kept light: where the phase is not yet right, L1 is smallest for
    # silence, so at full weight it fought the spectral term and high tones (1.5 kHz) were lost.
    return 0.1 * l1 + stft + beta * kl, {"l1": l1.item(), "stft": stft.item(), "kl": kl.item()}


def _random_video_batch(clips: Tensor, batch: int, crop_frames: int, crop_size: int, gen: torch.Generator) -> Tensor:
    """Random crops `[batch, 3, crop_frames, crop_size, crop_size]`: small crops buy many more
    optimiser steps per minute, and the codec is convolutional so it applies to full frames."""
    n, _, t, h, w = clips.shape
    ct, cs = min(crop_frames, t), min(crop_size, h, w)
    idx = torch.randint(0, n, (batch,), generator=gen).tolist()
    t0 = torch.randint(0, t - ct + 1, (batch,), generator=gen).tolist()
    y0 = torch.randint(0, h - cs + 1, (batch,), generator=gen).tolist()
    x0 = torch.randint(0, w - cs + 1, (batch,), generator=gen).tolist()
    out = torch.stack([clips[i, :, a:a + ct, y:y + cs, x:x + cs] for i, a, y, x in zip(idx, t0, y0, x0)]).float()
    flip = torch.rand(batch, generator=gen) < 0.5  # mirrored scenes are equally plausible scenes
    out[flip] = out[flip].flip(-1)
    return out


def _random_audio_batch(waves: Tensor, batch: int, segment: int, gen: torch.Generator) -> Tensor:
    idx = torch.randint(0, waves.shape[0], (batch,), generator=gen)
    s = waves.shape[-1]
    seg = min(segment, s)
    starts = torch.randint(0, s - seg + 1, (batch,), generator=gen)
    out = torch.stack([waves[i, :, st:st + seg] for i, st in zip(idx.tolist(), starts.tolist())])
    gain = 10 ** (torch.empty(batch, 1, 1).uniform_(-0.3, 0.1, generator=gen))  # -6..+2 dB: level invariance
    return (out * gain).clamp(-1.0, 1.0)


def train_codec(
    codec: TinyVideoVAE | TinyAudioVAE,
    data: Tensor,
    minutes: float,
    *,
    batch: int,
    crop: int,
    crop_size: int = 32,
    lr: float = 2e-3,
    beta: float = 1e-4,
    max_steps: int | None = None,
    seed: int = 0,
    log_every: float = 30.0,
    log: Callable[[str], None] | None = None,
    decoder_only: bool = False,
) -> list[dict[str, float]]:
    """Adam with a time-based cosine schedule until `minutes` (or `max_steps`) run out. `crop` is
    pixel frames (video, rounded to the temporal compression) or samples (audio, rounded to the
    hop); `crop_size` is the side of square video crops (rounded to the spatial compression).
    `decoder_only` trains the decoder alone: the encoder, hence the latents a model was trained
    on, stays exactly as it is. Returns the logged history; the codec is left in eval mode."""
    log = log or (lambda message: print(message, flush=True))
    is_video = isinstance(codec, TinyVideoVAE)
    unit = codec.temporal_compression if is_video else codec.hop
    crop = max(unit, crop // unit * unit)
    if is_video:
        crop_size = max(codec.spatial_compression, crop_size // codec.spatial_compression * codec.spatial_compression)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    trained = codec.decoder_parameters() if decoder_only else list(codec.parameters())
    if decoder_only:  # no gradients through the frozen encoder: less work per step
        codec.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
    optimizer = torch.optim.Adam(trained, lr=lr)
    budget = minutes * 60.0
    codec.train()
    history: list[dict[str, float]] = []
    start = last_log = time.perf_counter()
    step, skipped, running = 0, 0, {}
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= budget or (max_steps is not None and step >= max_steps):
            break
        progress = max(elapsed / budget, step / max_steps if max_steps else 0.0)
        _cosine_lr(optimizer, lr, progress)
        if is_video:
            loss, parts = video_loss(codec, _random_video_batch(data, batch, crop, crop_size, gen), beta)
        else:
            loss, parts = audio_loss(codec, _random_audio_batch(data, batch, crop, gen), beta)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1  # one poisoned step must not wreck the weights; it is counted in the log
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        parts["loss"] = loss.item()
        running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in parts.items()} if running else dict(parts)
        now = time.perf_counter()
        if now - last_log >= log_every:
            last_log = now
            record = {"step": step, "minutes": (now - start) / 60.0, "skipped": skipped, **running}
            history.append(record)
            log(f"[{codec.kind}] " + " ".join(f"{k}={v:.4g}" for k, v in record.items()))
    history.append({"step": step, "minutes": (time.perf_counter() - start) / 60.0, "skipped": skipped, **running})
    codec.requires_grad_(True)
    codec.eval()
    return history


@torch.no_grad()
def evaluate_video(codec: TinyVideoVAE, clips: Tensor, batch: int = 8) -> dict[str, float]:
    recon = torch.cat([codec.decode(codec.encode(clips[i:i + batch])) for i in range(0, clips.shape[0], batch)])
    latents = codec.encode(clips[:batch])
    one = clips[:1]
    codec.decode(codec.encode(one))  # warm-up so the timing below is steady state
    t0 = time.perf_counter()
    codec.decode(codec.encode(one))
    ms = (time.perf_counter() - t0) * 1000.0
    return {"psnr_db": psnr(recon, clips), "latent_mean": latents.mean().item(),
            "latent_std": latents.std().item(), "encode_decode_ms_per_clip": ms}


def _cents(f: float, ref: float) -> float:
    return 1200.0 * abs(math.log2(max(f, 1.0) / ref))


@torch.no_grad()
def evaluate_audio(
    codec: TinyAudioVAE,
    waves: Tensor,
    fps: float,
    tones: list[list[tuple[float, float]]] | None = None,
    batch: int = 8,
) -> dict[str, float | None]:
    """SNR and log-spectral distance, then events at the time scale that matters for sync (one
    video frame): onsets detected in the original that the reconstruction also has within a
    frame (and their timing error), reconstruction onsets with no original one, and for each
    pitched event the dominant frequency over the frame after its onset vs the true pitch (within
    50 cents, a quarter tone), for the original as well since overlapping sounds can mask one."""
    recon = torch.cat([codec.decode(codec.encode(waves[i:i + batch])) for i in range(0, waves.shape[0], batch)])
    sr, window, tol = codec.sample_rate, int(round(codec.sample_rate / fps)), 1.0 / fps
    onsets = matched = extra = 0
    timing: list[float] = []
    for orig, rec in zip(waves, recon):
        true_on, rec_on = onset_times(orig, sr, codec.hop), onset_times(rec, sr, codec.hop)
        extra += sum(1 for r in rec_on if all(abs(r - t) > tol for t in true_on))
        for t in true_on:
            onsets += 1
            near = [abs(r - t) for r in rec_on if abs(r - t) <= tol]
            if near:
                matched += 1
                timing.append(min(near) * 1000.0)
    pitched, ok_rec, ok_orig = 0, 0, 0
    cents: list[float] = []
    for orig, rec, clip_tones in zip(waves, recon, tones or []):
        for t, pitch in clip_tones:
            a = int(round(t * sr))
            if a + window > waves.shape[-1]:
                continue
            pitched += 1
            c = _cents(dominant_frequency(rec[..., a:a + window], sr), pitch)
            cents.append(c)
            ok_rec += c <= 50.0
            ok_orig += _cents(dominant_frequency(orig[..., a:a + window], sr), pitch) <= 50.0
    latents = codec.encode(waves[:batch])
    return {
        "snr_db": snr(recon, waves),
        "lsd_db": log_spectral_distance(recon, waves),
        "onsets": float(onsets),
        "onset_recall": matched / max(onsets, 1),
        "onset_error_ms_mean": float(np.mean(timing)) if timing else None,
        "extra_onsets": float(extra),
        "pitched_events": float(pitched),
        "pitch_ok_recon": ok_rec / max(pitched, 1),
        "pitch_ok_original": ok_orig / max(pitched, 1),
        "pitch_error_cents_median": float(np.median(cents)) if cents else None,
        "latent_mean": latents.mean().item(),
        "latent_std": latents.std().item(),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _audio_layout(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in (("strides", args.audio_strides), ("widths", args.audio_widths)) if v}


def _new_codec(name: str, args: argparse.Namespace, config: ApolloConfig) -> TinyVideoVAE | TinyAudioVAE:
    """A fresh codec of the config's geometry, in the layout the command line asks for."""
    if name == "video":
        return TinyVideoVAE.from_config(config.video)
    return TinyAudioVAE.from_config(config.audio, **_audio_layout(args))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="apollo-tiny")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes for EACH codec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=("world", "synthetic"), default="world")
    parser.add_argument("--which", choices=("both", "video", "audio"), default="both")
    parser.add_argument("--clips", type=int, default=256, help="training clips rendered up front")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    # Small batches of short crops: on a shared CPU the number of optimiser steps is what limits
    # quality; whole frames (rather than spatial crops) keep every step on the objects.
    parser.add_argument("--video-batch", type=int, default=4)
    parser.add_argument("--video-crop", type=int, default=4, help="pixel frames per training crop")
    parser.add_argument("--video-crop-size", type=int, default=64, help="side of square training crops, pixels")
    parser.add_argument("--audio-batch", type=int, default=8)
    parser.add_argument("--audio-crop", type=int, default=4000, help="samples per training crop")
    parser.add_argument("--beta", type=float, default=1e-4, help="KL weight (per-element means)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each codec after this many steps")
    parser.add_argument("--resume", action="store_true", help="continue from the codecs already in --out")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --resume: train only the decoders; encoders and latent statistics stay as they "
                             "are, so a model trained on these latents needs no retraining")
    parser.add_argument("--video-latent-channels", type=int,
                        help="override the preset's video latent channels (a model then needs a preset to match)")
    parser.add_argument("--video-spatial-compression", type=int,
                        help="override the preset's video spatial compression, a power of two (a model then needs a "
                             "preset to match, e.g. a larger patch for the same token count)")
    parser.add_argument("--video-temporal-compression", type=int,
                        help="override the preset's pixel frames per latent frame (a model then needs a preset to "
                             "match, e.g. video.patch_t 2 at 1 for the same token count)")
    parser.add_argument("--audio-strides", type=int, nargs="+",
                        help="the audio codec's stride per stage, multiplying to the hop (default: few strides of "
                             "at most 10, smallest first)")
    parser.add_argument("--audio-widths", type=int, nargs="+", help="the audio codec's channels per stage")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clips < 1 or args.held_out < 1:
        parser.error("--minutes, --clips and --held-out must be positive")
    if args.decoder_only and not args.resume:
        parser.error("--decoder-only continues trained codecs: add --resume (and keep --out on the codecs to finetune)")
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    if args.video_latent_channels is not None:
        if args.video_latent_channels < 1:
            parser.error("--video-latent-channels must be >= 1")
        config = config.replace(**{"video.latent_channels": args.video_latent_channels})
    if _audio_layout(args) and args.resume:
        parser.error("--audio-strides/--audio-widths shape a new audio codec; --resume continues the saved one")
    # A layout the codec classes refuse fails here, before minutes of rendering.
    for flag in ("spatial", "temporal"):
        value = getattr(args, f"video_{flag}_compression")
        if value is None:
            continue
        try:
            config = config.replace(**{f"video.{flag}_compression": value})
            _new_codec("video", args, config)
        except ValueError as exc:
            parser.error(f"--video-{flag}-compression: {exc}")
    if _audio_layout(args):
        try:
            _new_codec("audio", args, config)
        except ValueError as exc:
            parser.error(f"--audio-strides/--audio-widths: {exc}")
    names = ("video", "audio") if args.which == "both" else (args.which,)
    # The codecs --resume continues, loaded once; one of another geometry than the preset and flags
    # say fails here, before the rendering.
    saved = {}
    for name in names:
        path = args.out / f"{name}_codec.safetensors"
        if args.resume and path.is_file():
            saved[name] = load_codec(path, kind=f"tiny_{name}")
            try:
                check_codecs(config, **{f"{name}_codec": saved[name]})
            except ValueError as exc:
                parser.error(f"--resume {path}: {exc}; resume with the --preset and --video-* flags it was trained with")
    make = world_source if args.source == "world" else synthetic_source
    source = make(config, args.seconds, args.size)
    t0 = time.perf_counter()
    train_seeds = [TRAIN_SEED_START + args.seed * 100_003 + i for i in range(args.clips)]
    held_seeds = [HELD_OUT_SEED + args.seed * 1_009 + i for i in range(args.held_out)]
    train_set = load_clips(source, train_seeds, config.audio.hop)
    held = load_clips(source, held_seeds, config.audio.hop)
    print(f"rendered {len(train_seeds)} + {len(held_seeds)} clips in {time.perf_counter() - t0:.1f}s: "
          f"video {tuple(train_set.video.shape)}, audio {tuple(train_set.audio.shape)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "codecs_report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if args.resume and report_path.is_file() else {}
    report.update(preset=args.preset, source=args.source, seed=args.seed, train_clips=args.clips,
                  held_out_clips=args.held_out, video_latent_channels=config.video.latent_channels,
                  video_spatial_compression=config.video.spatial_compression,
                  video_temporal_compression=config.video.temporal_compression)
    for name in names:
        report[name] = _train_one(name, args, config, train_set, held, saved.get(name))
    _write_json(report_path, report)
    return report


def _train_one(name: str, args: argparse.Namespace, config: ApolloConfig, data: ClipSet, held: ClipSet,
               saved: TinyVideoVAE | TinyAudioVAE | None) -> dict[str, Any]:
    """Train one codec (or continue `saved`, the one --resume loaded), measure it on `held`, save it."""
    path = args.out / f"{name}_codec.safetensors"
    previous = {"minutes": 0.0, "steps": 0}
    if args.decoder_only and not path.is_file():
        raise SystemExit(f"--decoder-only: no {name} codec at {path} to finetune; train one first (without --decoder-only)")
    if saved is not None:  # main checked its geometry
        codec = saved
        previous.update(read_codec_metadata(path)["extra"].get("trained", {}))
        print(f"resuming {path} after {previous['minutes']:.1f} min, {previous['steps']} steps", flush=True)
    else:
        codec = _new_codec(name, args, config)
    common = dict(lr=args.lr, beta=args.beta, seed=args.seed, max_steps=args.max_steps, decoder_only=args.decoder_only)
    # Refitting the latent statistics would move the latent space a model was trained in.
    if name == "video":
        history = train_codec(codec, data.video, args.minutes, batch=args.video_batch, crop=args.video_crop,
                              crop_size=args.video_crop_size, **common)
        if not args.decoder_only:
            codec.fit_latent_stats(data.video[:64])
        figures = evaluate_video(codec, held.video)
    else:
        history = train_codec(codec, data.audio, args.minutes, batch=args.audio_batch, crop=args.audio_crop, **common)
        if not args.decoder_only:
            codec.fit_latent_stats(data.audio[:64])
        figures = evaluate_audio(codec, held.audio, config.video.fps, held.tones)
    trained = {"minutes": previous["minutes"] + history[-1]["minutes"], "steps": previous["steps"] + history[-1]["step"]}
    decoder = previous.get("decoder_only")  # the share of the totals that trained the decoder alone
    if args.decoder_only:
        decoder = {"minutes": (decoder or {}).get("minutes", 0.0) + history[-1]["minutes"],
                   "steps": (decoder or {}).get("steps", 0) + history[-1]["step"]}
    if decoder:
        trained["decoder_only"] = decoder
    figures.update(params=sum(p.numel() for p in codec.parameters()),
                   **{f"trained_{k}": v for k, v in trained.items() if k != "decoder_only"})
    print(f"{name} held-out:", json.dumps(figures), flush=True)
    save_codec(path, codec, extra={"held_out": figures, "preset": args.preset, "trained": trained})
    return {"held_out": figures, "history": history}

if __name__ == "__main__":
    main()
