"""The training loop: stages of the curriculum, one task per micro-batch, on accelerate.

Per optimizer step: for each of the stage's `grad_accum` micro-batches a task is drawn (the same
on every process), a batch is drawn from the stage's data mixture (different per process), and
apollo_core's flow-matching loss for that task is back-propagated (gradients are synchronised on
the last micro-batch only). Then gradient clipping, AdamW at the schedule's learning rate, EMA.

Every random draw goes through a generator the checkpoint saves (task sampler, batch sampler,
flow noise) and the global RNGs are saved too, so a run resumed from a checkpoint produces the
same losses as one that never stopped. Gradient accumulation is done here rather than by
`Accelerator(gradient_accumulation_steps=...)` because it may change from stage to stage.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list
from torch.utils.checkpoint import checkpoint

from apollo_core.checkpoint import load_state, read_config, validate_state
from apollo_core.files import atomic_write_text
from apollo_core.model.dit import ApolloDiT
from apollo_core.pipeline import MODEL_FILE
from apollo_core.objective import Retime, Swap, training_loss
from apollo_core.tasks import Role, Task

from .checkpointing import full_model_state, host_model, load_checkpoint, resolve_resume, rng_state, save_checkpoint, set_rng_state
from .config import RetimeConfig, RunConfig, StageConfig
from .curriculum import stage_task_weights
from .data.batches import BatchSampler
from .data.counterfactual import load_swaps
from .data.prepare import cache_sources, load_bank
from .ema import EMA
from .evaluation import Evaluator, MetricsFn, load_metrics_fn
from .export import bundle_extra, export_state
from .monitor import Monitor
from .optim import build_optimizer, lr_at, set_lr
from .tasks import TaskSampler

log = logging.getLogger("training")
BLOCK_CLASSES = ["JointBlock", "DualTowerBlock"]


@dataclass(frozen=True)
class TrainResult:
    export: Path | None
    step: int
    last_eval: dict[str, float]
    skipped: int


def make_accelerator(cfg: RunConfig) -> Accelerator:
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]  # a task leaves a modality's weights unused
    plugin = None
    if cfg.distributed == "fsdp" and not torch.cuda.is_available():
        log.warning("distributed: fsdp needs GPUs; accelerate runs CPU process groups as DDP")
    elif cfg.distributed == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                                transformer_cls_names_to_wrap=BLOCK_CLASSES,
                                                reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
    # Without a GPU, accelerate only treats a torchrun/`accelerate launch --multi_gpu` group as
    # distributed (gloo) when told to use the CPU.
    return Accelerator(mixed_precision="bf16" if cfg.precision == "bf16" else "no", kwargs_handlers=handlers,
                       fsdp_plugin=plugin, cpu=not torch.cuda.is_available())


def enable_activation_checkpointing(model: ApolloDiT) -> None:
    """Recompute each block's activations in the backward pass instead of storing them. The
    block's forward is wrapped in place, so parameter names (and checkpoints) do not change."""
    for block in model.blocks:
        def forward(x: dict[str, torch.Tensor], ctx: Any, _inner=block.forward) -> dict[str, torch.Tensor]:
            return checkpoint(_inner, x, ctx, use_reentrant=False)

        block.forward = forward


def init_weights(model: ApolloDiT, source: str) -> None:
    """Fine-tune from existing weights (e.g. the embedded default): a model file or a bundle
    folder; the file's config must match the run's model exactly."""
    path = Path(source).expanduser()
    path = path / MODEL_FILE if path.is_dir() else path
    config, _ = read_config(path)
    # Self-conditioning may be switched on for a model trained without it: its projections start
    # at zero, so the run begins exactly where the file's model was.
    adds_self = model.config.self_condition and not config.self_condition
    # So may the pooled captions (their output layer starts at zero too).
    adds_pooled = model.config.pooled_text and not config.pooled_text
    # The video noise's frame correlation may change too (no weight depends on it; the run's value
    # is what its export records and samples with).
    ignore: dict[str, Any] = {"name": "", "video_noise_corr": 0.0}
    if adds_self:
        ignore |= {"self_condition": True, "self_condition_streams": model.config.self_condition_streams}
    if adds_pooled:
        ignore |= {"pooled_text": True}
    if config.to_dict() | ignore != model.config.to_dict() | ignore:
        raise ValueError(f"model.init_from {path}: its config (preset {config.name!r}) differs from the run's "
                         f"model {model.config.name!r}; set model.preset/overrides to match it")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_state(path).items()}
    own = model.state_dict()
    if adds_self:
        state |= {k: own[k] for k in model.self_condition_keys()}
    if adds_pooled:
        state |= {k: own[k] for k in model.pooled_text_keys()}
    validate_state(model, state, str(path))
    model.load_state_dict(state)


def draw_retime(rt: RetimeConfig, rows: int, frames_per_second: float, generator: torch.Generator,
                device: Any = "cpu", has_speech: torch.Tensor | None = None) -> Retime:
    """A `share` of `rows` moved by a uniform time in [min_seconds, max_seconds], either sign, as
    a whole number (at least one) of audio latent frames; the other rows at shift 0, and so are
    the rows `has_speech` marks when `rt.speech` is false (the draws stay the same either way)."""
    draws = torch.rand(3, rows, generator=generator, device=device).cpu()  # [3, rows]: pick, span, sign
    secs = rt.min_seconds + draws[1] * (rt.max_seconds - rt.min_seconds)
    frames = torch.round(secs * frames_per_second).clamp_min(1).long() * torch.where(draws[2] < 0.5, -1, 1)
    pick = draws[0] < rt.share  # [rows]
    if not rt.speech:
        if has_speech is None or has_speech.shape != (rows,):
            raise ValueError(f"draw_retime: retime.speech is false, so has_speech must mark each of the {rows} rows")
        pick &= ~has_speech.cpu().bool()
    shift = torch.where(pick, frames, torch.zeros_like(frames))  # [rows]
    return Retime(shift.to(device), rt.t_min, rt.t_max)


class _LossModel:
    """What apollo_core.objective.training_loss needs: `.config` and a call. A DDP/FSDP wrapper
    has the call but not the attribute."""

    def __init__(self, module: torch.nn.Module, config: Any) -> None:
        self.module, self.config = module, config

    def __call__(self, inputs: Any) -> dict[str, torch.Tensor]:
        return self.module(inputs)


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: str | os.PathLike | None = None,
                 accelerator: Accelerator | None = None, metrics_fn: MetricsFn | None = None,
                 text_encoder: str = "minilm") -> None:
        self.cfg = cfg
        self.text_encoder = text_encoder
        self.acc = acc = accelerator or make_accelerator(cfg)
        self.rank, self.world = acc.process_index, acc.num_processes
        self.out = Path(cfg.output_dir)
        self.model_cfg = cfg.model.build()
        folders = cache_sources(cfg, self.model_cfg, rank=self.rank, world_size=self.world,
                                barrier=acc.wait_for_everyone, device=acc.device, text_encoder=text_encoder)
        self.bank = load_bank(cfg, self.model_cfg, folders)
        self.swaps = {s.name: load_swaps(self.bank, cfg.inside(s.counterfactual.latents))
                      for s in cfg.stages if s.counterfactual is not None}

        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = ApolloDiT(self.model_cfg, attention=cfg.model.attention)
        if cfg.model.init_from is not None and resume is None:
            init_weights(model, cfg.model.init_from)
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        self.model = acc.prepare(model)
        sharded = cfg.distributed == "fsdp" and self.world > 1
        self.optimizer = acc.prepare(build_optimizer(self.model, cfg, lr=cfg.stages[0].lr.peak, fused=not sharded))
        self.ema = EMA(self.model, cfg.ema_decay)
        self.loss_model = _LossModel(self.model, self.model_cfg)

        self.all_tasks = sorted({Task.parse(t) for s in cfg.stages for t in s.tasks}, key=lambda t: t.value)
        self.task_sampler = TaskSampler({t: 1.0 for t in self.all_tasks}, seed=cfg.seed)
        self.batch_sampler = BatchSampler(self.bank, cfg.seed, self.rank)
        self.noise = torch.Generator(device=acc.device).manual_seed(cfg.seed * 100_003 + self.rank)
        ev = cfg.eval
        self.evaluator = None if ev.source is None else Evaluator(
            self.bank, ev.source, samples=ev.samples, batch_size=ev.batch_size, tasks=self.all_tasks,
            flow=cfg.flow, seed=ev.seed, device=acc.device)
        self.metrics_fn = metrics_fn or (load_metrics_fn(ev.metrics) if ev.metrics else None)

        self.step = self.stage_index = self.stage_step = 0
        self.stage_weights: dict[str, dict[str, float]] = {}
        self.last_eval: dict[str, float] = {}
        if resume is not None:
            self._resume(resolve_resume(resume))
        self.monitor = Monitor(self.out, total_steps=cfg.total_steps, start_step=self.step,
                               enabled=acc.is_main_process, tensorboard=cfg.tensorboard)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.acc.is_main_process:
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self._report_skipped()
        try:
            while self.stage_index < len(cfg.stages):
                stage = cfg.stages[self.stage_index]
                self._enter_stage(stage)
                while self.stage_step < stage.steps:
                    self._train_step(stage)
                    self.stage_step += 1
                    self.step += 1
                    inside = self.stage_step < stage.steps  # the stage end evaluates and saves anyway
                    if inside and cfg.eval.every and self.step % cfg.eval.every == 0:
                        self._evaluate()
                    if inside and cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                        self._save()
                if self.evaluator is not None or self.metrics_fn is not None:
                    self._evaluate()
                self.stage_index += 1
                self.stage_step = 0
                self._save()
            path = self._export()
        finally:
            self.monitor.close()
        return TrainResult(path, self.step, dict(self.last_eval), self.bank.skipped.count)

    def benchmark(self, steps: int) -> dict[str, float]:
        """Time `steps` optimizer steps of the first stage (after one warm-up step) without saving
        anything, and project the configured run's training time from it."""
        if steps < 1:
            raise ValueError(f"--benchmark needs at least 1 step, got {steps}")
        self.monitor.close()
        self.monitor = Monitor(self.out, total_steps=0, start_step=0, enabled=False, tensorboard=False)
        stage = self.cfg.stages[0]
        self._enter_stage(stage)
        self._train_step(stage)
        start = time.perf_counter()
        for _ in range(steps):
            self._train_step(stage)
        per_step = (time.perf_counter() - start) / steps
        samples = stage.batch_size * stage.grad_accum * self.world / per_step
        total = sum(s.batch_size * s.grad_accum * s.steps * self.world for s in self.cfg.stages) / samples
        return {"seconds_per_step": per_step, "samples_per_second": samples, "projected_minutes": total / 60}

    def _enter_stage(self, stage: StageConfig) -> None:
        if stage.name not in self.stage_weights:
            weights = stage_task_weights(stage.task_weights(), stage.rebalance, self.last_eval)
            self.stage_weights[stage.name] = {t.value: w for t, w in weights.items()}
        weights = {Task.parse(k): v for k, v in self.stage_weights[stage.name].items()}
        self.task_sampler.set_weights(weights)
        pools = self.batch_sampler.configure(stage.data, stage.quality, stage.caption_dropout)
        how = f"rebalanced by {stage.rebalance.by}" if stage.rebalance else "as configured"
        self.monitor.message(f"stage {stage.name!r}: {stage.steps} steps, task weights ({how}) "
                             + ", ".join(f"{t}={w:.3f}" for t, w in sorted(self.stage_weights[stage.name].items()))
                             + f"; samples per source after the quality filter {pools}")
        self.monitor.record({"kind": "stage", "step": self.step, "stage": stage.name, "task_weights":
                             self.stage_weights[stage.name], "rebalanced": stage.rebalance is not None, "pools": pools})

    def _train_step(self, stage: StageConfig) -> None:
        accum = stage.grad_accum
        lr = lr_at(stage.lr, self.stage_step, stage.steps)
        flow = stage.flow or self.cfg.flow
        tasks: list[Task] = []
        values = torch.zeros(accum, 3, device=self.acc.device)  # video, audio, total per micro-batch
        for micro in range(accum):
            task = self.task_sampler.draw()
            draw = self.batch_sampler.draw(stage.batch_size)
            video, audio, cond = self.bank.gather(draw.indices, draw.drop, self.acc.device)
            swap = self._swap(stage, task, draw)
            retime = self._retime(stage, task, draw.indices)
            sync = micro == accum - 1
            with contextlib.nullcontext() if sync else self.acc.no_sync(self.model):
                with self.acc.autocast():
                    losses = training_loss(self.loss_model, task, video=video, audio=audio, cond=cond,
                                           generator=self.noise, logit_mean=flow.logit_mean,
                                           logit_std=flow.logit_std, shift=flow.shift,
                                           onset_boost=stage.onset_boost,
                                           foreground_boost=stage.foreground_boost,
                                           motion_boost=stage.motion_boost, weight_cap=flow.weight_cap,
                                           swap=swap, retime=retime, frame_spread=stage.frame_spread,
                                           envelope=stage.envelope)
                self.acc.backward(losses["total"] / accum)
            tasks.append(task)
            for j, name in enumerate(("video", "audio", "total")):
                if name in losses:
                    values[micro, j] = losses[name].detach().float()
        grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.step)
        values = self.acc.reduce(values, reduction="mean") if self.world > 1 else values
        rows = values.cpu().tolist()
        micro_records = []
        for task, (v, a, total) in zip(tasks, rows):
            rec: dict[str, Any] = {"task": task.value, "total": total}
            if "video" in task.spec.generates:
                rec["video"] = v
            if "audio" in task.spec.generates:
                rec["audio"] = a
            micro_records.append(rec)
        loss = sum(r["total"] for r in micro_records) / accum
        gn = float(grad_norm)
        data = {"stage": stage.name, "loss": loss, "lr": lr, "grad_norm": gn, "micro": micro_records,
                "task_losses": [[r["task"], r["total"]] for r in micro_records]}
        scalars = {"train/loss": loss, "train/lr": lr, "train/grad_norm": gn}
        for r in micro_records:
            for k in ("video", "audio", "total"):
                if k in r:
                    scalars[f"train/{r['task']}/{k}"] = r[k]
        self.monitor.train_step(self.step + 1, data, scalars)

    def _swap(self, stage: StageConfig, task: Task, draw: Any) -> Swap | None:
        """Counterfactual rows for this micro-batch: captioned rows with a swap, drawn at the
        stage's share, of tasks that generate the whole video (a given first frame shows the
        true object, so a swapped one would contradict it)."""
        sw = stage.counterfactual
        if sw is None or task.spec.video is not Role.GENERATE or task.spec.first_frame_given:
            return None
        video, has = self.swaps[stage.name]
        idx = torch.as_tensor(draw.indices, dtype=torch.long)
        pick = torch.rand(len(idx), generator=self.noise, device=self.acc.device).cpu() < sw.share
        rows = has[idx] & ~torch.as_tensor(draw.drop, dtype=torch.bool) & pick
        return Swap(video[idx].to(self.acc.device), rows.to(self.acc.device), sw.t_min, sw.t_max)

    def _retime(self, stage: StageConfig, task: Task, indices: np.ndarray) -> Retime | None:
        """Audio timing counterfactual rows for this micro-batch (`draw_retime`), for tasks that
        generate audio beside a video."""
        if stage.retime is None or task.spec.audio is not Role.GENERATE or not task.spec.has_video:
            return None
        audio = self.model_cfg.audio
        speech = None if stage.retime.speech else self.bank.has_speech(indices)  # read only when it decides rows
        return draw_retime(stage.retime, len(indices), audio.sample_rate / audio.hop, self.noise, self.acc.device,
                           has_speech=speech)

    # -- evaluation, checkpoints, export ---------------------------------------------------------
    def _evaluate(self) -> None:
        results: dict[str, float] = {}
        self.model.eval()
        with self.ema.swapped():
            if self.evaluator is not None:
                results.update(self.evaluator.validation_loss(self.loss_model, self.acc.autocast))
            if self.metrics_fn is not None:
                state = full_model_state(self.model)
                box: list[Any] = [None]
                if self.acc.is_main_process:
                    host = host_model(self.model_cfg, state).eval()
                    metrics = self.metrics_fn(model=host, step=self.step, device=self.acc.device)
                    box[0] = {f"metrics/{k}": float(v) for k, v in metrics.items()}
                if self.world > 1:
                    broadcast_object_list(box)
                results.update(box[0])
        self.model.train()
        self.last_eval = results
        self.monitor.scalars(self.step, "eval", results)
        shown = {k: round(v, 4) for k, v in results.items() if k.endswith("/total") or k.startswith("metrics/")}
        self.monitor.message(f"eval @ step {self.step}: {shown}")

    def _trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "stage_index": self.stage_index, "stage_step": self.stage_step,
                "stage_weights": self.stage_weights, "last_eval": self.last_eval, "world_size": self.world,
                "task_sampler": self.task_sampler.state_dict(), "config": self.cfg.to_dict(),
                "text_encoder": self.text_encoder}

    def _save(self) -> None:
        rank_state = {"batch_sampler": self.batch_sampler.state_dict(), "weights_sha256": self._replica_digest(),
                      **rng_state(self.noise)}
        path = save_checkpoint(self.out / "checkpoints", self.step, rank=self.rank, barrier=self.acc.wait_for_everyone,
                               model=self.model, optimizer=self.optimizer, ema=self.ema, config=self.model_cfg,
                               trainer_state=self._trainer_state(), rank_state=rank_state,
                               keep=self.cfg.checkpoint.keep, extra={"step": self.step})
        self.monitor.record({"kind": "checkpoint", "step": self.step, "path": str(path)})

    def _replica_digest(self) -> str | None:
        """Hash of this process's weights: DDP replicas must agree (FSDP shards differ by design)."""
        if self.cfg.distributed == "fsdp" and self.world > 1:
            return None
        h = hashlib.sha256()
        for p in self.model.parameters():
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def _resume(self, path: Path) -> None:
        state, rank_state = load_checkpoint(path, rank=self.rank, model=self.model, optimizer=self.optimizer, ema=self.ema)
        if state["world_size"] != self.world:
            raise ValueError(f"checkpoint {path} was written by {state['world_size']} process(es) but this run has "
                             f"{self.world}; resume with the same --num_processes")
        self.step, self.stage_index, self.stage_step = state["step"], state["stage_index"], state["stage_step"]
        self.stage_weights, self.last_eval = state["stage_weights"], state["last_eval"]
        self.task_sampler.load_state_dict(state["task_sampler"])
        self.batch_sampler.load_state_dict(rank_state["batch_sampler"])
        set_rng_state(rank_state, self.noise)
        if self.acc.is_main_process:
            log.info("resumed from %s at step %d (stage %d, step %d in stage)", path, self.step, self.stage_index,
                     self.stage_step)

    def _export(self) -> Path | None:
        with self.ema.swapped():
            state = full_model_state(self.model)
        path = None
        if self.acc.is_main_process:
            extra = bundle_extra(self.cfg, self.text_encoder, step=self.step, ema=True, eval=self.last_eval,
                                 stages=[s.name for s in self.cfg.stages])
            path = export_state(state, self.cfg, self.out / "export", extra=extra)
            self.monitor.message(f"exported the EMA weights and codecs to {path}")
        self.acc.wait_for_everyone()
        return path

    def _report_skipped(self) -> None:
        skipped = self.bank.skipped
        atomic_write_text(self.out / "skipped.json", json.dumps({"count": skipped.count, "by_reason": skipped.by_reason(),
                                                               "items": skipped.to_list()}))
        if skipped.count:
            self.monitor.message(f"skipped {skipped.count} item(s): {skipped.by_reason()}")
            for item, reason in skipped.items:
                self.monitor.message(f"  skipped {item}: {reason}")
