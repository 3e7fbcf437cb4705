"""`apollo-av bench perf`: speed against this machine's own limits and against a peer implementation.

Everything is measured in one run, as ratios where the machine's speed drifts: the matmul peak
(fp32, bf16), the DiT forward's MFU at several token counts and widths, attention backends, what
T2V/T2A cost against T2AV and the masked-dense formulation, our joint block against ComfyUI's,
`apollo-av generate` end to end, and the 26B preset's cost at 5 s 720p (no timing). The targets of
issue 6 are checked at the end (`targets`, PASS/MISS with the gap).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from apollo_core import memory
from apollo_core.config import ApolloConfig, get_preset
from apollo_core.tasks import Task

from .perf_cases import Clip
from .perf_comfy import BlockCase, compare_with_comfy
from .perf_e2e import make_random_bundle, measure_end_to_end, resolve_bench_checkpoint
from .perf_flops import forward_flops
from .perf_model import apply_peak, measure_attention, measure_bf16_modes, measure_forward, measure_tasks
from .perf_report import evaluate_targets, format_perf
from .perf_timing import machine_info, matmul_peak
from .results import write_json_atomic

SECTIONS = ("matmul", "forward", "attention", "tasks", "comfy", "e2e", "apollo_26b")
__all__ = ["SECTIONS", "PerfSizes", "QUICK", "FULL", "run_perf", "format_perf", "evaluate_targets", "write_report", "wide_config"]


def wide_config() -> ApolloConfig:
    """apollo-tiny at twice the width: 512 = 8 heads of 64, so each head's 32 rotary pairs split
    (16, 8, 8) over (t, h, w) as in apollo-tiny."""
    return get_preset("apollo-tiny").replace(name="apollo-tiny-wide", hidden=512, heads=8, rope_axes=(16, 8, 8))


@dataclass(frozen=True)
class PerfSizes:
    matmul: dict[str, list[int]]
    forward_configs: tuple[str, ...]  # preset names, or "apollo-tiny-wide"
    forward_clips: list[Clip]
    forward_budget_s: float  # per case and dtype; over it a case is reported skipped
    bf16_modes_clip: Clip
    attention_lens: list[int]
    attention_heads: int
    attention_head_dim: int
    tasks_config: str
    tasks_clips: list[Clip]
    comfy_cases: list[BlockCase]
    e2e_tasks: list[Task]
    e2e_steps: int | None  # None: `apollo-av generate`'s own default (the checkpoint's recommended steps)
    warmup: int = 1
    repeats: int = 3
    task_repeats: int = 5
    matmul_repeats: int = 5  # the peak is the best sample: more samples, less load in it
    compile_block: bool = False  # also time both blocks under torch.compile (minutes of compiling)
    forward_compile_min_tokens: int | None = None  # also time compiled forwards from this many tokens
    clip_26b: Clip = field(default_factory=lambda: Clip(5.0, 1280, 720))


QUICK = PerfSizes(
    matmul={"fp32": [256, 512], "bf16": [64, 128]},
    forward_configs=("debug",),
    forward_clips=[Clip(1.0, 32, 32)],
    forward_budget_s=3.0,
    bf16_modes_clip=Clip(0.5, 16, 16),
    attention_lens=[64, 128],
    attention_heads=2,
    attention_head_dim=32,
    tasks_config="debug",
    tasks_clips=[Clip(2.0, 32, 32)],
    comfy_cases=[BlockCase(hidden=64, heads=2, x_tokens=128, context_tokens=16)],
    e2e_tasks=[Task.T2AV],
    e2e_steps=1,
    warmup=1,
    repeats=2,
    task_repeats=1,
)

# Token counts of apollo-tiny's T2AV at these clips: 288, 1248, 2160, 4320.
FULL = PerfSizes(
    matmul={"fp32": [512, 1024, 2048], "bf16": [256, 512, 1024]},
    forward_configs=("apollo-tiny", "apollo-tiny-wide"),
    forward_clips=[Clip(2.0, 64, 64), Clip(4.0, 128, 128), Clip(4.0, 176, 176), Clip(4.0, 256, 256)],
    forward_budget_s=120.0,
    bf16_modes_clip=Clip(2.0, 64, 64),
    attention_lens=[512, 1024, 2048, 4096],
    attention_heads=4,
    attention_head_dim=64,
    tasks_config="apollo-tiny",
    tasks_clips=[Clip(2.0, 64, 64), Clip(4.0, 128, 128)],
    comfy_cases=[BlockCase(hidden=256, heads=4, x_tokens=1024, context_tokens=32),
                 BlockCase(hidden=512, heads=8, x_tokens=1024, context_tokens=32),
                 BlockCase(hidden=512, heads=8, x_tokens=4096, context_tokens=77)],
    e2e_tasks=list(Task),
    e2e_steps=None,
    warmup=1,
    repeats=3,
    task_repeats=5,
    compile_block=True,
    forward_compile_min_tokens=2000,
)


def _config(name: str) -> ApolloConfig:
    return wide_config() if name == "apollo-tiny-wide" else get_preset(name)


def apollo_26b_plan(clip: Clip) -> dict:
    """FLOPs per step and memory plan of the paper-scale preset (an estimate, nothing timed)."""
    config = get_preset("apollo-26b")
    size = memory.ClipSize(clip.seconds, clip.width, clip.height, config.video.fps)
    est = memory.estimate(config, size)
    speech = config.text.max_speech_tokens
    counted = forward_flops(config, est.tokens, speech_tokens=speech)
    return {"clip": clip.to_dict() | {"fps": config.video.fps}, "parameters": est.parameters,
            "parameters_by_part": est.parameters_by_part, "tokens": est.tokens, "tokens_total": sum(est.tokens.values()),
            "flops_per_step": est.flops_per_step, "flops_per_step_cfg": est.flops_per_step_cfg,
            "flops_per_step_counted": counted["total"], "flops_counted_breakdown": counted,
            "weight_bytes": est.weight_bytes, "peak_bytes_inference": est.peak_bytes_inference}


def run_perf(*, quick: bool = False, checkpoint: str | Path | None = None, random_bundle: str | None = None,
             sections: tuple[str, ...] = SECTIONS, sizes: PerfSizes | None = None, threads: int | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Measure every requested section and check the targets; returns a JSON-serialisable dict.

    checkpoint: bundle for the end-to-end section (default: the embedded apollo-tiny);
    random_bundle: instead, build an untrained bundle of this preset (same compute) in a temp dir.
    threads: torch threads here and in the child processes (default: leave torch's choice).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown perf section(s) {unknown}; choose from {list(SECTIONS)}")
    if checkpoint is not None and random_bundle is not None:
        raise ValueError("give either checkpoint or random_bundle, not both")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the ComfyUI child and `apollo-av generate` start with it
    sz = sizes or (QUICK if quick else FULL)
    say = log or (lambda _msg: None)
    started = time.perf_counter()
    report: dict = {"mode": "quick" if quick else "full", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "sections": list(sections), "machine_before": machine_info()}
    report["section_s"], report["errors"] = {}, {}

    def timed(section: str, fn: Callable[[], None]) -> None:
        # A failing section is recorded and the run goes on: a full run takes tens of minutes and
        # the other sections' figures stay valid. The CLI exits non-zero when `errors` is not empty.
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported in the JSON and on the console
            report["errors"][section] = f"{type(exc).__name__}: {exc}"
            say(f"perf: section {section} failed: {report['errors'][section]}")
        report["section_s"][section] = time.perf_counter() - start

    def run_matmul() -> None:
        say("perf: matmul peak")
        report["matmul_peak"] = matmul_peak(sz.matmul, repeats=sz.matmul_repeats)

    def run_forward() -> None:
        report["forward"] = []
        for name in sz.forward_configs:
            say(f"perf: DiT forward {name}")
            report["forward"] += measure_forward(_config(name), sz.forward_clips, report["matmul_peak"], warmup=sz.warmup,
                                                 repeats=sz.repeats, budget_s=sz.forward_budget_s,
                                                 compile_min_tokens=sz.forward_compile_min_tokens)
        say("perf: bf16 modes")
        report["bf16_modes"] = measure_bf16_modes(_config(sz.forward_configs[0]), sz.bf16_modes_clip, report["matmul_peak"],
                                                  warmup=sz.warmup, repeats=sz.repeats, budget_s=sz.forward_budget_s)

    def run_attention() -> None:
        say("perf: attention backends")
        report["attention"] = measure_attention(sz.attention_lens, heads=sz.attention_heads, head_dim=sz.attention_head_dim,
                                                warmup=sz.warmup, repeats=sz.repeats)

    def run_tasks() -> None:
        report["tasks"] = []
        for clip in sz.tasks_clips:
            say(f"perf: task costs at {clip.width}x{clip.height} {clip.seconds:g} s")
            report["tasks"].append(measure_tasks(_config(sz.tasks_config), clip, warmup=sz.warmup, repeats=sz.task_repeats))

    def run_comfy() -> None:
        say("perf: our joint block vs ComfyUI's (child process)")
        report["comfy_block"] = compare_with_comfy(sz.comfy_cases, warmup=sz.warmup, repeats=sz.task_repeats,
                                                   compile=sz.compile_block)

    def run_e2e() -> None:
        with tempfile.TemporaryDirectory(prefix="apollo-perf-bundle-") as tmp:
            if random_bundle is not None:
                say(f"perf: building an untrained {random_bundle} bundle")
                bundle = make_random_bundle(Path(tmp) / random_bundle, random_bundle)
            else:
                bundle = resolve_bench_checkpoint(checkpoint)
            report["end_to_end"] = measure_end_to_end(bundle, sz.e2e_tasks, steps=sz.e2e_steps, log=say)
            report["end_to_end"]["untrained_bundle"] = random_bundle

    def run_26b() -> None:
        report["apollo_26b"] = apollo_26b_plan(sz.clip_26b)

    if "e2e" in sections and random_bundle is None:
        resolve_bench_checkpoint(checkpoint)  # fail before minutes of measuring, not after
    runners = {"matmul": run_matmul, "forward": run_forward, "attention": run_attention, "tasks": run_tasks,
               "comfy": run_comfy, "e2e": run_e2e, "apollo_26b": run_26b}
    run_matmul()  # every MFU needs the peak: measured always, and a failure here ends the run
    report["section_s"]["matmul"] = time.perf_counter() - started
    for section in SECTIONS[1:]:
        if section in sections:
            timed(section, runners[section])
    if "forward" in report:
        # The peak is a property of the machine, load only hides it: re-measure at the end and
        # divide by the best seen, so a busy moment at the start does not inflate every MFU.
        say("perf: matmul peak again")
        again = matmul_peak(sz.matmul, repeats=sz.matmul_repeats)
        report["matmul_peak_end"] = again
        for name, p in again.items():
            if p["gflops"] > report["matmul_peak"][name]["gflops"]:
                report["matmul_peak"][name] = p
        apply_peak(report["forward"], report["matmul_peak"])
    report["machine_after"] = machine_info()
    report["elapsed_s"] = time.perf_counter() - started
    report["targets"] = evaluate_targets(report)
    return report


def write_report(report: dict, path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON atomically."""
    return write_json_atomic(path, report)
