"""training.report: loss windows per stage, CSV/PNG/stages.json written next to a model."""
from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from training.report import loss_windows, main, write_report


def _metrics(tmp_path):
    rows = [{"kind": "stage", "step": 0, "stage": "pretrain", "task_weights": {"t2av": 0.5, "t2v": 0.5}}]
    for step in range(1, 8):
        task = "t2av" if step % 2 else "t2v"
        rows.append({"kind": "train", "step": step, "stage": "pretrain", "loss": float(10 - step),
                     "task_losses": [[task, float(10 - step)]]})
    rows.append({"kind": "eval", "step": 7, "val/t2av/total": 0.5})
    rows.append({"kind": "stage", "step": 7, "stage": "specialise", "task_weights": {"t2av": 0.8, "t2v": 0.2},
                 "rebalanced": True})
    for step in range(8, 11):
        rows.append({"kind": "train", "step": step, "stage": "specialise", "loss": 1.0, "task_losses": [["t2av", 1.0]]})
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_windows_average_within_stages(tmp_path) -> None:
    from training.report import read_metrics

    windows, tasks = loss_windows(read_metrics(_metrics(tmp_path)), 3)
    assert tasks == ["t2av", "t2v"]
    # pretrain steps 1-3, 4-6, 7 (a short window at the stage end), then specialise 8-10
    assert [(w["step"], w["stage"]) for w in windows] == [(3, "pretrain"), (6, "pretrain"), (7, "pretrain"),
                                                          (10, "specialise")]
    assert windows[0]["loss"] == pytest.approx(8.0) and windows[0]["t2av"] == pytest.approx(8.0)  # steps 1 and 3
    assert windows[0]["t2v"] == pytest.approx(8.0) and windows[3]["t2v"] is None


def test_report_files(tmp_path) -> None:
    run = _metrics(tmp_path)
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out), "--window", "2"]) == 0
    rows = list(csv.reader((out / "loss_curve.csv").open()))
    assert rows[0] == ["step", "stage", "loss", "t2av", "t2v"] and rows[-1][:3] == ["10", "specialise", "1.00000"]
    assert Image.open(out / "loss_curve.png").size == (900, 420)
    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["pretrain", "specialise"] and stages[1]["rebalanced"] is True
    assert stages[0]["eval_at_end"]["val/t2av/total"] == 0.5
    assert not list(out.glob(".*tmp"))


def test_report_errors_name_the_input(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl:1 is not JSON"):
        write_report(tmp_path, tmp_path / "o")
