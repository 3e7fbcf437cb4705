"""The in-memory latent bank: every cached shard of the run's sources, concatenated.

Caption embeddings are stored once per distinct caption (a table) and referenced by index, which
keeps a bank of thousands of clips small; gathering a batch is an index into the tables.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from apollo_core.objective import Conditioning
from apollo_core.text import PAD, encode_speech

from ..config import QualityFilter
from .encode import MEASURES, SHARD_FORMAT
from .sources import SkipReport


@dataclass
class LatentBank:
    video: Tensor  # [N, C, T, H, W]
    audio: Tensor  # [N, C, Ta]
    video_caption: Tensor  # [N] rows of the caption table
    audio_caption: Tensor  # [N]
    caption_tokens: Tensor  # [U, L, D]
    caption_mask: Tensor  # [U, L] bool
    speech: Tensor  # [N, S] long
    speech_mask: Tensor  # [N, S] bool
    measures: Tensor  # [N, len(MEASURES)]
    source: np.ndarray  # [N] index into source_names
    source_names: list[str]
    keys: list[str]
    skipped: SkipReport
    empty_caption: int = 0  # a table row holding the "" caption
    empty_speech: tuple[Tensor, Tensor] | None = None  # ids, mask of an empty transcript `[S]`

    def __len__(self) -> int:
        return self.video.shape[0]

    @staticmethod
    def load(folders: dict[str, Path], speech_tokens: int) -> "LatentBank":
        parts: list[dict[str, Tensor]] = []
        sources: list[np.ndarray] = []
        keys: list[str] = []
        skipped = SkipReport()
        names = list(folders)
        for si, (name, folder) in enumerate(folders.items()):
            manifest = json.loads((Path(folder) / "manifest.json").read_text())
            for shard in manifest["shards"]:
                tensors, meta = _read_shard(Path(folder) / shard)
                skipped.merge(SkipReport.from_list(json.loads(meta["skipped"])))
                n = int(meta["count"])
                keys += [f"{name}:{k}" for k in json.loads(meta["keys"])]
                sources.append(np.full(n, si, dtype=np.int64))
                parts.append(tensors)
        if not parts or sum(p["video"].shape[0] for p in parts) == 0:
            raise ValueError(f"no usable clips in sources {names} ({skipped.count} skipped: {skipped.by_reason()})")
        # Caption tables are per shard: offset each shard's indices into one joint table.
        length = max(p["caption_tokens"].shape[1] for p in parts)
        slen = max(p["speech"].shape[1] for p in parts)
        tables, masks, vcap, acap = [], [], [], []
        offset = 0
        for p in parts:
            pad = length - p["caption_tokens"].shape[1]
            tables.append(F.pad(p["caption_tokens"], (0, 0, 0, pad)))
            masks.append(F.pad(p["caption_mask"], (0, pad), value=False))
            vcap.append(p["video_caption"] + offset)
            acap.append(p["audio_caption"] + offset)
            offset += p["caption_tokens"].shape[0]
        ids, mask = encode_speech([""], speech_tokens)
        return LatentBank(
            video=torch.cat([p["video"] for p in parts]),
            audio=torch.cat([p["audio"] for p in parts]),
            video_caption=torch.cat(vcap), audio_caption=torch.cat(acap),
            caption_tokens=torch.cat(tables), caption_mask=torch.cat(masks),
            speech=torch.cat([_pad_ids(p["speech"], slen) for p in parts]),
            speech_mask=torch.cat([F.pad(p["speech_mask"], (0, slen - p["speech_mask"].shape[1]), value=False) for p in parts]),
            measures=torch.cat([p["measures"] for p in parts]),
            source=np.concatenate(sources), source_names=names, keys=keys, skipped=skipped,
            empty_caption=0, empty_speech=(_pad_ids(ids, slen)[0], F.pad(mask, (0, slen - mask.shape[1]), value=False)[0]),
        )

    # -- selection -------------------------------------------------------------------------------
    def eligible(self, source: str, quality: QualityFilter) -> np.ndarray:
        """Indices of `source`'s samples that pass the quality filter."""
        if source not in self.source_names:
            raise ValueError(f"source {source!r} is not loaded; loaded: {self.source_names}")
        m = self.measures.numpy()
        col = {name: m[:, i] for i, name in enumerate(MEASURES)}
        ok = self.source == self.source_names.index(source)
        ok &= col["quality"] >= quality.min_quality
        ok &= col["motion"] >= quality.min_motion
        ok &= col["loudness_db"] >= quality.min_loudness_db
        if quality.require_speech:
            ok &= col["has_speech"] > 0.5
        return np.nonzero(ok)[0]

    def has_speech(self, idx: np.ndarray) -> Tensor:
        """Whether each of samples `idx` has speech (a talker scene): `[len(idx)]` bool."""
        return self.measures[torch.as_tensor(idx, dtype=torch.long), MEASURES.index("has_speech")] > 0.5

    # -- batches ---------------------------------------------------------------------------------
    def gather(self, idx: np.ndarray, drop: np.ndarray | None = None,
               device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Conditioning]:
        """Latents and conditioning for samples `idx`; rows with `drop` get the empty caption
        and transcript (the unconditional input classifier-free guidance needs)."""
        i = torch.as_tensor(idx, dtype=torch.long)
        vc, ac = self.video_caption[i].clone(), self.audio_caption[i].clone()
        speech, smask = self.speech[i].clone(), self.speech_mask[i].clone()
        if drop is not None and drop.any():
            d = torch.as_tensor(drop, dtype=torch.bool)
            vc[d] = self.empty_caption
            ac[d] = self.empty_caption
            speech[d] = self.empty_speech[0]
            smask[d] = self.empty_speech[1]
        vt, vm = self._captions(vc)
        at, am = self._captions(ac)
        s_len = max(1, int(smask.sum(1).max()))
        cond = Conditioning(vt, vm, at, am, speech[:, :s_len].contiguous(), smask[:, :s_len].contiguous())
        return self.video[i].to(device), self.audio[i].to(device), cond.to(device)

    def _captions(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        mask = self.caption_mask[rows]  # [B, L]
        length = max(1, int(mask.sum(1).max()))  # trim padding no row in this batch needs
        return self.caption_tokens[rows, :length].contiguous(), mask[:, :length].contiguous()


def _pad_ids(ids: Tensor, length: int) -> Tensor:
    return F.pad(ids, (0, length - ids.shape[1]), value=PAD)


def _read_shard(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ValueError(f"cache shard {path} is unreadable ({exc}); delete its folder to re-encode") from None
    if meta.get("format") != SHARD_FORMAT:
        raise ValueError(f"cache shard {path} has format {meta.get('format')!r}, expected {SHARD_FORMAT}; "
                         "delete its folder to re-encode")
    return tensors, meta
