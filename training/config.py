"""The run config: one YAML file -> validated, frozen dataclasses.

The curriculum is data: `stages` lists what each stage trains on (task mixture, data mixture,
quality filter), for how long and at which learning rate. Every key is checked against the
dataclasses below; an unknown key or a wrong type is a `ConfigError` naming its path
(`stages[1].lr.peek`), so a typo never silently falls back to a default.

Overrides (`key=value`, as on the `apollo-train` command line) are applied to the raw YAML before
validation; the value is parsed as YAML, and list items are addressed by index
(`stages.0.steps=20`).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from apollo_core.config import PRESETS, ApolloConfig, get_preset
from apollo_core.tasks import Task

PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
SCHEDULES = ("cosine", "constant")
SOURCE_KINDS = ("world", "clips")
REBALANCE_BY = ("validation_loss", "metrics")
CODEC_RANDOM = "random"  # untrained codecs from a seed: tests and smoke runs only


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the key path and the fix."""


@dataclass(frozen=True)
class LRConfig:
    peak: float = 3e-4
    warmup: int = 0  # optimizer steps of linear warm-up from 0
    schedule: str = "cosine"  # cosine decays from peak to final * peak over the stage
    final: float = 0.1


@dataclass(frozen=True)
class QualityFilter:
    """Which cached samples a stage may draw. Measures are computed at pre-encode time."""

    min_quality: float = 0.0  # the source's own score (sidecar `quality`, 1.0 when absent)
    min_motion: float = 0.0  # mean absolute frame difference, 0..1
    min_loudness_db: float = -120.0  # RMS level of the audio, dBFS
    require_speech: bool = False


@dataclass(frozen=True)
class RebalanceConfig:
    """Stage II: task weights from the evaluation at the end of the previous stage
    (rule in training/curriculum.py)."""

    by: str = "validation_loss"
    floor: float = 0.25  # a task keeps at least this share of its configured weight


@dataclass(frozen=True)
class FlowConfig:
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    # Cap on the weight 1/(1-t)^2 that the velocity loss puts on a sample's clean-estimate error
    # (apollo_core.flow.time_weight); 0 = uncapped. Training only: validation losses stay plain.
    weight_cap: float = 0.0


@dataclass(frozen=True)
class SwapConfig:
    """Counterfactual noisy inputs (apollo_core.objective.Swap): on a `share` of the captioned rows
    of tasks that generate video from its first frame on, at flow times within [t_min, t_max],
    the noisy video comes from the same world scene with each object's shape (or motion: the
    file's `--change`) changed, while the target stays the true clip. `latents` is written by
    `python -m training.data.counterfactual` (relative paths are inside output_dir, like
    data.cache_dir)."""

    latents: str
    share: float = 0.5
    t_min: float = 0.2
    t_max: float = 0.7


@dataclass(frozen=True)
class RetimeConfig:
    """Audio timing counterfactual (apollo_core.objective.Retime): on a `share` of the rows of
    tasks that generate audio beside a video, at flow times within [t_min, t_max], the noisy audio
    is the clip's own moved earlier or later by `min_seconds` to `max_seconds` (uniform, either
    sign, wrapping round), while the target stays the in-time audio. `speech: false` leaves the
    clips with speech in time: a talker's mouth follows its voice, and retiming those rows cost
    T2AV's talker sync (0.92 -> 0.79 of its events within one frame on 192 unseen specs)."""

    share: float = 0.5
    min_seconds: float = 0.0625
    max_seconds: float = 0.375
    t_min: float = 0.0
    t_max: float = 0.35
    speech: bool = True


@dataclass(frozen=True)
class StageConfig:
    name: str
    steps: int  # optimizer steps
    batch_size: int  # samples per micro-batch per process
    tasks: dict[str, float]
    data: dict[str, float]
    grad_accum: int = 1
    lr: LRConfig = field(default_factory=LRConfig)
    quality: QualityFilter = field(default_factory=QualityFilter)
    caption_dropout: float = 0.1  # per-sample probability of empty captions and speech (CFG)
    rebalance: RebalanceConfig | None = None
    # This stage's flow-time distribution: keys given here replace the run's `flow` keys for the
    # stage's training steps. Validation keeps the run's, so its losses stay comparable.
    flow: FlowConfig | None = None
    # Extra audio loss weight on onset frames (apollo_core.objective.onset_weight); 0 = plain mean.
    onset_boost: float = 0.0
    # Extra video loss weight on the objects' latent pixels (apollo_core.objective.foreground_weight).
    foreground_boost: float = 0.0
    # Extra video loss weight on latent pixels that change between frames (objects arriving or
    # leaving; apollo_core.objective.motion_weight).
    motion_boost: float = 0.0
    counterfactual: SwapConfig | None = None
    retime: RetimeConfig | None = None
    # Weight of the audio onset-envelope error of the clean estimate (apollo_core.objective.
    # envelope_error), added to the loss; 0 = off.
    envelope: float = 0.0
    # Frames at spread times on half the rows (apollo_core.objective.training_loss; logit units,
    # earlier frames cleaner), for a sampler with the same spread; 0 = every frame at one time.
    frame_spread: float = 0.0

    def task_weights(self) -> dict[Task, float]:
        return {Task.parse(k): float(v) for k, v in self.tasks.items()}


@dataclass(frozen=True)
class SourceConfig:
    """`world`: the synthetic AV world rendered from seeds [start, stop).
    `clips`: a folder of mp4/mkv/webm files with a sidecar JSON each."""

    kind: str
    seeds: list[int] | None = None
    path: str | None = None
    max_windows: int = 1  # clips: consecutive `clip.seconds` windows taken from each file


@dataclass(frozen=True)
class ClipConfig:
    """Every training sample has this size; fps and sample rate come from the model config."""

    seconds: float = 2.0
    height: int = 64
    width: int = 64


@dataclass(frozen=True)
class DataConfig:
    sources: dict[str, SourceConfig]
    clip: ClipConfig = field(default_factory=ClipConfig)
    cache_dir: str = "cache"  # relative paths are inside output_dir
    shard_size: int = 256
    encode_batch: int = 16


@dataclass(frozen=True)
class CodecConfig:
    video: str = CODEC_RANDOM  # a codec file (apollo_core.codecs.save_codec) or "random"
    audio: str = CODEC_RANDOM
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "debug"
    overrides: dict[str, Any] = field(default_factory=dict)  # ApolloConfig.replace keys, e.g. video.fps
    attention: str = "auto"
    init_from: str | None = None  # start from these weights: a model file or a bundle folder

    def build(self) -> ApolloConfig:
        return get_preset(self.preset).replace(**self.overrides) if self.overrides else get_preset(self.preset)


@dataclass(frozen=True)
class EvalConfig:
    source: str | None = None  # held-out source; must not be in any stage's data mixture
    every: int = 0  # optimizer steps; 0 = only at the end of each stage
    samples: int = 32
    batch_size: int = 16
    metrics: str | None = None  # "module:function" quality-metrics callable (training/evaluation.py)
    seed: int = 1234


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 0  # optimizer steps; 0 = only at the end of each stage
    keep: int = 3


@dataclass(frozen=True)
class RunConfig:
    stages: list[StageConfig]
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    codecs: CodecConfig = field(default_factory=CodecConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0
    output_dir: str = "runs/apollo"
    precision: str = "bf16"
    distributed: str = "ddp"
    activation_checkpointing: bool = False
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    log_every: int = 1
    tensorboard: bool = True

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def cache_path(self) -> Path:
        return self.inside(self.data.cache_dir)

    def inside(self, path: str) -> Path:
        """A config path: absolute as given, relative ones inside output_dir."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.output_dir) / p

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run config {path} does not exist; pass --config with a YAML file "
                          f"(see training/configs/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"run config {path} is not valid YAML: {exc}") from None
    return parse_config(raw, overrides, source=str(path))


def parse_config(raw: Any, overrides: list[str] | tuple[str, ...] = (), *, source: str = "config") -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of options, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    _inherit_stage_flow(raw)
    try:
        cfg = _build(RunConfig, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def _inherit_stage_flow(raw: dict[str, Any]) -> None:
    """A stage's `flow` names only what it changes; the rest comes from the run's `flow`."""
    run_flow, stages = raw.get("flow") or {}, raw.get("stages")
    if not isinstance(run_flow, dict) or not isinstance(stages, list):
        return  # _build reports the type error with its path
    for stage in stages:
        if isinstance(stage, dict) and isinstance(stage.get("flow"), dict):
            stage["flow"] = {**run_flow, **stage["flow"]}


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.0.c=value` into the raw mapping; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. stages.0.steps=20)")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text else ""
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key!r}: {where} needs an index below {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {key!r}: {where} is inside a {type(node).__name__}, not a mapping or list")


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {_join(path, str(key))!r}; known keys here: {sorted(known)}")
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {_join(path, name)!r}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported option type {tp!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ----------------------------------------------------------------------------------------------
# cross-field checks


def validate(cfg: RunConfig) -> None:
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("distributed", cfg.distributed, STRATEGIES)
    if cfg.model.preset not in PRESETS:
        raise ConfigError(f"model.preset {cfg.model.preset!r} is not one of {sorted(PRESETS)}")
    try:
        cfg.model.build()
    except ValueError as exc:
        raise ConfigError(f"model.overrides: {exc}") from None
    _range("ema_decay", cfg.ema_decay, 0.0, 1.0, high_open=True)
    _positive("grad_clip", cfg.grad_clip)
    _range("weight_decay", cfg.weight_decay, 0.0, 1.0)
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    _positive("log_every", cfg.log_every)
    _positive("checkpoint.keep", cfg.checkpoint.keep)
    _non_negative("checkpoint.every", cfg.checkpoint.every)
    _non_negative("eval.every", cfg.eval.every)
    _positive("data.shard_size", cfg.data.shard_size)
    _positive("data.encode_batch", cfg.data.encode_batch)
    _positive("data.clip.seconds", cfg.data.clip.seconds)
    _positive("data.clip.height", cfg.data.clip.height)
    _positive("data.clip.width", cfg.data.clip.width)
    _check_flow("flow", cfg.flow)
    if not cfg.data.sources:
        raise ConfigError("data.sources is empty; define at least one source (kind: world or clips)")
    for name, src in cfg.data.sources.items():
        _check_source(f"data.sources.{name}", src)
    if not cfg.stages:
        raise ConfigError("stages is empty; list at least one stage (see training/configs/debug.yaml)")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stage names must be unique, got {names}")
    for i, stage in enumerate(cfg.stages):
        _check_stage(cfg, i, stage)
    ev = cfg.eval
    if ev.source is not None:
        if ev.source not in cfg.data.sources:
            raise ConfigError(f"eval.source {ev.source!r} is not one of data.sources {sorted(cfg.data.sources)}")
        for i, stage in enumerate(cfg.stages):
            if ev.source in stage.data:
                raise ConfigError(f"eval.source {ev.source!r} is also trained on in stages[{i}].data; "
                                  "hold out a separate source for validation")
        _positive("eval.samples", ev.samples)
        _positive("eval.batch_size", ev.batch_size)
    if ev.metrics is not None and ":" not in ev.metrics:
        raise ConfigError(f"eval.metrics must be 'module:function', got {ev.metrics!r}")


def _check_source(path: str, src: SourceConfig) -> None:
    _choice(f"{path}.kind", src.kind, SOURCE_KINDS)
    if src.kind == "world":
        if src.seeds is None or len(src.seeds) != 2 or not 0 <= src.seeds[0] < src.seeds[1]:
            raise ConfigError(f"{path}.seeds must be [start, stop) with 0 <= start < stop, got {src.seeds}")
        if src.path is not None:
            raise ConfigError(f"{path}.path is only for kind: clips")
    else:
        if not src.path:
            raise ConfigError(f"{path}.path must name the clip folder for kind: clips")
        if src.seeds is not None:
            raise ConfigError(f"{path}.seeds is only for kind: world")
    _positive(f"{path}.max_windows", src.max_windows)


def _check_stage(cfg: RunConfig, i: int, stage: StageConfig) -> None:
    p = f"stages[{i}]"
    _positive(f"{p}.steps", stage.steps)
    _positive(f"{p}.batch_size", stage.batch_size)
    _positive(f"{p}.grad_accum", stage.grad_accum)
    _range(f"{p}.caption_dropout", stage.caption_dropout, 0.0, 1.0, high_open=True)
    _non_negative(f"{p}.onset_boost", stage.onset_boost)
    _non_negative(f"{p}.foreground_boost", stage.foreground_boost)
    _non_negative(f"{p}.motion_boost", stage.motion_boost)
    _non_negative(f"{p}.frame_spread", stage.frame_spread)
    _non_negative(f"{p}.envelope", stage.envelope)
    if stage.counterfactual is not None:
        sw = stage.counterfactual
        _range(f"{p}.counterfactual.share", sw.share, 0.0, 1.0)
        if not 0.0 <= sw.t_min <= sw.t_max < 1.0:
            raise ConfigError(f"{p}.counterfactual needs 0 <= t_min <= t_max < 1, "
                              f"got t_min={sw.t_min}, t_max={sw.t_max}")
    if stage.retime is not None:
        rt = stage.retime
        _range(f"{p}.retime.share", rt.share, 0.0, 1.0)
        if not 0.0 < rt.min_seconds <= rt.max_seconds:
            raise ConfigError(f"{p}.retime needs 0 < min_seconds <= max_seconds, "
                              f"got min_seconds={rt.min_seconds}, max_seconds={rt.max_seconds}")
        if not 0.0 <= rt.t_min <= rt.t_max < 1.0:
            raise ConfigError(f"{p}.retime needs 0 <= t_min <= t_max < 1, got t_min={rt.t_min}, t_max={rt.t_max}")
    _positive(f"{p}.lr.peak", stage.lr.peak)
    _non_negative(f"{p}.lr.warmup", stage.lr.warmup)
    _choice(f"{p}.lr.schedule", stage.lr.schedule, SCHEDULES)
    _range(f"{p}.lr.final", stage.lr.final, 0.0, 1.0)
    if stage.lr.warmup >= stage.steps:
        raise ConfigError(f"{p}.lr.warmup={stage.lr.warmup} must be below {p}.steps={stage.steps}")
    if stage.flow is not None:
        _check_flow(f"{p}.flow", stage.flow)
    _weights(f"{p}.tasks", stage.tasks)
    for key in stage.tasks:
        try:
            Task.parse(key)
        except ValueError as exc:
            raise ConfigError(f"{p}.tasks: {exc}") from None
    _weights(f"{p}.data", stage.data)
    for key in stage.data:
        if key not in cfg.data.sources:
            raise ConfigError(f"{p}.data names source {key!r}, which is not in data.sources {sorted(cfg.data.sources)}")
    if stage.rebalance is not None:
        rb = stage.rebalance
        _choice(f"{p}.rebalance.by", rb.by, REBALANCE_BY)
        _range(f"{p}.rebalance.floor", rb.floor, 0.0, 1.0)
        if rb.floor == 0.0:
            raise ConfigError(f"{p}.rebalance.floor must be > 0 so no task drops out of the mixture")
        if i == 0:
            raise ConfigError(f"{p}.rebalance needs a previous stage to measure; move it to a later stage")
        if rb.by == "validation_loss" and cfg.eval.source is None:
            raise ConfigError(f"{p}.rebalance.by=validation_loss needs eval.source (a held-out data source)")
        if rb.by == "metrics" and cfg.eval.metrics is None:
            raise ConfigError(f"{p}.rebalance.by=metrics needs eval.metrics ('module:function')")


def _check_flow(path: str, flow: FlowConfig) -> None:
    _positive(f"{path}.logit_std", flow.logit_std)
    _positive(f"{path}.shift", flow.shift)
    _non_negative(f"{path}.weight_cap", flow.weight_cap)


def _weights(path: str, weights: dict[str, float]) -> None:
    if not weights:
        raise ConfigError(f"{path} is empty; give at least one entry with a positive weight")
    for key, w in weights.items():
        if w < 0:
            raise ConfigError(f"{path}.{key} must be >= 0, got {w}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{path}: weights sum to 0; give at least one positive weight")


def _choice(path: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{path}={value!r} is not one of {list(options)}")


def _positive(path: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{path} must be > 0, got {value!r}")


def _non_negative(path: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{path} must be >= 0, got {value!r}")


def _range(path: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{path} must be in [{low}, {high}{bracket}, got {value!r}")
