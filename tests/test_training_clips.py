"""A folder of real clips: the valid one is trained on, the corrupt file, the clip without an audio
track and the clip without a sidecar are skipped, counted and reported, and the run completes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from apollo_core import avio
from apollo_core.checkpoint import save_model
from apollo_core.config import get_preset
from apollo_core.model.dit import ApolloDiT
from training.config import parse_config
from training.data.world import TRAIN_SEED_START, render, sample_spec
from training.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "debug.yaml"


def make_folder(root: Path) -> None:
    root.mkdir()
    sample = render(sample_spec(TRAIN_SEED_START + 7, seconds=2.0, fps=8.0, size=48, sample_rate=16000))
    frames = torch.from_numpy(sample.frames).float() / 255.0  # [16, 48, 48, 3]
    frames = torch.cat([frames, frames[:, :, :16]], dim=2)  # 48x64: not the training size or aspect
    wave = torch.from_numpy(sample.audio)[None]
    avio.write_mp4(root / "good.mp4", avio.AVClip(frames=frames, waveform=wave, fps=8.0, sample_rate=16000))
    avio.write_mp4(root / "silent.mp4", avio.AVClip(frames=frames, fps=8.0))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "orphan.webm").write_bytes((root / "good.mp4").read_bytes())  # no sidecar
    for name in ("good", "silent", "corrupt"):
        sidecar = {"video_caption": sample.video_caption, "audio_caption": sample.audio_caption}
        if name == "good":
            sidecar |= {"speech": "hello there", "quality": 0.9}
        (root / f"{name}.json").write_text(json.dumps(sidecar))


def test_clip_folder_skips_bad_files_and_trains(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    folder = tmp_path / "clips"
    make_folder(folder)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["output_dir"] = str(tmp_path / "run")
    raw["tensorboard"] = False
    raw["data"]["sources"] = {"mine": {"kind": "clips", "path": str(folder), "max_windows": 2}}
    raw["eval"] = {"source": None}
    raw["checkpoint"] = {"every": 0, "keep": 1}
    raw["stages"] = [{"name": "only", "steps": 3, "batch_size": 2, "tasks": {"t2av": 1, "v2a": 1},
                      "data": {"mine": 1.0}, "lr": {"peak": 1e-3}}]
    torch.manual_seed(123)  # fine-tuning starts from existing weights (here: a fresh debug model)
    start = ApolloDiT(get_preset("debug"))
    save_model(tmp_path / "start.safetensors", start)
    raw["model"]["init_from"] = str(tmp_path / "start.safetensors")
    trainer = Trainer(parse_config(raw))
    for (name, a), b in zip(start.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(a, b), name
    result = trainer.run()
    assert result.step == 3 and result.export is not None and (result.export / "model.safetensors").is_file()
    # the 2 s valid clip gives two 1 s windows, resized and cropped to 32x32
    assert trainer.bank.keys == ["mine:good.mp4#0", "mine:good.mp4#1"]
    assert tuple(trainer.bank.video.shape[2:]) == (4, 8, 8)
    assert trainer.bank.measures[:, 0].tolist() == pytest.approx([0.9, 0.9])  # sidecar quality
    assert result.skipped == 3
    report = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert report["count"] == 3
    reasons = {item.split(":", 1)[1]: reason for item, reason in report["items"]}
    assert reasons["corrupt.mp4"].startswith("unreadable")
    assert reasons["silent.mp4"].startswith("no audio track")
    assert reasons["orphan.webm"].startswith("no sidecar")
    assert report["by_reason"] == {"unreadable": 1, "no audio track": 1, "no sidecar": 1}
