"""Inputs and model variants the performance bench times: random latents and prompts of a clip
size, the masked-dense formulation of a task, and a video-only model sharing the weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from apollo_core.config import ApolloConfig
from apollo_core.model.block import BlockContext, JointBlock
from apollo_core.model.dit import ApolloDiT
from apollo_core.objective import Conditioning, assemble
from apollo_core.pipeline import geometry
from apollo_core.streams import ApolloInputs
from apollo_core.tasks import Task

VIDEO_STREAMS = ("video", "video_text")


@dataclass(frozen=True)
class Clip:
    seconds: float
    width: int
    height: int

    def to_dict(self) -> dict:
        return asdict(self)


def random_model(config: ApolloConfig, *, attention: str = "sdpa", seed: int = 0) -> ApolloDiT:
    """An fp32 model in eval mode with every weight drawn small and non-zero, so no adaLN-Zero
    gate or zero head makes a path trivially cheap."""
    torch.manual_seed(seed)
    model = ApolloDiT(config, attention=attention)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def to_bf16(model: ApolloDiT) -> ApolloDiT:
    """Weights and activations in bf16 (the pipeline's own low-precision path)."""
    model.to(torch.bfloat16)
    model.compute_dtype = torch.bfloat16
    return model


def conditioning(config: ApolloConfig, batch: int, *, padding: int = 0, seed: int = 0) -> Conditioning:
    """Random caption embeddings and transcript bytes at the config's maximum lengths; the last
    `padding` caption tokens are masked out (real prompts are shorter than the maximum)."""
    t = config.text
    if not 0 <= padding < t.max_caption_tokens:
        raise ValueError(f"padding={padding} must be in [0, {t.max_caption_tokens}) for {config.name!r}")
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, t.max_caption_tokens, dtype=torch.bool)
    if padding:
        mask[:, -padding:] = False
    lc, s = t.max_caption_tokens, t.max_speech_tokens
    return Conditioning(torch.randn(batch, lc, t.caption_dim, generator=g), mask,
                        torch.randn(batch, lc, t.caption_dim, generator=g), mask.clone(),
                        torch.randint(0, 256, (batch, s), generator=g), torch.ones(batch, s, dtype=torch.bool))


def latents(config: ApolloConfig, clip: Clip, batch: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Noise of the latent shapes `generate` uses for this clip: video `[B, C, T, H, W]`, audio `[B, C, T]`."""
    geo = geometry(config, clip.seconds, clip.width, clip.height)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *geo.video_latent, generator=g), torch.randn(batch, *geo.audio_latent, generator=g)


def task_inputs(config: ApolloConfig, task: Task, clip: Clip, batch: int, *, padding: int = 0, seed: int = 0) -> ApolloInputs:
    video, audio = latents(config, clip, batch, seed=seed)
    t = torch.full((batch,), 0.5)
    return assemble(config, task, video=video, audio=audio, t=t, cond=conditioning(config, batch, padding=padding, seed=seed))


def masked_dense_forward(model: ApolloDiT, inputs: ApolloInputs, keep: tuple[str, ...]) -> dict[str, Tensor]:
    """The paper's formulation of a sub-task: every stream in the sequence, the absent ones removed
    from attention by a key mask (their tokens still pay for QKV, MLP and attention rows)."""
    x, ctx = model.prepare(inputs)
    b = inputs.batch
    parts = [torch.full((b, s.length), name in keep, dtype=torch.bool) for name, s in ctx.streams.items()]
    if ctx.key_mask is not None:
        parts = [p & m for p, m in zip(parts, ctx.key_mask.split([s.length for s in ctx.streams.values()], dim=1))]
    ctx = BlockContext(ctx.streams, torch.cat(parts, dim=1))  # [B, N_total]
    for block in model.blocks:
        x = block(x, ctx)
    return model.finalize(x, ctx, inputs)


def video_only_blocks(model: ApolloDiT) -> nn.ModuleList:
    """Blocks holding only the video and video-caption weights of `model` (a video-only MM-DiT
    with identical weights): the reference a unified model's T2V should match."""
    blocks = nn.ModuleList()
    for block in model.blocks:
        if not isinstance(block, JointBlock):
            raise ValueError("video_only_blocks needs a single-tower model (JointBlock blocks)")
        pre_only = tuple(n for n in VIDEO_STREAMS if block.layers[n].pre_only)
        only = JointBlock(model.config, VIDEO_STREAMS, block.attention, pre_only=pre_only)
        state = {k: v for k, v in block.state_dict().items() if k.split(".")[1] in VIDEO_STREAMS}
        only.load_state_dict(state, strict=True)
        blocks.append(only)
    return blocks.to(next(model.parameters()).dtype).eval()


def run_blocks(model: ApolloDiT, blocks: nn.ModuleList, inputs: ApolloInputs) -> dict[str, Tensor]:
    """`model.forward` with another block stack (same prepare and finalize)."""
    x, ctx = model.prepare(inputs)
    for block in blocks:
        x = block(x, ctx)
    return model.finalize(x, ctx, inputs)
