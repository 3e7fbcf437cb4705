"""ApolloDiT: embed the active streams, run the blocks, project back. Wiring only.

The model runs block by block from outside: `prepare` -> iterate `blocks` -> `finalize`, so
block swap, activation checkpointing or sequence parallelism can wrap the loop without touching
a block. `forward` is exactly that loop.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ..config import ApolloConfig
from ..streams import ApolloInputs, LatentStream, TextStream, video_token_grid
from .attention import Backend, get_attention, resolve
from .block import BlockContext, DualTowerBlock, JointBlock, StreamContext
from .layers import (CastOps, FinalLayer, Modulation, PooledTextEmbedder, RMSNorm, SpeechTextEncoder, TimestepEmbedder,
                     factory)
from .rope import rope_cos_sin

State = tuple[dict[str, Tensor], BlockContext]


class ApolloDiT(nn.Module):
    def __init__(self, config: ApolloConfig, *, attention: "str | Backend" = "auto", dtype: torch.dtype | None = None,
                 device=None, operations=None) -> None:
        super().__init__()
        ops = operations or CastOps
        self.config = config
        self.attention_backend = resolve(attention)
        attn = get_attention(self.attention_backend)
        d, v, a, t = config.hidden, config.video, config.audio, config.text
        kw = factory(dtype, device)
        self.compute_dtype = dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
        self.video_embed = ops.Linear(v.patch_dim, d, **kw)
        self.audio_embed = ops.Linear(a.patch_dim, d, **kw)
        # No bias: a missing estimate (zeros) adds exactly nothing.
        if "video" in config.self_conditioned:
            self.video_self_embed = ops.Linear(v.patch_dim, d, bias=False, **kw)
        if "audio" in config.self_conditioned:
            self.audio_self_embed = ops.Linear(a.patch_dim, d, bias=False, **kw)
        self.video_text_norm = RMSNorm(t.caption_dim, **kw)
        self.video_text_embed = ops.Linear(t.caption_dim, d, **kw)
        self.audio_text_norm = RMSNorm(t.caption_dim, **kw)
        self.audio_text_embed = ops.Linear(t.caption_dim, d, **kw)
        self.speech = SpeechTextEncoder(t.speech_vocab, t.speech_dim, t.speech_layers, t.speech_heads,
                                        t.max_speech_tokens, d, attn, dtype=dtype, device=device, operations=ops)
        self.time_embed = TimestepEmbedder(d, dtype=dtype, device=device, operations=ops)
        if config.pooled_text:
            self.video_text_pool = PooledTextEmbedder(t.caption_dim, d, dtype=dtype, device=device, operations=ops)
            self.audio_text_pool = PooledTextEmbedder(t.caption_dim, d, dtype=dtype, device=device, operations=ops)
        # Nothing reads the caption streams after the last block: it only needs their keys/values.
        last_only = ("video_text", "audio_text")
        blocks = []
        for i in range(config.depth):
            pre_only = last_only if i == config.depth - 1 else ()
            if config.architecture == "single_tower":
                blocks.append(JointBlock(config, ("video", "video_text", "audio_text", "audio"), attn, pre_only=pre_only,
                                         dtype=dtype, device=device, operations=ops))
            else:
                blocks.append(DualTowerBlock(config, attn, pre_only=pre_only, dtype=dtype, device=device, operations=ops))
        self.blocks = nn.ModuleList(blocks)
        self.video_head = FinalLayer(d, v.patch_dim, dtype=dtype, device=device, operations=ops)
        self.audio_head = FinalLayer(d, a.patch_dim, dtype=dtype, device=device, operations=ops)
        if device != "meta" and not (isinstance(device, torch.device) and device.type == "meta"):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.fc1.weight, std=0.02)
        nn.init.normal_(self.time_embed.fc2.weight, std=0.02)
        nn.init.normal_(self.speech.embed.weight, std=0.02)
        nn.init.normal_(self.speech.pos, std=0.02)
        # adaLN-Zero: every modulation and both heads start at zero, so each block is the identity
        for m in self.modules():
            if isinstance(m, Modulation):
                nn.init.zeros_(m.lin.weight)
                nn.init.zeros_(m.lin.bias)
        for head in (self.video_head, self.audio_head):
            nn.init.zeros_(head.linear.weight)
            nn.init.zeros_(head.linear.bias)
        # Self-conditioning and the pooled captions start as no-ops, so either can be added to a
        # trained model (init_from).
        for name in self.self_condition_keys():
            nn.init.zeros_(self.get_parameter(name))
        if self.config.pooled_text:
            for pool in (self.video_text_pool, self.audio_text_pool):
                nn.init.zeros_(pool.fc2.weight)  # its bias is zero already
        for block in self.blocks:
            if isinstance(block, DualTowerBlock):
                for cross in (block.video_from_audio, block.audio_from_video):
                    nn.init.zeros_(cross.out.weight)
                    nn.init.zeros_(cross.out.bias)

    # -- the loop ---------------------------------------------------------------------------
    def forward(self, inputs: ApolloInputs) -> dict[str, Tensor]:
        x, ctx = self.prepare(inputs)
        for block in self.blocks:
            x = block(x, ctx)
        return self.finalize(x, ctx, inputs)

    def prepare(self, inputs: ApolloInputs) -> State:
        """Embed every active stream; returns hidden states per stream and the block context."""
        active = inputs.active()
        if "video" not in active and "audio" not in active:
            raise ValueError("ApolloInputs needs a video or an audio stream")
        b = inputs.batch
        dt = self.compute_dtype
        x: dict[str, Tensor] = {}
        streams: dict[str, StreamContext] = {}
        vectors = self._pooled_captions(inputs, dt)  # stream -> [B, D]
        for name in active:
            s = getattr(inputs, name)
            if isinstance(s, LatentStream):
                tokens = self._patchify(name, s.latent.to(dt))  # [B, N, P]
                x[name] = (self.video_embed if name == "video" else self.audio_embed)(tokens)  # [B, N, D]
                if name in self.config.self_conditioned and s.self_cond is not None:
                    estimate = self._patchify(name, s.self_cond.to(dt))  # [B, N, P]
                    x[name] = x[name] + getattr(self, f"{name}_self_embed")(estimate)  # [B, N, D]
                temb, index = self._time(s.timesteps, dt, vectors.get(name))
                cos, sin = rope_cos_sin(self.config, s.positions.to(tokens.device), dtype=dt)
                streams[name] = StreamContext(tokens.shape[1], temb, index, cos, sin, s.mask)
            else:
                x[name], mask = self._embed_text(name, s, dt)  # [B, L, D]
                temb = self.time_embed(s.timesteps.view(b), dt)  # [B, D]
                streams[name] = StreamContext(x[name].shape[1], temb, None, None, None, mask)
        return x, BlockContext.build(streams, b)

    def finalize(self, x: dict[str, Tensor], ctx: BlockContext, inputs: ApolloInputs) -> dict[str, Tensor]:
        """Raw head outputs in latent layout (float32) for the video and audio streams present."""
        out: dict[str, Tensor] = {}
        for name, head in (("video", self.video_head), ("audio", self.audio_head)):
            if name in x:
                s = ctx.streams[name]
                tokens = head(x[name], s.temb, s.index)  # [B, N, P]
                out[name] = self._unpatchify(name, tokens, getattr(inputs, name).latent.shape).float()
        return out

    # -- helpers ----------------------------------------------------------------------------
    def _time(self, timesteps: Tensor, dt: torch.dtype, vector: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Embed distinct timesteps once: one per sample in the common case, else per value.
        `vector` `[B, D]` (a pooled caption) is added to each sample's rows."""
        if bool((timesteps == timesteps[:, :1]).all()):
            temb = self.time_embed(timesteps[:, 0], dt)  # [B, D]
            return (temb if vector is None else temb + vector), None
        values, index = torch.unique(timesteps, return_inverse=True)  # [U], [B, N]
        temb = self.time_embed(values, dt)  # [U, D]
        if vector is None:
            return temb, index
        # One row per (sample, timestep) pair in use, so each sample's tokens get their own vector.
        u = values.shape[0]
        sample = torch.arange(timesteps.shape[0], device=index.device)[:, None]  # [B, 1]
        pairs, index = torch.unique(sample * u + index, return_inverse=True)  # [P], [B, N]
        return temb[pairs % u] + vector[pairs // u], index  # [P, D]

    def _pooled_captions(self, inputs: ApolloInputs, dt: torch.dtype) -> dict[str, Tensor]:
        """Per generated stream, its caption pooled into the adaLN vector (with `pooled_text`)."""
        if not self.config.pooled_text:
            return {}
        out = {}
        for name, text, norm, pool in (("video", inputs.video_text, self.video_text_norm, self.video_text_pool),
                                       ("audio", inputs.audio_text, self.audio_text_norm, self.audio_text_pool)):
            if text is not None:
                out[name] = pool(norm(text.tokens.to(dt)), text.mask)  # [B, D]
        return out

    def _embed_text(self, name: str, s: TextStream, dt: torch.dtype) -> tuple[Tensor, Tensor | None]:
        norm, embed = ((self.video_text_norm, self.video_text_embed) if name == "video_text"
                       else (self.audio_text_norm, self.audio_text_embed))
        if s.tokens.shape[-1] != self.config.text.caption_dim:
            raise ValueError(f"{name} embeddings are {s.tokens.shape[-1]}-d; this model expects "
                             f"{self.config.text.caption_dim}-d (the caption encoder it was trained with)")
        h = embed(norm(s.tokens.to(dt)))  # [B, L, D]
        mask = s.mask
        if name == "audio_text" and s.speech is not None:
            sp = self.speech(s.speech, s.speech_mask, dt)  # [B, S, D]
            h = torch.cat([h, sp], dim=1)  # [B, L+S, D]
            mask = torch.cat([mask, s.speech_mask.bool()], dim=1)
        return h, (None if bool(mask.all()) else mask)

    def _patchify(self, name: str, latent: Tensor) -> Tensor:
        if name == "video":
            v = self.config.video
            video_token_grid(self.config, tuple(latent.shape))
            return rearrange(latent, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=v.patch_t, ph=v.patch_h, pw=v.patch_w)
        a = self.config.audio
        if latent.shape[1] != a.latent_channels or latent.shape[-1] % a.patch:
            raise ValueError(f"audio latent shape {tuple(latent.shape)} does not fit channels={a.latent_channels}, "
                             f"patch={a.patch}")
        return rearrange(latent, "b c (t p) -> b t (c p)", p=a.patch)

    def _unpatchify(self, name: str, tokens: Tensor, shape: torch.Size) -> Tensor:
        if name == "video":
            v = self.config.video
            gt, gh, gw = video_token_grid(self.config, tuple(shape))
            return rearrange(tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=gt, h=gh, w=gw,
                             pt=v.patch_t, ph=v.patch_h, pw=v.patch_w)
        return rearrange(tokens, "b t (c p) -> b c (t p)", p=self.config.audio.patch)

    def self_condition_keys(self) -> list[str]:
        """State-dict names of the self-conditioning projections (none without `self_condition`)."""
        return [f"{m}_self_embed.weight" for m in self.config.self_conditioned]

    def pooled_text_keys(self) -> list[str]:
        """State-dict names of the pooled-caption embedders (none without `pooled_text`)."""
        if not self.config.pooled_text:
            return []
        return [f"{m}_text_pool.{fc}.{p}"
                for m in ("video", "audio") for fc in ("fc1", "fc2") for p in ("weight", "bias")]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
