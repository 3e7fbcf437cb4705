"""Typed model configuration and the named presets.

A config is plain data: it says how wide, how deep and how each stream is tokenised. Everything
that is not a property of the weights (parallelism, compile, offload) lives outside it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

ROPE_AUDIO_MODES = ("aligned", "offset")
ARCHITECTURES = ("single_tower", "dual_tower")
PREDICTIONS = ("velocity", "x1")


@dataclass(frozen=True)
class VideoConfig:
    """Video latents `[B, C, T, H, W]` as the video codec produces them."""

    latent_channels: int = 8
    fps: float = 8.0  # pixel frame rate the codec was trained for
    temporal_compression: int = 2  # pixel frames per latent frame
    spatial_compression: int = 4  # pixels per latent cell, each side
    causal: bool = False  # causal codecs (CogVideoX) give the first pixel frame its own latent frame
    patch_t: int = 1
    patch_h: int = 2
    patch_w: int = 2

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch_t * self.patch_h * self.patch_w

    @property
    def latent_fps(self) -> float:
        return self.fps / self.temporal_compression

    def latent_frames(self, pixel_frames: int) -> int:
        k = self.temporal_compression
        if self.causal:
            return 1 + (pixel_frames - 1) // k
        return pixel_frames // k

    def pixel_frames(self, latent_frames: int) -> int:
        k = self.temporal_compression
        return 1 + (latent_frames - 1) * k if self.causal else latent_frames * k


@dataclass(frozen=True)
class AudioConfig:
    """Audio latents `[B, C, T]` as the audio codec produces them."""

    latent_channels: int = 16
    sample_rate: int = 16000
    hop: int = 250  # waveform samples per latent frame
    patch: int = 2  # latent frames per token

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.hop


@dataclass(frozen=True)
class TextConfig:
    """Caption embeddings come from an external encoder; the speech-text encoder lives in the
    checkpoint (the paper's "TTS text encoder"), reading UTF-8 bytes."""

    caption_dim: int = 384  # width of the caption encoder's token embeddings
    max_caption_tokens: int = 32
    speech_dim: int = 128
    speech_layers: int = 1
    speech_heads: int = 2
    max_speech_tokens: int = 32
    speech_vocab: int = 259  # 256 bytes + pad + bos + eos


@dataclass(frozen=True)
class ApolloConfig:
    name: str = "custom"
    hidden: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    rope_theta: float = 10000.0
    # Share of each head's rotary pairs given to the (t, h, w) axes; must sum to head_dim // 2.
    rope_axes: tuple[int, int, int] = (16, 8, 8)
    rope_audio: str = "aligned"
    # Temporal RoPE positions per video latent frame. The highest rotary frequency turns one radian
    # per position, so 1.0 lets a query tell apart tokens a whole latent frame apart but barely the
    # audio tokens inside one; a larger scale makes finer time steps distinguishable.
    rope_time_scale: float = 1.0
    # Spatial RoPE positions per latent patch (video h and w). At 1.0, with the default theta and
    # a few pairs per axis, only the fastest pairs turn noticeably between neighbouring patches, so
    # a query barely singles out its own place in another frame; a larger scale sharpens that.
    # apollo-tiny trained with 3.0 gained FD video but lost motion and sync (assets README).
    rope_space_scale: float = 1.0
    architecture: str = "single_tower"
    prediction: str = "velocity"
    qk_norm: bool = True
    # Self-conditioning (Chen et al., "Analog Bits", 2022): each generated stream also reads the
    # clean estimate of the previous sampling step through a zero-initialised projection, so a
    # small model can keep the layout it committed to early instead of re-inventing it from x_t
    # at every step. Training feeds a no-grad first estimate to half the batches. apollo-tiny
    # trained with it from scratch drew better audio but dropped objects; on the audio alone it
    # drew worse audio and still weaker objects (assets README).
    self_condition: bool = False
    # Which generated streams read their estimate (with `self_condition`); ("audio",) leaves the
    # video path exactly as without it.
    self_condition_streams: tuple[str, ...] = ("video", "audio")
    # Correlation of the video's flow noise between neighbouring latent frames (AR(1) along time,
    # unit variance per element; 0 = independent, the usual Gaussian). With it, the noise hides
    # what changes from frame to frame less than what stays, so the clip's motion shows through
    # earlier in sampling (PYoCo, Ge et al. 2023). A property of the weights: the noise a model
    # was trained on is the noise it must sample from. apollo-tiny trained with 0.7 lost sync and
    # moving objects (assets README).
    video_noise_corr: float = 0.0
    # Each generated stream's adaLN vector also carries its caption, mean-pooled (SD3's pooled text
    # vector, per stream here: the video's caption for the video, the audio's for the audio), on
    # top of the caption tokens in the joint attention. A global path: every token learns what the
    # clip should hold (e.g. which shape) without first finding the word by attention. Its last
    # projection starts at zero, so it can be switched on for a trained model (init_from).
    # apollo-tiny trained with it gained pitch and FD audio but not shape, and lost sync and
    # motion (assets README).
    pooled_text: bool = False
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        check = _Checker(self.name)
        check.positive("hidden", self.hidden)
        check.positive("depth", self.depth)
        check.positive("heads", self.heads)
        if self.hidden % self.heads:
            raise ValueError(f"config {self.name!r}: hidden={self.hidden} must be divisible by heads={self.heads}")
        if self.head_dim % 2:
            raise ValueError(f"config {self.name!r}: head_dim={self.head_dim} must be even for RoPE")
        if len(self.rope_axes) != 3 or sum(self.rope_axes) != self.head_dim // 2:
            raise ValueError(
                f"config {self.name!r}: rope_axes={tuple(self.rope_axes)} must be three numbers summing to "
                f"head_dim // 2 = {self.head_dim // 2}"
            )
        check.choice("rope_audio", self.rope_audio, ROPE_AUDIO_MODES)
        check.positive("rope_time_scale", self.rope_time_scale)
        check.positive("rope_space_scale", self.rope_space_scale)
        check.choice("architecture", self.architecture, ARCHITECTURES)
        streams = tuple(self.self_condition_streams)
        if not streams or len(set(streams)) != len(streams) or not set(streams) <= {"video", "audio"}:
            raise ValueError(f"config {self.name!r}: self_condition_streams={streams} must name video and/or "
                             "audio, each once")
        check.choice("prediction", self.prediction, PREDICTIONS)
        if not (isinstance(self.video_noise_corr, (int, float)) and 0.0 <= self.video_noise_corr < 1.0):
            raise ValueError(f"config {self.name!r}: video_noise_corr must be in [0, 1) (0 = independent noise), "
                             f"got {self.video_noise_corr!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"config {self.name!r}: mlp_ratio must be > 0, got {self.mlp_ratio}")
        for sub in (self.video, self.audio, self.text):
            for f in fields(sub):
                value = getattr(sub, f.name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    check.positive(f"{type(sub).__name__}.{f.name}", value)
        if self.architecture == "dual_tower" and self.depth < 1:
            raise ValueError(f"config {self.name!r}: dual_tower needs depth >= 1")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def self_conditioned(self) -> tuple[str, ...]:
        """The streams that read the previous clean estimate (none without `self_condition`)."""
        return tuple(self.self_condition_streams) if self.self_condition else ()

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.hidden * self.mlp_ratio))

    def replace(self, **overrides: Any) -> "ApolloConfig":
        """A copy with top-level or dotted (`video.fps`) fields replaced; unknown names raise."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if "." in key:
                sub, name = key.split(".", 1)
                nested.setdefault(sub, {})[name] = value
            else:
                top[key] = value
        data = self.to_dict()
        for sub, values in nested.items():
            if sub not in ("video", "audio", "text"):
                raise ValueError(f"unknown config section {sub!r}; expected video, audio or text")
            data[sub].update(values)
        data.update(top)
        return ApolloConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "ApolloConfig":
        data = dict(data)
        subs = {"video": VideoConfig, "audio": AudioConfig, "text": TextConfig}
        for key, cls in subs.items():
            if key in data and not isinstance(data[key], cls):
                data[key] = _build(cls, data[key], f"{key}.")
        for key in ("rope_axes", "self_condition_streams"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return _build(ApolloConfig, data, "")

    @staticmethod
    def from_json(text: str) -> "ApolloConfig":
        return ApolloConfig.from_dict(json.loads(text))


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config option(s) {[prefix + u for u in unknown]}; known: {sorted(known)}")
    return cls(**data)


class _Checker:
    def __init__(self, name: str) -> None:
        self.name = name

    def positive(self, field_name: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"config {self.name!r}: {field_name} must be a positive number, got {value!r}")

    def choice(self, field_name: str, value: str, options: tuple[str, ...]) -> None:
        if value not in options:
            raise ValueError(f"config {self.name!r}: {field_name}={value!r} is not one of {options}")


PRESETS: dict[str, ApolloConfig] = {
    # Tests: under 1M parameters, every code path on.
    "debug": ApolloConfig(
        name="debug",
        hidden=64,
        depth=2,
        heads=2,
        rope_axes=(8, 4, 4),
        video=VideoConfig(latent_channels=4, fps=8.0, temporal_compression=2, spatial_compression=4),
        audio=AudioConfig(latent_channels=4, sample_rate=8000, hop=250, patch=2),
        text=TextConfig(caption_dim=384, max_caption_tokens=32, speech_dim=32, speech_layers=1, speech_heads=2),
    ),
    # The embedded default, trained on this CPU (see training/configs/apollo-tiny.yaml): 64x64 px,
    # 8 fps, 2 s clips; 16 kHz audio; ~230 tokens. Width and depth are sized for an AVX2 CPU with
    # no fast bf16: 192 x 4 trains ~2.4x faster than 256 x 6 (measured), which is what lets it see
    # enough clips within the hour (shared/design/FEASIBILITY.md).
    "apollo-tiny": ApolloConfig(
        name="apollo-tiny",
        hidden=192,
        depth=4,
        heads=3,
        rope_axes=(16, 8, 8),
        # One temporal position per audio token (8 per video latent frame): with 1.0 the same
        # recipe ended with a 24-30% higher audio training loss and weaker sounds (assets README).
        rope_time_scale=8.0,
        prediction="x1",
        video=VideoConfig(latent_channels=8, fps=8.0, temporal_compression=2, spatial_compression=8,
                          patch_t=1, patch_h=2, patch_w=2),
        audio=AudioConfig(latent_channels=16, sample_rate=16000, hop=250, patch=2),
        text=TextConfig(caption_dim=384, max_caption_tokens=32, speech_dim=128, speech_layers=1,
                        speech_heads=2, max_speech_tokens=32),
    ),
    # The paper's model (section 5.1): 32 joint layers, Qwen2.5-7B captions (3584-d), a 1024-d
    # speech-text encoder, CogVideoX-style causal video latents at 3 Hz with 16x spatial
    # compression per token (8x codec, 2x2 patch), 44.1 kHz audio at 1024x (43.07 Hz). The width
    # is not published: 3328 (26 heads of 128) is the width at which this layout counts 26B.
    "apollo-26b": ApolloConfig(
        name="apollo-26b",
        hidden=3328,
        depth=32,
        heads=26,
        rope_axes=(32, 16, 16),
        video=VideoConfig(latent_channels=16, fps=24.0, temporal_compression=8, spatial_compression=8,
                          causal=True, patch_t=1, patch_h=2, patch_w=2),
        audio=AudioConfig(latent_channels=64, sample_rate=44100, hop=1024, patch=1),
        text=TextConfig(caption_dim=3584, max_caption_tokens=512, speech_dim=1024, speech_layers=4,
                        speech_heads=16, max_speech_tokens=512),
    ),
}


def get_preset(name: str) -> ApolloConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
