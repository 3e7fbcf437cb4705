"""What a run reports, on the main process only: a tqdm bar (steps/s, recent mean loss per task),
TensorBoard scalars, and `metrics.jsonl` (one JSON record per line, floats exact, appended and
flushed per step so a killed run keeps its history). The bar shows each task's mean loss over
its last `window` steps."""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("training")


class Monitor:
    def __init__(self, output_dir: Path, *, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool, window: int = 20) -> None:
        self.enabled = enabled
        self.window = window
        self.recent: dict[str, deque[float]] = {}  # last losses per task, shown on the bar
        self.writer = None
        self.bar = None
        self.file = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(output_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged past the checkpoint we resume from
            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step or None)
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
        self.t0 = time.perf_counter()

    def record(self, data: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(data) + "\n")
            self.file.flush()

    def train_step(self, step: int, data: dict[str, Any], scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.record({"kind": "train", "step": step, **data})
        for task, loss in data["task_losses"]:
            self.recent.setdefault(task, deque(maxlen=self.window)).append(loss)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{sum(v) / len(v):.3f}" for k, v in sorted(self.recent.items())}, refresh=False)

    def scalars(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.record({"kind": kind, "step": step, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.file is not None:
            self.file.close()
