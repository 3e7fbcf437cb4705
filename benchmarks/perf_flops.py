"""FLOPs of one ApolloDiT forward, counted analytically (for MFU) and by torch (to check the count).

Multiply-adds count 2 FLOPs. Per sample, with D = hidden, M = MLP width, L = depth, n_s tokens in
stream s and N = sum n_s over the active streams:
  blocks     2 L sum_s n_s (4 D^2 + 2 D M)          qkv, out projection, MLP
  attention  4 L N^2 D                               QK^T and AV of the joint sequence
  modulation 2 L S 6 D^2                             adaLN: one row per stream, not per token
  embed      patch/caption projections, the timestep MLP per stream, the two heads
  speech     the checkpoint's byte-level transcript encoder
except that the last block's caption streams only offer keys and values (qkv and a 2-vector
modulation; no output projection, no MLP), as in SD3. `apollo_core.memory.estimate` counts every
block as a full one and leaves the embeddings out; the bench reports its figure beside this one.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from apollo_core.config import ApolloConfig
from apollo_core.streams import STREAM_ORDER, ApolloInputs, LatentStream, audio_token_count, video_token_grid

TIME_FREQ_DIM = 256
CAPTION_STREAMS = ("video_text", "audio_text")  # key/value-only in the last block  # apollo_core.model.layers.TimestepEmbedder's sinusoid width


def input_tokens(config: ApolloConfig, inputs: ApolloInputs) -> tuple[dict[str, int], int]:
    """Tokens per active stream (audio_text includes the transcript) and transcript tokens alone."""
    tokens: dict[str, int] = {}
    speech = 0
    for name in inputs.active():
        s = getattr(inputs, name)
        if isinstance(s, LatentStream):
            if name == "video":
                gt, gh, gw = video_token_grid(config, tuple(s.latent.shape))
                tokens[name] = gt * gh * gw
            else:
                tokens[name] = audio_token_count(config, tuple(s.latent.shape))
        else:
            tokens[name] = s.tokens.shape[1]
            if s.speech is not None:
                speech = s.speech.shape[1]
                tokens[name] += speech
    return tokens, speech


def forward_flops(config: ApolloConfig, tokens: dict[str, int], *, speech_tokens: int = 0, batch: int = 1) -> dict[str, float]:
    """Breakdown and total FLOPs of `ApolloDiT.forward` for a batch with one timestep per sample.

    tokens: per active stream, as `input_tokens` returns (audio_text = caption + transcript).
    """
    if config.architecture != "single_tower":
        raise ValueError(f"forward_flops counts the single-tower model; config {config.name!r} is "
                         f"{config.architecture!r}")
    unknown = sorted(set(tokens) - set(STREAM_ORDER))
    if unknown:
        raise ValueError(f"forward_flops: unknown stream(s) {unknown}; streams are {STREAM_ORDER}")
    if speech_tokens and "audio_text" not in tokens:
        raise ValueError("forward_flops: speech_tokens given without an audio_text stream")
    d, m, depth = config.hidden, config.mlp_hidden, config.depth
    v, a, t = config.video, config.audio, config.text
    n_total = sum(tokens.values())
    streams = len(tokens)
    captions = [n for n in tokens if n in CAPTION_STREAMS]
    n_captions = sum(tokens[n] for n in captions)
    full = 4 * d * d + 2 * d * m  # per token: qkv, out projection, MLP
    linear = 2.0 * (depth * n_total * full - n_captions * (full - 3 * d * d))  # last block: captions run qkv only
    attention = 4.0 * depth * n_total * n_total * d
    modulation = 2.0 * (depth * streams * 6 - len(captions) * 4) * d * d  # last block: captions get (shift, scale)
    embed = 2.0 * streams * (TIME_FREQ_DIM * d + d * d)  # the timestep MLP runs once per stream
    if "video" in tokens:
        embed += 2.0 * tokens["video"] * v.patch_dim * d * 2  # patch embed + head projection
        embed += 2.0 * 2 * d * d  # head adaLN (shift, scale)
    if "audio" in tokens:
        embed += 2.0 * tokens["audio"] * a.patch_dim * d * 2
        embed += 2.0 * 2 * d * d
    for name in ("video_text", "audio_text"):
        if name in tokens:
            captions = tokens[name] - (speech_tokens if name == "audio_text" else 0)
            embed += 2.0 * captions * t.caption_dim * d
    speech = 0.0
    if speech_tokens:
        e = t.speech_dim
        speech = 2.0 * t.speech_layers * speech_tokens * 12 * e * e + 4.0 * t.speech_layers * speech_tokens ** 2 * e
        speech += 2.0 * speech_tokens * e * d
    parts = {"linear": linear, "attention": attention, "modulation": modulation, "embed": embed, "speech": speech}
    out = {k: batch * val for k, val in parts.items()}
    out["total"] = sum(out.values())
    return out


def counted_flops(model: nn.Module, inputs: ApolloInputs) -> int:
    """FLOPs torch's FlopCounterMode sees in one forward (matmul-class ops only). SDPA's CPU kernel
    is not counted by torch, so build `model` with attention="math" for a full count."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return int(counter.get_total_flops())


def block_flops(hidden: int, heads: int, mlp_ratio: float, x_tokens: int, context_tokens: int, batch: int = 1) -> float:
    """FLOPs of one full two-stream MM-DiT joint block (both implementations do the same math)."""
    del heads  # attention FLOPs do not depend on the head split
    m = int(round(hidden * mlp_ratio))
    n = x_tokens + context_tokens
    return batch * (2.0 * n * (4 * hidden * hidden + 2 * hidden * m) + 4.0 * n * n * hidden + 2.0 * 2 * 6 * hidden * hidden)
