"""`apollo-av bench ablate`: the paper's ablations at micro scale.

Equal-budget micro models are trained with the training package (one base run config, each
variant a few config overrides) and scored with the quality benchmark on the held-out specs:

- Table 2: single tower with Omni-Full attention vs the dual-tower baseline (cross-attention);
- Table 3: all tasks vs T2V+T2AV vs T2AV only (random modality masking);
- aligned MixD-RoPE (audio on the video clock) vs the offset variant (audio ids after video's);
- joint T2AV vs the cascade (T2V, then V2A on the generated frames) with the same model.

"Equal budget" means equal training samples: the base variant's seconds per step are measured
once (on this machine, at the start of the run) and turned into a step count that every variant
and seed trains for, so a slower variant (the dual tower has more weights) is not cut short.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from training.config import RunConfig, load_config
from training.data.world import SceneSpec

from .quality import CASCADE, run_quality

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "training" / "configs" / "ablate.yaml"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: tuple[str, ...] = ()  # training config overrides (YAML values)
    tasks: tuple[tuple[str, float], ...] | None = None  # task mixture for every stage; None keeps the config's


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("omni", "single tower, Omni-Full attention, all tasks, aligned MixD-RoPE (APOLLO)"),
    Variant("dual_tower", "two towers joined by cross-attention (Table 2 baseline)",
            ("model.overrides.architecture=dual_tower",)),
    Variant("t2v_t2av", "single tower trained on T2V + T2AV only (Table 3)", tasks=(("t2av", 1.0), ("t2v", 1.0))),
    Variant("t2av_only", "single tower trained on T2AV only (section 5.4)", tasks=(("t2av", 1.0),)),
    Variant("offset_rope", "audio RoPE ids after the last video id (the paper's literal wording)",
            ("model.overrides.rope_audio=offset",)),
)}

SYNC = (("sync_within_1_frame", 1), ("sync_in_frame", 1), ("sync_conf", 1), ("sync_offset_ms", -1))
VIDEO = (("fd_video", -1), ("acc_colour", 1), ("acc_shape", 1), ("acc_motion", 1))
AUDIO = (("fd_audio", -1), ("acc_pitch", 1), ("acc_sound", 1))


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str
    better: tuple[str, str]  # (variant, task scored): the side the paper finds better
    worse: tuple[str, str]
    metrics: tuple[tuple[str, int], ...]  # (key, +1 higher is better / -1 lower is better)
    paper: str


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("single tower vs dual tower (Table 2)", ("omni", "t2av"), ("dual_tower", "t2av"), SYNC + VIDEO + AUDIO,
               "single tower better everywhere: DeSync 0.650 vs 1.163, Sync-conf 6.787 vs 3.762, ID 0.80 vs 0.62"),
    Comparison("all tasks vs T2V+T2AV, T2AV (Table 3)", ("omni", "t2av"), ("t2v_t2av", "t2av"), SYNC + VIDEO + AUDIO,
               "all tasks better: DeSync 0.650 vs 0.895, Sync-conf 6.787 vs 5.024"),
    Comparison("all tasks vs T2V+T2AV, T2V (Table 3)", ("omni", "t2v"), ("t2v_t2av", "t2v"), VIDEO,
               "all tasks better on video: ID 0.80 vs 0.76"),
    Comparison("all tasks vs T2AV only (section 5.4)", ("omni", "t2av"), ("t2av_only", "t2av"), SYNC + VIDEO + AUDIO,
               "multi-task significantly better than T2AV-only training (no figures given)"),
    Comparison("aligned vs offset MixD-RoPE", ("omni", "t2av"), ("offset_rope", "t2av"), SYNC,
               "not in the paper; shared/design/FEASIBILITY.md: offset ids leave sync at chance at small scale"),
    Comparison("joint T2AV vs cascade T2V->V2A (Table 1)", ("omni", "t2av"), ("omni", CASCADE), SYNC + AUDIO,
               "cascades perform poorly (error accumulation, weak A/V consistency)"),
)


def tasks_to_score(variants: list[str]) -> dict[str, list[str]]:
    """The quality tasks each variant needs for the comparisons among `variants`."""
    need: dict[str, list[str]] = {v: [] for v in variants}
    for c in COMPARISONS:
        if c.better[0] in need and c.worse[0] in need:
            for variant, task in (c.better, c.worse):
                if task not in need[variant]:
                    need[variant].append(task)
    return need


def variant_config(base: Path, variant: Variant, *, seed: int, steps: int, out: Path, cache: Path,
                   extra: tuple[str, ...] = ()) -> RunConfig:
    """The base run config with the variant's overrides, `steps` training steps split over the
    base stages in their configured proportions, one shared encoded-data cache and resolved codec
    paths."""
    probe = load_config(base, list(extra))
    overrides = [*extra, f"seed={seed}", f"output_dir={out}", f"data.cache_dir={cache}", "tensorboard=false",
                 "checkpoint.every=0", *variant.overrides]
    for kind in ("video", "audio"):
        path = getattr(probe.codecs, kind)
        if path != "random" and not Path(path).is_absolute() and not Path(path).exists() and (REPO / path).exists():
            overrides.append(f"codecs.{kind}={REPO / path}")
    for i, (stage, n) in enumerate(zip(probe.stages, split_steps(steps, [s.steps for s in probe.stages]))):
        overrides.append(f"stages.{i}.steps={n}")
        if stage.lr.warmup >= n:  # very short runs (tests): warm-up must stay inside the stage
            overrides.append(f"stages.{i}.lr.warmup={n - 1}")
        if variant.tasks is not None:
            overrides.append(f"stages.{i}.tasks={{{', '.join(f'{t}: {w}' for t, w in variant.tasks)}}}")
    return load_config(base, overrides)


def split_steps(steps: int, weights: list[int]) -> list[int]:
    """`steps` split in proportion to `weights` (largest remainders), at least one per stage."""
    raw = [steps * w / sum(weights) for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[: steps - sum(out)]:
        out[i] += 1
    return [max(1, n) for n in out]


def measure_step_seconds(cfg: RunConfig, steps: int = 3) -> float:
    from training.trainer import Trainer

    return Trainer(cfg).benchmark(steps)["seconds_per_step"]


def summarise(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    a = np.asarray(vals, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": len(vals)}


def compare(runs: dict[str, dict[str, dict[str, list]]], comparisons=COMPARISONS) -> list[dict]:
    """Per comparison and metric: both sides' mean/spread over seeds, whether our direction agrees
    with the paper's, and whether the seeds' ranges separate (every seed of the better side beats
    every seed of the other)."""
    rows = []
    for c in comparisons:
        if c.better[0] not in runs or c.worse[0] not in runs:
            continue
        for key, sign in c.metrics:
            a = summarise(runs[c.better[0]].get(c.better[1], {}).get(key, []))
            b = summarise(runs[c.worse[0]].get(c.worse[1], {}).get(key, []))
            agrees = separated = None
            if a["mean"] is not None and b["mean"] is not None:
                diff = sign * (a["mean"] - b["mean"])
                agrees = "tie" if diff == 0 else ("yes" if diff > 0 else "no")
                # the better side's worst seed still beats the other side's best seed
                a_worst, b_best = (a["min"], b["max"]) if sign > 0 else (a["max"], b["min"])
                separated = agrees == "yes" and sign * (a_worst - b_best) > 0
            rows.append({"comparison": c.name, "metric": key, "higher_is_better": sign > 0,
                         "paper_better": f"{c.better[0]}/{c.better[1]}", "paper_worse": f"{c.worse[0]}/{c.worse[1]}",
                         "better": a, "worse": b, "agrees": agrees, "separated": separated, "paper": c.paper})
    return rows


def run_ablation(*, budget_minutes: float, seeds: list[int], variants: list[str], out_dir: str | Path,
                 base_config: str | Path = BASE_CONFIG, n: int = 16, sample_steps: int = 25,
                 specs: list[SceneSpec] | None = None, train_steps: int | None = None,
                 config_overrides: tuple[str, ...] = (), log: Callable[[str], None] | None = None) -> dict:
    """Train every variant for every seed on an equal budget, score them, compare."""
    from training.trainer import Trainer

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants {unknown or variants} invalid; choose from {list(VARIANTS)}")
    if not seeds:
        raise ValueError("give at least one seed (--seeds)")
    if train_steps is None and budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0, got {budget_minutes}")
    base, out = Path(base_config), Path(out_dir)
    cache = (out / "cache").resolve()
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    seconds_per_step = None
    if train_steps is None:
        probe = variant_config(base, VARIANTS[variants[0]], seed=seeds[0], steps=10, out=out / "timing", cache=cache,
                               extra=config_overrides)
        seconds_per_step = measure_step_seconds(probe)
        train_steps = max(1, int(budget_minutes * 60 / seconds_per_step))
        say(f"{variants[0]} trains at {seconds_per_step:.3f} s/step: {train_steps} steps per model "
            f"({budget_minutes:g} min each)")
    need = tasks_to_score(variants)
    runs: dict[str, dict[str, dict[str, list]]] = {v: {} for v in variants}
    per_run: list[dict] = []
    for name in variants:
        for seed in seeds:
            cfg = variant_config(base, VARIANTS[name], seed=seed, steps=train_steps, out=out / f"{name}-seed{seed}",
                                 cache=cache, extra=config_overrides)
            say(f"training {name} seed {seed}: {cfg.total_steps} steps")
            t0 = time.perf_counter()
            result = Trainer(cfg).run()
            train_s = time.perf_counter() - t0
            tasks = need[name] or ["t2av"]
            say(f"scoring {name} seed {seed} on {', '.join(tasks)}")
            q = run_quality(str(result.export), specs, tasks, n, sample_steps, 0, reference=False)
            per_run.append({"variant": name, "seed": seed, "train_seconds": train_s, "steps": result.step,
                            "export": str(result.export), "tasks": q["tasks"]})
            for task, figures in q["tasks"].items():
                bucket = runs[name].setdefault(task, {})
                for key, value in figures.items():
                    if isinstance(value, (int, float)):
                        bucket.setdefault(key, []).append(value)
    return {
        "budget_minutes": budget_minutes, "seconds_per_step": seconds_per_step, "train_steps": train_steps,
        "seeds": list(seeds), "variants": {v: VARIANTS[v].description for v in variants},
        "base_config": str(base), "config_overrides": list(config_overrides), "n": n, "sample_steps": sample_steps,
        "runs": per_run, "comparisons": compare(runs), "seconds": time.perf_counter() - started,
    }


def format_ablation(results: dict) -> str:
    def cell(s: dict) -> str:
        if s["mean"] is None:
            return "-"
        return f"{s['mean']:.3g} [{s['min']:.3g}, {s['max']:.3g}]"

    head = (f"ablate: {results['train_steps']} steps per model, seeds {results['seeds']}, n={results['n']} specs, "
            f"{results['sample_steps']} sampling steps (mean [min, max] over seeds)")
    rows = [("comparison", "metric", "paper-better side", "other side", "agrees", "separated")]
    for r in results["comparisons"]:
        arrow = "^" if r["higher_is_better"] else "v"
        rows.append((r["comparison"], f"{r['metric']} {arrow}", f"{r['paper_better']} {cell(r['better'])}",
                     f"{r['paper_worse']} {cell(r['worse'])}", str(r["agrees"] or "-"),
                     "-" if r["separated"] is None else ("yes" if r["separated"] else "no")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    papers = sorted({(r["comparison"], r["paper"]) for r in results["comparisons"]})
    return "\n".join([head, *lines, "paper:", *(f"  {name}: {text}" for name, text in papers)])
