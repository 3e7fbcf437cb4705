"""Size, cost and memory estimates for a config and a clip size (`apollo-av info`).

FLOPs count multiply-adds as 2 FLOPs: every linear layer on every token, plus the joint
attention (QK^T and AV) over the concatenated sequence. Parameter counts come from building the
model on the meta device, so they are exact, not formulas.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .config import ApolloConfig
from .model.dit import ApolloDiT
from .model.layers import Modulation

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8_e4m3fn": 1}


@dataclass(frozen=True)
class ClipSize:
    seconds: float
    width: int
    height: int
    fps: float

    def validate(self, config: ApolloConfig) -> None:
        v = config.video
        cell_h = v.spatial_compression * v.patch_h
        cell_w = v.spatial_compression * v.patch_w
        for name, size, cell in (("width", self.width, cell_w), ("height", self.height, cell_h)):
            if size <= 0 or size % cell:
                lo = max(cell, size - size % cell)
                raise ValueError(f"{name}={size} must be a positive multiple of {cell} for {config.name!r}; "
                                 f"nearest valid: {lo} or {lo + cell}")
        if self.seconds <= 0 or self.fps <= 0:
            raise ValueError(f"seconds and fps must be positive, got seconds={self.seconds}, fps={self.fps}")


@dataclass(frozen=True)
class Estimate:
    preset: str
    parameters: int
    parameters_by_part: dict[str, int]
    tokens: dict[str, int]
    flops_per_step: float  # one forward of one sample (cond only)
    flops_per_step_cfg: float  # cond + uncond
    weight_bytes: dict[str, int]
    peak_bytes_inference: dict[str, int]  # weights + activations of the largest block, CFG batch 2

    def to_dict(self) -> dict:
        return asdict(self)


def token_counts(config: ApolloConfig, clip: ClipSize, *, caption_tokens: int | None = None,
                 speech_tokens: int | None = None) -> dict[str, int]:
    v, a = config.video, config.audio
    pixel_frames = max(1, round(clip.seconds * clip.fps))
    latent_frames = v.latent_frames(pixel_frames)
    video = (latent_frames // v.patch_t) * (clip.height // v.spatial_compression // v.patch_h) * (
        clip.width // v.spatial_compression // v.patch_w)
    audio_latents = int(clip.seconds * a.sample_rate) // a.hop
    audio = audio_latents // a.patch
    cap = config.text.max_caption_tokens if caption_tokens is None else caption_tokens
    sp = config.text.max_speech_tokens if speech_tokens is None else speech_tokens
    return {"video": video, "video_text": cap, "audio_text": cap + sp, "audio": audio}


def _linear_macs_per_token(module: nn.Module) -> int:
    """Linear MACs each token pays; adaLN modulation runs once per distinct timestep, not per token."""
    per_step = {id(m.lin) for m in module.modules() if isinstance(m, Modulation)}
    return sum(m.in_features * m.out_features for m in module.modules()
               if isinstance(m, nn.Linear) and id(m) not in per_step)


def estimate(config: ApolloConfig, clip: ClipSize, *, caption_tokens: int | None = None,
             speech_tokens: int | None = None) -> Estimate:
    clip.validate(config)
    model = ApolloDiT(config, attention="sdpa", device="meta")
    parts = {
        "blocks": sum(p.numel() for p in model.blocks.parameters()),
        "speech_encoder": sum(p.numel() for p in model.speech.parameters()),
    }
    total = model.num_parameters()
    parts["embeddings_and_heads"] = total - parts["blocks"] - parts["speech_encoder"]
    tokens = token_counts(config, clip, caption_tokens=caption_tokens, speech_tokens=speech_tokens)
    n_total = sum(tokens.values())
    flops = 0.0
    block = model.blocks[0]
    if config.architecture == "single_tower":
        per_stream = {n: _linear_macs_per_token(block.layers[n]) for n in block.layers}  # a full (not last) block
        attn_pairs = n_total * n_total
    else:
        per_stream = {n: _linear_macs_per_token(tower.layers[n]) for tower in (block.video_tower, block.audio_tower)
                      for n in tower.layers}
        cross = _linear_macs_per_token(block.video_from_audio)
        flops += 2.0 * cross * (tokens["video"] + tokens["audio"]) * config.depth
        nv = tokens["video"] + tokens["video_text"]
        na = tokens["audio"] + tokens["audio_text"]
        attn_pairs = nv * nv + na * na + 2 * tokens["video"] * tokens["audio"]
    for name, n in tokens.items():
        flops += 2.0 * per_stream[name] * n * config.depth
    flops += 4.0 * attn_pairs * config.hidden * config.depth  # QK^T and AV, 2 FLOPs per MAC
    flops += 2.0 * config.video.patch_dim * config.hidden * tokens["video"] * 2  # embed + head
    flops += 2.0 * config.audio.patch_dim * config.hidden * tokens["audio"] * 2
    weight_bytes = {k: total * b for k, b in BYTES.items()}
    # Inference peak: weights + the widest activation of one block for batch 2 (CFG), in bf16,
    # with a flash/SDPA kernel (no N x N score matrix kept).
    act = 2 * n_total * (config.mlp_hidden + 6 * config.hidden) * 2
    peak = {k: w + act for k, w in weight_bytes.items()}
    return Estimate(config.name, total, parts, tokens, flops, 2 * flops, weight_bytes, peak)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def default_clip(config: ApolloConfig) -> ClipSize:
    if config.name == "apollo-26b":
        return ClipSize(seconds=5.0, width=1280, height=720, fps=config.video.fps)
    cell = config.video.spatial_compression * config.video.patch_h
    side = 64 if config.name == "apollo-tiny" else 4 * cell
    return ClipSize(seconds=2.0, width=side, height=side, fps=config.video.fps)


def count_parameters(config: ApolloConfig) -> int:
    with torch.device("meta"):
        return ApolloDiT(config, attention="sdpa", device="meta").num_parameters()
