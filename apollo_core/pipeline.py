"""`generate(bundle, request) -> AVClip`: the one place that chains text encoder, codecs, model
and sampler. The CLI and the ComfyUI nodes call the stages below; none of them re-implements one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .avio import AVClip, fit_audio
from .checkpoint import load_model, read_config
from .codecs import AudioCodec, VideoCodec, check_codecs, load_codec
from .config import ApolloConfig
from .flow import frame_noise
from .model.dit import ApolloDiT
from .objective import Conditioning, assemble, clean_estimates, estimate_streams, velocities
from .sampling import ANCESTRAL_ETA, Solver, StepCallback, check_spread, cross_modal_guided, guided, sample
from .tasks import Role, Task
from .text import TextEncoder, encode_speech, load_text_encoder

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = "apollo-tiny"
DEFAULT_STEPS = 25  # when neither the request nor the checkpoint's defaults name a step count
DEFAULT_SOLVER = "euler"  # likewise for the sampler
MODEL_FILE, VIDEO_CODEC_FILE, AUDIO_CODEC_FILE = "model.safetensors", "video_codec.safetensors", "audio_codec.safetensors"


def default_checkpoint() -> Path:
    return ASSETS / DEFAULT_MODEL


@dataclass
class Bundle:
    """Everything a generation needs, loaded once."""

    model: ApolloDiT
    video_codec: VideoCodec
    audio_codec: AudioCodec
    text_encoder: TextEncoder
    defaults: dict = field(default_factory=dict)  # width, height, seconds the model was trained at

    @property
    def config(self) -> ApolloConfig:
        return self.model.config


def resolve_checkpoint(path: str | Path | None) -> tuple[Path, Path, Path]:
    """A folder with model + codec files, or a model file whose codecs sit beside it."""
    p = Path(path) if path is not None else default_checkpoint()
    folder = p if p.is_dir() else p.parent
    model = p / MODEL_FILE if p.is_dir() else p
    if not model.is_file():
        raise ValueError(f"checkpoint {p}: no model file {model.name} there; pass a folder holding "
                         f"{MODEL_FILE}, {VIDEO_CODEC_FILE} and {AUDIO_CODEC_FILE}, or the model file itself")
    codecs = folder / VIDEO_CODEC_FILE, folder / AUDIO_CODEC_FILE
    for c in codecs:
        if not c.is_file():
            raise ValueError(f"checkpoint {p}: codec file {c} is missing; it must sit beside the model file")
    return model, codecs[0], codecs[1]


def load_bundle(path: str | Path | None = None, *, attention: str = "auto", device: str = "cpu",
                weight_dtype: str = "auto", text_encoder: str | None = None) -> Bundle:
    model_path, video_path, audio_path = resolve_checkpoint(path)
    _, extra = read_config(model_path)
    model = load_model(model_path, attention=attention, weight_dtype=weight_dtype, device=device)
    video_codec = load_codec(video_path, device=device)
    audio_codec = load_codec(audio_path, device=device)
    check_codecs(model.config, video_codec, audio_codec)
    encoder = load_text_encoder(text_encoder or extra.get("text_encoder", "minilm"), device=device)
    if encoder.dim != model.config.text.caption_dim:
        raise ValueError(f"text encoder {encoder.name!r} gives {encoder.dim}-d embeddings; the model was trained on "
                         f"{model.config.text.caption_dim}-d captions")
    return Bundle(model, video_codec, audio_codec, encoder, extra.get("defaults", {}))


@dataclass(frozen=True)
class Geometry:
    """Sizes of one clip in pixels, samples and latents."""

    frames: int
    height: int
    width: int
    samples: int
    video_latent: tuple[int, int, int, int]  # C, T, H, W
    audio_latent: tuple[int, int]  # C, T


def geometry(config: ApolloConfig, seconds: float, width: int, height: int) -> Geometry:
    """Validate a clip size against the codecs' compression and the patch sizes; errors give the
    nearest valid values."""
    v, a = config.video, config.audio
    cell = v.spatial_compression * v.patch_h, v.spatial_compression * v.patch_w
    for name, size, c in (("height", height, cell[0]), ("width", width, cell[1])):
        if size <= 0 or size % c:
            lo = max(c, size - size % c)
            raise ValueError(f"{name}={size} is not a multiple of {c} (codec {v.spatial_compression}x, patch); "
                             f"nearest valid: {lo} or {lo + c}")
    step = v.temporal_compression * v.patch_t / v.fps  # seconds per video token step
    latent_t = round(seconds / step) * v.patch_t
    if seconds <= 0 or latent_t < v.patch_t or not math.isclose(latent_t / v.patch_t * step, seconds, rel_tol=1e-6, abs_tol=1e-6):
        lo = max(step, math.floor(seconds / step) * step)
        raise ValueError(f"seconds={seconds:g} is not a multiple of {step:g} s at {v.fps:g} fps; nearest valid: "
                         f"{lo:g} or {lo + step:g}")
    frames = v.pixel_frames(latent_t)
    duration = frames / v.fps
    audio_t = round(duration * a.sample_rate / a.hop / a.patch) * a.patch
    return Geometry(frames, height, width, round(duration * a.sample_rate),
                    (v.latent_channels, latent_t, height // v.spatial_compression, width // v.spatial_compression),
                    (a.latent_channels, audio_t))


# -- stages --------------------------------------------------------------------------------
def encode_prompts(encoder: TextEncoder, config: ApolloConfig, video: list[str], audio: list[str],
                   speech: list[str]) -> Conditioning:
    t = config.text
    ve = encoder.encode(list(video), t.max_caption_tokens)
    ae = encoder.encode(list(audio), t.max_caption_tokens)
    ids, mask = encode_speech(list(speech), t.max_speech_tokens)
    return Conditioning(ve.tokens, ve.mask, ae.tokens, ae.mask, ids, mask)


def encode_frames(codec: VideoCodec, frames: Tensor) -> Tensor:
    """Frames `[B, T, H, W, 3]` in 0..1 -> latents `[B, C, T', H', W']`."""
    x = frames.permute(0, 4, 1, 2, 3).float() * 2 - 1  # [B, 3, T, H, W]
    with torch.no_grad():
        return codec.encode(x)


def encode_image(codec: VideoCodec, image: Tensor) -> Tensor:
    """A still `[B, H, W, 3]` -> the first latent frame `[B, C, 1, H', W']` (a causal codec encodes it
    alone; otherwise it is held for the frames the first latent covers)."""
    hold = 1 if codec.causal else codec.temporal_compression
    return encode_frames(codec, image[:, None].expand(-1, hold, -1, -1, -1))[:, :, :1]


def encode_waveform(codec: AudioCodec, waveform: Tensor) -> Tensor:
    """`[B, C, S]` -> latents `[B, C', S // hop]`."""
    with torch.no_grad():
        return codec.encode(waveform.float())


def decode_video(codec: VideoCodec, latents: Tensor, frames: int | None = None, chunk_frames: int = 0) -> Tensor:
    """Latents `[B, C, T', H', W']` -> frames `[B, T, H, W, 3]` 0..1, cut to `frames`. With
    chunk_frames > 0 and a codec offering `decode_chunked`, that many latent frames are decoded at a
    time (same frames, bounded memory for long clips)."""
    chunked = getattr(codec, "decode_chunked", None)
    with torch.no_grad():
        z = latents.float()
        x = chunked(z, chunk_frames) if chunk_frames > 0 and chunked is not None else codec.decode(z)  # [B, 3, T, H, W]
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)[:, :frames].contiguous()


def decode_audio(codec: AudioCodec, latents: Tensor, samples: int) -> Tensor:
    """Latents `[B, C, T]` -> waveform `[B, channels, samples]` in -1..1 (trimmed or zero-padded)."""
    with torch.no_grad():
        w = codec.decode(latents.float()).clamp(-1, 1)  # [B, channels, T * hop]
    return torch.stack([fit_audio(x, samples) for x in w])


def decode(bundle: Bundle, latents: dict[str, Tensor], geo: Geometry) -> tuple[Tensor | None, Tensor | None]:
    """-> frames `[B, T, H, W, 3]` 0..1 and waveform `[B, C, S]`, both cut to the clip length."""
    frames = decode_video(bundle.video_codec, latents["video"], geo.frames) if "video" in latents else None
    wave = decode_audio(bundle.audio_codec, latents["audio"], geo.samples) if "audio" in latents else None
    return frames, wave


_OTHER = {"video": "audio", "audio": "video"}


def denoise(model: ApolloDiT, task: Task, cond: Conditioning, uncond: Conditioning | None, init: dict[str, Tensor], *,
            steps: int, video_cfg: float, audio_cfg: float, shift: float, solver: str | Solver,
            callback: StepCallback | None = None, video_sync_cfg: float = 0.0,
            audio_sync_cfg: float = 0.0, eta: float = ANCESTRAL_ETA,
            generator: torch.Generator | None = None, spread: float = 0.0,
            start: float = 0.0) -> dict[str, Tensor]:
    """Integrate the task's generated modalities from noise to data. `init` holds noise for the
    generated modalities (with a given first frame already in place) and clean latents for given
    ones. Cond and uncond run as one batch. `*_sync_cfg` (0 = off) adds cross-modal guidance to a
    generated stream whose task also has the other stream: one more conditioned pass per step
    with the other stream dropped (`Task.without`), see `sampling.cross_modal_guided`. `eta` and
    `generator`: the fresh noise of the ancestral solver (`sampling.sample`). `spread` > 0: earlier
    frames run ahead of later ones by that much in logit time (`flow.spread_times`). `start` > 0:
    `init`'s generated modalities are already noised to that flow time (`sampling.sample`)."""
    config = model.config
    spec = task.spec
    scales = {"video": video_cfg, "audio": audio_cfg}
    guide = uncond is not None and any(scales[m] != 1.0 for m in spec.generates)
    both = Conditioning.cat([cond, uncond]) if guide else cond
    b = cond.batch
    sync = {m: s for m, s in (("video", video_sync_cfg), ("audio", audio_sync_cfg))
            if s != 0.0 and m in spec.generates and _OTHER[m] in spec.streams}
    alone = {m: task.without(_OTHER[m]) for m in sync}

    # A self-conditioned model reads the previous step's (guided) clean estimate; every pass of a
    # step reads the same one. None before the first step.
    previous: dict[str, Tensor] = {}
    reads = estimate_streams(config, task)

    def velocity_fn(state: dict[str, Tensor], t: float) -> dict[str, Tensor]:
        x = {k: torch.cat([v, v]) if guide else v for k, v in state.items()}
        est = {k: torch.cat([v, v]) if guide else v for k, v in previous.items()}
        tt = torch.full((x[next(iter(x))].shape[0],), t, dtype=torch.float32, device=both.video_tokens.device)
        sp = torch.full_like(tt, spread) if spread > 0 else None  # [2B or B]
        inputs = assemble(config, task, video=x.get("video"), audio=x.get("audio"), t=tt, cond=both, estimate=est,
                          spread=sp)
        with torch.no_grad():
            v = velocities(model, task, inputs, x, tt, sp)
        v_cond = {k: u[:b] for k, u in v.items()} if guide else v
        out = guided(v_cond, {k: u[b:] for k, u in v.items()}, scales) if guide else v
        if sync:
            v_alone = {}
            for m, sub in alone.items():
                own = {m: state[m]}  # [B, C, ...] the stream alone, conditioned on its caption
                inputs = assemble(config, sub, video=own.get("video"), audio=own.get("audio"), t=tt[:b], cond=cond,
                                  estimate={m: previous[m]} if m in previous else None,
                                  spread=None if sp is None else sp[:b])
                with torch.no_grad():
                    v_alone[m] = velocities(model, sub, inputs, own, tt[:b], None if sp is None else sp[:b])[m]
            out = cross_modal_guided(out, v_cond, v_alone, sync)
        if reads:
            previous.update(clean_estimates(task, state, {k: out[k] for k in reads}, tt[:b],
                                            None if sp is None else sp[:b]))
        return out

    return sample(velocity_fn, init, steps=steps, shift=shift, solver=solver, callback=callback, eta=eta,
                  generator=generator, noise_corr={"video": config.video_noise_corr}, spread=spread, start=start)


@dataclass(frozen=True)
class Request:
    task: Task
    video_prompt: str = ""
    audio_prompt: str = ""
    speech: str = ""
    negative_video: str = ""
    negative_audio: str = ""
    image: Tensor | None = None  # [H, W, 3] 0..1 (TI2V, TI2AV)
    video: Tensor | None = None  # [T, H, W, 3] 0..1 at the model's fps (V2A)
    audio: Tensor | None = None  # [C, S] at the model's sample rate (A2V)
    seconds: float | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None  # None: the checkpoint's recommended steps (defaults["steps"]), else DEFAULT_STEPS
    video_cfg: float = 3.0
    audio_cfg: float = 3.0
    # cross-modal guidance; None: the checkpoint's recommended value (defaults["<name>"]), else 0 (off)
    video_sync_cfg: float | None = None
    audio_sync_cfg: float | None = None
    shift: float = 1.0
    # None: the checkpoint's recommended sampler and eta (defaults["solver"], defaults["eta"]), else
    # DEFAULT_SOLVER and ANCESTRAL_ETA; eta (euler_ancestral only) is the share of fresh noise per step
    solver: str | None = None
    eta: float | None = None
    # None: the checkpoint's recommended frame spread (defaults["spread"]), else 0 (every frame at one time)
    spread: float | None = None
    seed: int = 0


def sampling_steps(bundle: Bundle, steps: int | None) -> int:
    """`steps` when given, else the steps the checkpoint records as enough (its quality was
    measured there), else DEFAULT_STEPS."""
    resolved = int(steps if steps is not None else bundle.defaults.get("steps", DEFAULT_STEPS))
    if resolved < 1:
        raise ValueError(f"steps must be >= 1, got {resolved}")
    return resolved


def sampler_settings(bundle: Bundle, solver: str | None, eta: float | None) -> tuple[str, float]:
    """(solver, eta): the values given, else the checkpoint's recommended ones (its quality was
    measured with them), else DEFAULT_SOLVER and ANCESTRAL_ETA. eta is checked where it is used
    (`sampling.sample`)."""
    name = Solver.parse(solver if solver is not None else bundle.defaults.get("solver", DEFAULT_SOLVER)).value
    return name, float(eta if eta is not None else bundle.defaults.get("eta", ANCESTRAL_ETA))


def frame_spread(defaults: dict, spread: float | None) -> float:
    """The frame spread given, else the checkpoint's recommended one (its `defaults["spread"]`: a
    bundle's, or a loaded ComfyUI model's), else 0."""
    return check_spread(spread if spread is not None else defaults.get("spread", 0.0))


def sync_scales(bundle: Bundle, video: float | None, audio: float | None) -> tuple[float, float]:
    """(video, audio) cross-modal guidance: the values given, else the checkpoint's recommended
    (defaults["video_sync_cfg"], defaults["audio_sync_cfg"]), else 0 (off)."""
    out = []
    for name, value in (("video_sync_cfg", video), ("audio_sync_cfg", audio)):
        value = float(value if value is not None else bundle.defaults.get(name, 0.0))
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        out.append(value)
    return out[0], out[1]


def generate(bundle: Bundle, request: Request, callback: StepCallback | None = None) -> AVClip:
    config, task, spec = bundle.config, request.task, request.task.spec
    steps = sampling_steps(bundle, request.steps)
    solver, eta = sampler_settings(bundle, request.solver, request.eta)
    video_sync, audio_sync = sync_scales(bundle, request.video_sync_cfg, request.audio_sync_cfg)
    seconds = request.seconds or bundle.defaults.get("seconds", 2.0)
    width = request.width or bundle.defaults.get("width", 64)
    height = request.height or bundle.defaults.get("height", 64)
    if task.needs_image and request.image is None:
        raise ValueError(f"task {task.value} needs a reference image (--image)")
    if task.needs_video and request.video is None:
        raise ValueError(f"task {task.value} needs an input video (--video)")
    if task.needs_audio and request.audio is None:
        raise ValueError(f"task {task.value} needs an input audio (--audio)")
    if request.video is not None and task.needs_video:
        seconds = request.video.shape[0] / config.video.fps
        height, width = request.video.shape[1:3]
    if request.image is not None and task.needs_image:
        height, width = request.image.shape[:2]
    geo = geometry(config, seconds, width, height)
    device = next(bundle.model.parameters()).device
    cond = encode_prompts(bundle.text_encoder, config, [request.video_prompt], [request.audio_prompt], [request.speech]).to(device)
    uncond = encode_prompts(bundle.text_encoder, config, [request.negative_video], [request.negative_audio], [""]).to(device)
    gen = torch.Generator().manual_seed(request.seed)
    init: dict[str, Tensor] = {}
    if spec.has_video:
        init["video"] = frame_noise((1, *geo.video_latent), config.video_noise_corr, generator=gen)
        if spec.video is Role.GIVEN:
            init["video"] = encode_frames(bundle.video_codec, request.video[None, : geo.frames])
        elif spec.first_frame_given:
            init["video"][:, :, :1] = encode_image(bundle.video_codec, request.image[None])
    if spec.has_audio:
        init["audio"] = torch.randn(1, *geo.audio_latent, generator=gen)
        if spec.audio is Role.GIVEN:
            wave = fit_audio(request.audio.mean(0, keepdim=True), geo.audio_latent[1] * config.audio.hop)
            init["audio"] = encode_waveform(bundle.audio_codec, wave[None])
    init = {k: v.to(device) for k, v in init.items()}
    out = denoise(bundle.model, task, cond, uncond, init, steps=steps, video_cfg=request.video_cfg,
                  audio_cfg=request.audio_cfg, shift=request.shift, solver=solver, callback=callback,
                  video_sync_cfg=video_sync, audio_sync_cfg=audio_sync, eta=eta, generator=gen,
                  spread=frame_spread(bundle.defaults, request.spread))
    frames, wave = decode(bundle, out, geo)
    if spec.video is Role.GIVEN:
        frames = request.video[None, : geo.frames]
    if spec.audio is Role.GIVEN:
        wave = fit_audio(request.audio, geo.samples)[None]
    return AVClip(frames=None if frames is None else frames[0], waveform=None if wave is None else wave[0],
                  fps=config.video.fps if frames is not None else None,
                  sample_rate=config.audio.sample_rate if wave is not None else None)


def describe(bundle: Bundle) -> str:
    return json.dumps({"preset": bundle.config.name, "defaults": bundle.defaults})
