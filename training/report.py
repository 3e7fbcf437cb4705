"""The loss curve of a finished run, for recording next to its exported model.

    python -m training.report RUN_DIR --out FOLDER [--window 50]

reads RUN_DIR/metrics.jsonl and writes FOLDER/loss_curve.csv (one row per window of steps: the
stage, the mean loss over all steps and per task) and FOLDER/loss_curve.png (drawn with Pillow,
log-scale loss, stage boundaries marked), plus FOLDER/stages.json (task weights per stage, the
rebalanced Stage II ones included, and the validation losses measured at each stage end).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from apollo_core.files import atomic_write_bytes


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the output_dir of a training run")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n} is not JSON: {exc}") from None
    return rows


def loss_windows(rows: list[dict], window: int) -> tuple[list[dict], list[str]]:
    """Mean losses over consecutive windows of `window` steps (windows never straddle stages)."""
    if window < 1:
        raise ValueError(f"--window must be >= 1, got {window}")
    train = [r for r in rows if r.get("kind") == "train"]
    tasks = sorted({t for r in train for t, _ in r.get("task_losses", [])})
    out: list[dict] = []
    bucket: list[dict] = []

    def flush() -> None:
        if not bucket:
            return
        per_task = defaultdict(list)
        for r in bucket:
            for t, v in r.get("task_losses", []):
                per_task[t].append(v)
        row = {"step": bucket[-1]["step"], "stage": bucket[0]["stage"],
               "loss": sum(r["loss"] for r in bucket) / len(bucket)}
        row.update({t: (sum(per_task[t]) / len(per_task[t]) if per_task[t] else None) for t in tasks})
        out.append(row)
        bucket.clear()

    for r in train:
        if bucket and (r["stage"] != bucket[0]["stage"] or len(bucket) == window):
            flush()
        bucket.append(r)
    flush()
    return out, tasks


def stage_summary(rows: list[dict]) -> list[dict]:
    stages = [{"stage": r["stage"], "from_step": r["step"], "task_weights": r["task_weights"],
               "rebalanced": r.get("rebalanced", False)} for r in rows if r.get("kind") == "stage"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    for i, s in enumerate(stages):
        end = stages[i + 1]["from_step"] if i + 1 < len(stages) else math.inf
        inside = [e for e in evals if s["from_step"] < e["step"] <= end]
        if inside:
            s["eval_at_end"] = {k: v for k, v in inside[-1].items() if k not in ("kind",)}
    return stages


def csv_bytes(windows: list[dict], tasks: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "stage", "loss", *tasks])
    for r in windows:
        w.writerow([r["step"], r["stage"], f"{r['loss']:.5f}",
                    *("" if r[t] is None else f"{r[t]:.5f}" for t in tasks)])
    return buf.getvalue().encode()


def plot_png(windows: list[dict], tasks: list[str], title: str) -> bytes:
    """A log-scale line plot of the mean loss (black) and each task's (colours)."""
    width, height, left, right, top, bottom = 900, 420, 60, 130, 30, 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    values = [r[k] for r in windows for k in ("loss", *tasks) if r.get(k)]
    lo, hi = math.log10(min(values)), math.log10(max(values))
    hi = hi if hi > lo else lo + 1
    last = windows[-1]["step"]
    px = lambda step: left + (width - left - right) * step / last  # noqa: E731
    py = lambda v: top + (height - top - bottom) * (hi - math.log10(v)) / (hi - lo)  # noqa: E731
    d.rectangle([left, top, width - right, height - bottom], outline="black")
    for p in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** p
            if 10 ** lo <= v <= 10 ** hi:
                d.line([left, py(v), width - right, py(v)], fill=(225, 225, 225))
                d.text((5, py(v) - 6), f"{v:g}", fill="black")
    for a, b in zip(windows, windows[1:]):
        if a["stage"] != b["stage"]:
            d.line([px(a["step"]), top, px(a["step"]), height - bottom], fill=(160, 160, 160))
            d.text((px(a["step"]) + 3, top + 3), b["stage"], fill=(90, 90, 90))
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127)]
    for i, key in enumerate([*tasks, "loss"]):
        colour = "black" if key == "loss" else palette[i % len(palette)]
        pts = [(px(r["step"]), py(r[key])) for r in windows if r.get(key)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=3 if key == "loss" else 1)
        d.text((width - right + 10, top + 14 * i), key if key != "loss" else "all (mean)", fill=colour)
    d.text((left, 8), title, fill="black")
    d.text((width // 2 - 20, height - bottom + 12), f"step (0..{last})", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike, window: int = 50) -> list[Path]:
    rows = read_metrics(run_dir)
    windows, tasks = loss_windows(rows, window)
    if not windows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no training steps")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{Path(run_dir).name}: training loss, mean of {window} steps"
    files = {"loss_curve.csv": csv_bytes(windows, tasks), "loss_curve.png": plot_png(windows, tasks, title),
             "stages.json": (json.dumps(stage_summary(rows), indent=1) + "\n").encode()}
    written = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        written.append(folder / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a training run's output_dir (holds metrics.jsonl)")
    parser.add_argument("--out", required=True, help="folder for loss_curve.csv, loss_curve.png, stages.json")
    parser.add_argument("--window", type=int, default=50, help="steps averaged per point (default 50)")
    args = parser.parse_args(argv)
    try:
        for path in write_report(args.run_dir, args.out, args.window):
            print(f"wrote {path}")
    except ValueError as exc:
        print(f"training.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
