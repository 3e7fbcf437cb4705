"""MM-DiT blocks.

`JointBlock` is SD3's MM-DiT block generalised to any set of streams: each stream has its own
adaLN-Zero modulation, QKV (with QK RMSNorm), output projection and MLP; one joint ("Omni-Full")
attention runs over the concatenation of the streams present. A stream missing from the input
simply is not in the concatenation.

`DualTowerBlock` is the paper's Table 2 baseline: a video tower (video + video caption) and an
audio tower (audio text + audio), each a joint block, joined only by bidirectional
cross-attention between video and audio tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ApolloConfig
from .attention import AttentionFn
from .layers import MLP, CastOps, Modulation, RMSNorm, factory, layer_norm, rms_norm
from .rope import apply_rope


@dataclass(frozen=True)
class StreamContext:
    """What a block needs besides the hidden states of one stream.

    length: tokens N. temb: `[U, D]` embeddings of the distinct timesteps; index: `[B, N]` row
    per token, or None when there is one timestep per sample (U == B). cos/sin: RoPE tables
    `[(B,) N, 1, D_head/2]` or None (text is not rotated). mask: `[B, N]` bool or None.
    """

    length: int
    temb: Tensor
    index: Tensor | None
    cos: Tensor | None
    sin: Tensor | None
    mask: Tensor | None


@dataclass(frozen=True)
class BlockContext:
    streams: dict[str, StreamContext]
    key_mask: Tensor | None  # [B, N_total] over the joint sequence, None when nothing is padded

    @staticmethod
    def build(streams: dict[str, StreamContext], batch: int) -> "BlockContext":
        return BlockContext(streams, join_masks(streams, batch))


def join_masks(streams: dict[str, StreamContext], batch: int) -> Tensor | None:
    """Key mask over the concatenated streams; None (the fast, unmasked path) when no stream
    has a padded token."""
    if all(s.mask is None for s in streams.values()):
        return None
    device = next(s.mask for s in streams.values() if s.mask is not None).device
    parts = [s.mask if s.mask is not None else torch.ones(batch, s.length, dtype=torch.bool, device=device)
             for s in streams.values()]
    return torch.cat(parts, dim=1)  # [B, N_total]


class StreamLayer(nn.Module):
    """One stream's weights inside a joint block.

    pre_only: the stream only offers keys and values (no output projection, no MLP). The last
    block's caption streams are built so: nothing reads their output (SD3 does the same).
    """

    def __init__(self, config: ApolloConfig, *, pre_only: bool = False, dtype=None, device=None,
                 operations=CastOps) -> None:
        super().__init__()
        d, hd = config.hidden, config.head_dim
        kw = dict(dtype=dtype, device=device)
        self.heads = config.heads
        self.pre_only = pre_only
        self.mod = Modulation(d, 2 if pre_only else 6, operations=operations, **kw)
        self.qkv = operations.Linear(d, 3 * d, **factory(dtype, device))
        self.q_norm = RMSNorm(hd, **kw) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, **kw) if config.qk_norm else nn.Identity()
        if not pre_only:
            self.proj = operations.Linear(d, d, **factory(dtype, device))
            self.mlp = MLP(d, config.mlp_hidden, operations=operations, **kw)

    def pre_attention(self, x: Tensor, ctx: StreamContext) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        mods = self.mod(ctx.temb, ctx.index)  # [B, 1|N, D] each
        shift1, scale1 = mods[0], mods[1]
        h = torch.addcmul(shift1, layer_norm(x), 1 + scale1)  # [B, N, D]; modulate in one pass
        qkv = self.qkv(h).unflatten(-1, (3, self.heads, -1))  # [B, N, 3, H, Dh]
        # q and k go through norm and RoPE together (one kernel each instead of two)
        qk = qkv[:, :, :2]  # [B, N, 2, H, Dh]
        if isinstance(self.q_norm, RMSNorm):
            weight = torch.stack([self.q_norm.weight, self.k_norm.weight])[:, None]  # [2, 1, Dh]
            qk = rms_norm(qk, weight, self.q_norm.eps)
        if ctx.cos is not None:
            qk = apply_rope(qk, ctx.cos.unsqueeze(-2), ctx.sin.unsqueeze(-2))  # tables [(B,) N, 1, 1, Dh/2]
        q, k = qk.unbind(2)  # [B, N, H, Dh] each
        return q, k, qkv[:, :, 2], mods[2:]

    def post_attention(self, x: Tensor, attn: Tensor, mods: list[Tensor]) -> Tensor:
        if self.pre_only:
            return x
        gate1, shift2, scale2, gate2 = mods
        x = torch.addcmul(x, gate1, self.proj(attn.flatten(-2)))  # [B, N, D]
        return torch.addcmul(x, gate2, self.mlp(torch.addcmul(shift2, layer_norm(x), 1 + scale2)))  # [B, N, D]


class JointBlock(nn.Module):
    def __init__(self, config: ApolloConfig, names: tuple[str, ...], attention: AttentionFn, *,
                 pre_only: tuple[str, ...] = (), dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        self.names = names
        self.attention = attention
        self.layers = nn.ModuleDict({n: StreamLayer(config, pre_only=n in pre_only, dtype=dtype, device=device,
                                                    operations=operations) for n in names})

    def forward(self, x: dict[str, Tensor], ctx: BlockContext) -> dict[str, Tensor]:
        names = [n for n in self.names if n in x]
        qs, ks, vs, mods = [], [], [], []
        for n in names:
            q, k, v, m = self.layers[n].pre_attention(x[n], ctx.streams[n])
            qs.append(q), ks.append(k), vs.append(v), mods.append(m)
        lengths = [q.shape[1] for q in qs]
        out = self.attention(torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1), ctx.key_mask)  # [B, N, H, Dh]
        result = dict(x)
        for n, o, m in zip(names, out.split(lengths, dim=1), mods):
            result[n] = self.layers[n].post_attention(x[n], o, m)
        return result


class CrossAttention(nn.Module):
    """Target tokens attend to source tokens (dual-tower bridge). RoPE on both sides keeps the
    shared physical-time axis; the output projection starts at zero."""

    def __init__(self, config: ApolloConfig, attention: AttentionFn, *, dtype=None, device=None, operations=CastOps) -> None:
        super().__init__()
        d, hd = config.hidden, config.head_dim
        self.heads = config.heads
        self.attention = attention
        self.q = operations.Linear(d, d, **factory(dtype, device))
        self.kv = operations.Linear(d, 2 * d, **factory(dtype, device))
        self.q_norm = RMSNorm(hd, dtype=dtype, device=device)
        self.k_norm = RMSNorm(hd, dtype=dtype, device=device)
        self.out = operations.Linear(d, d, **factory(dtype, device))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, target: Tensor, source: Tensor, tctx: StreamContext, sctx: StreamContext) -> Tensor:
        q = self.q_norm(self.q(layer_norm(target)).unflatten(-1, (self.heads, -1)))  # [B, Nt, H, Dh]
        k, v = self.kv(layer_norm(source)).unflatten(-1, (2, self.heads, -1)).unbind(2)  # [B, Ns, H, Dh]
        k = self.k_norm(k)
        if tctx.cos is not None:
            q = apply_rope(q, tctx.cos, tctx.sin)
        if sctx.cos is not None:
            k = apply_rope(k, sctx.cos, sctx.sin)
        return target + self.out(self.attention(q, k, v, sctx.mask).flatten(-2))  # [B, Nt, D]


class DualTowerBlock(nn.Module):
    VIDEO_TOWER = ("video", "video_text")
    AUDIO_TOWER = ("audio_text", "audio")

    def __init__(self, config: ApolloConfig, attention: AttentionFn, *, pre_only: tuple[str, ...] = (), dtype=None,
                 device=None, operations=CastOps) -> None:
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.video_tower = JointBlock(config, self.VIDEO_TOWER, attention, pre_only=pre_only, **kw)
        self.audio_tower = JointBlock(config, self.AUDIO_TOWER, attention, pre_only=pre_only, **kw)
        self.video_from_audio = CrossAttention(config, attention, **kw)
        self.audio_from_video = CrossAttention(config, attention, **kw)

    def forward(self, x: dict[str, Tensor], ctx: BlockContext) -> dict[str, Tensor]:
        out = dict(x)
        for tower in (self.video_tower, self.audio_tower):
            names = tuple(n for n in tower.names if n in x)
            if names:
                sub = {n: x[n] for n in names}
                out.update(tower(sub, tower_context(ctx, names, sub[names[0]].shape[0])))
        if "video" in out and "audio" in out:
            v, a = out["video"], out["audio"]
            sv, sa = ctx.streams["video"], ctx.streams["audio"]
            out["video"] = self.video_from_audio(v, a, sv, sa)
            out["audio"] = self.audio_from_video(a, v, sa, sv)
        return out


def tower_context(ctx: BlockContext, names: tuple[str, ...], batch: int) -> BlockContext:
    return BlockContext.build({n: ctx.streams[n] for n in names}, batch)
