"""From the run config to the in-memory latent bank: build the sources, pre-encode what is not
cached yet (processes share the shards), load every needed source, report the skipped items."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from apollo_core.config import ApolloConfig

from ..config import RunConfig
from .encode import Encoders, prepare_source
from .shards import LatentBank
from .sources import ClipFormat, build_source

log = logging.getLogger(__name__)


def used_sources(cfg: RunConfig) -> list[str]:
    names = {name for stage in cfg.stages for name, w in stage.data.items() if w > 0}
    if cfg.eval.source is not None:
        names.add(cfg.eval.source)
    return sorted(names)


def clip_format(cfg: RunConfig, model: ApolloConfig) -> ClipFormat:
    return ClipFormat.from_config(cfg.data.clip, model.video.fps, model.audio.sample_rate)


def cache_sources(cfg: RunConfig, model: ApolloConfig, *, rank: int = 0, world_size: int = 1,
                  barrier: Callable[[], None] = lambda: None, device: str | torch.device = "cpu",
                  text_encoder: str = "minilm") -> dict[str, Path]:
    """Pre-encode every source the run uses; returns the cache folder of each."""
    fmt = clip_format(cfg, model)
    encoders = Encoders(model, cfg.codecs, fmt, text_encoder, device)

    def warn(item: str, reason: str) -> None:
        log.warning("skipping %s: %s", item, reason)

    folders = {}
    for name in used_sources(cfg):
        source = build_source(name, cfg.data.sources[name], fmt)
        folders[name] = prepare_source(source, encoders, cfg.cache_path, shard_size=cfg.data.shard_size,
                                       batch=cfg.data.encode_batch, rank=rank, world_size=world_size,
                                       barrier=barrier, log_skip=warn)
    return folders


def load_bank(cfg: RunConfig, model: ApolloConfig, folders: dict[str, Path]) -> LatentBank:
    bank = LatentBank.load(folders, model.text.max_speech_tokens)
    if bank.skipped.count:
        log.warning("skipped %d item(s) while encoding: %s", bank.skipped.count, bank.skipped.by_reason())
    return bank
