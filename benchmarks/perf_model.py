"""Model-level measurements: DiT forward MFU, attention backends, and what a task costs."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from apollo_core import memory
from apollo_core.compile import compile_blocks
from apollo_core.config import ApolloConfig
from apollo_core.model.attention import Backend, available, get_attention
from apollo_core.tasks import Task

from .perf_cases import VIDEO_STREAMS, Clip, masked_dense_forward, random_model, run_blocks, task_inputs, to_bf16, video_only_blocks
from .perf_flops import forward_flops, input_tokens
from .perf_timing import paired_ratio, time_interleaved


def _skip(predicted_s: float, budget_s: float, why: str) -> str | None:
    if predicted_s <= budget_s:
        return None
    return f"skipped: {why} predicts {predicted_s:.1f} s for the timed runs, over the {budget_s:g} s budget"


def mode_dtype(mode: str) -> str:
    """The dtype a forward mode computes in ("fp32+compile" -> "fp32")."""
    return mode.split("+")[0]


def mfu_peak(peak: dict[str, dict], dtype: str) -> float:
    """The machine's limit for `dtype` math. Any bf16 product can be computed at the fp32 FMA rate
    (convert, then FMA), so fp32's peak bounds bf16's from below: on a CPU without bf16 units
    (AVX2 only) torch's bf16 GEMM is far below that rate, while SDPA converts and runs near it.
    A mode such as "fp32+compile" is held to its dtype's peak."""
    dtype = mode_dtype(dtype)
    if dtype == "fp32":
        return peak["fp32"]["gflops"]
    return max(peak[dtype]["gflops"], peak["fp32"]["gflops"])


COMPILED = "fp32+compile"  # fp32 with apollo_core.compile.compile_blocks (inductor fuses the element-wise work)


def measure_forward(config: ApolloConfig, clips: list[Clip], peak: dict[str, dict], *, dtypes: tuple[str, ...] = ("fp32", "bf16"),
                    warmup: int = 1, repeats: int = 3, budget_s: float = 60.0, compile_min_tokens: int | None = None) -> list[dict]:
    """T2AV forward (batch 1) per clip size and dtype: time, achieved GFLOP/s and MFU against
    `mfu_peak` of that dtype. A case whose predicted time at the dtype's measured matmul speed
    exceeds `budget_s` is reported as skipped (without bf16 units a bf16 forward runs ~20-50x slower).
    compile_min_tokens: also time the `COMPILED` mode on cases with at least this many tokens (the
    first warm-up call compiles, so compile time is not in the figures)."""
    fp32 = random_model(config)
    models: dict[str, Callable[[], torch.nn.Module]] = {"fp32": lambda: fp32, "bf16": lambda: to_bf16(copy.deepcopy(fp32)),
                                                         COMPILED: lambda: compile_blocks(copy.deepcopy(fp32), dynamic=False)}
    built: dict[str, torch.nn.Module] = {}
    rows = []
    for clip in clips:
        inputs = task_inputs(config, Task.T2AV, clip, 1)
        tokens, speech = input_tokens(config, inputs)
        flops = forward_flops(config, tokens, speech_tokens=speech)
        est = memory.estimate(config, memory.ClipSize(clip.seconds, clip.width, clip.height, config.video.fps),
                              caption_tokens=config.text.max_caption_tokens, speech_tokens=speech)
        row = {"preset": config.name, "hidden": config.hidden, "heads": config.heads, "depth": config.depth,
               "clip": clip.to_dict(), "tokens": sum(tokens.values()), "tokens_by_stream": tokens,
               "flops": flops["total"], "flops_breakdown": flops, "flops_memory_estimate": est.flops_per_step,
               "estimate_over_counted": est.flops_per_step / flops["total"], "by_dtype": {}}
        modes = dtypes + ((COMPILED,) if compile_min_tokens is not None and row["tokens"] >= compile_min_tokens else ())
        for name in modes:
            gflops_peak = mfu_peak(peak, name)
            speed = peak[mode_dtype(name)]["gflops"]
            predicted = flops["total"] / (speed * 1e9) * (warmup + repeats)
            reason = _skip(predicted, budget_s, f"the {name} matmul speed ({speed:.1f} GFLOP/s)")
            if reason:
                row["by_dtype"][name] = {"skipped": reason}
                continue
            if name not in built:
                built[name] = models[name]()
            model = built[name]
            with torch.no_grad():
                t = time_interleaved({"f": lambda: model(inputs)}, warmup=warmup, repeats=repeats)["f"]
            achieved = flops["total"] / t.median_s / 1e9
            row["by_dtype"][name] = {"time_s": t.median_s, "min_s": t.min_s, "gflops": achieved, "peak_gflops": gflops_peak,
                                     "mfu": achieved / gflops_peak, "mfu_best": flops["total"] / t.min_s / 1e9 / gflops_peak}
        rows.append(row)
    return rows


def measure_bf16_modes(config: ApolloConfig, clip: Clip, peak: dict[str, dict], *, warmup: int = 1, repeats: int = 3,
                       budget_s: float = 60.0) -> dict:
    """bf16 weights + activations vs fp32 weights under torch.autocast(bf16), against fp32."""
    inputs = task_inputs(config, Task.T2AV, clip, 1)
    tokens, speech = input_tokens(config, inputs)
    flops = forward_flops(config, tokens, speech_tokens=speech)["total"]
    predicted = 2 * flops / (peak["bf16"]["gflops"] * 1e9) * (warmup + repeats)
    reason = _skip(predicted, budget_s, f"the bf16 matmul peak ({peak['bf16']['gflops']:.1f} GFLOP/s)")
    out: dict = {"preset": config.name, "clip": clip.to_dict(), "tokens": sum(tokens.values())}
    if reason:
        return out | {"skipped": reason}
    fp32 = random_model(config)
    bf16 = to_bf16(copy.deepcopy(fp32))

    def autocast() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fp32(inputs)

    with torch.no_grad():
        times = time_interleaved({"fp32": lambda: fp32(inputs), "bf16_weights": lambda: bf16(inputs), "autocast_bf16": autocast},
                                 warmup=warmup, repeats=repeats)
    out["time_s"] = {k: t.median_s for k, t in times.items()}
    out["faster_bf16_mode"] = min(("bf16_weights", "autocast_bf16"), key=lambda k: times[k].median_s)
    out["bf16_weights_over_fp32"] = times["bf16_weights"].median_s / times["fp32"].median_s
    out["autocast_over_fp32"] = times["autocast_bf16"].median_s / times["fp32"].median_s
    return out


def measure_attention(seq_lens: list[int], *, heads: int, head_dim: int, dtype: str = "fp32", padding: float = 0.1,
                      warmup: int = 1, repeats: int = 3) -> list[dict]:
    """Every available backend at each joint sequence length (batch 1), as time / time(sdpa).

    `sdpa+key_mask` is SDPA with the last `padding` share of keys masked, the path every real
    prompt takes (captions are padded to the maximum length)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    backends = [b for b in (Backend.MATH, Backend.SDPA, Backend.FLASH_ATTN, Backend.SAGE) if available(b)]
    rows = []
    for n in seq_lens:
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(1, n, heads, head_dim, generator=g).to(torch_dtype) for _ in range(3))  # [B, N, H, D]
        mask = torch.ones(1, n, dtype=torch.bool)
        mask[:, n - max(1, int(n * padding)):] = False
        fns: dict[str, Callable[[], object]] = {}
        for b in backends:
            fn = get_attention(b)
            fns[b.value] = lambda fn=fn: fn(q, k, v, None)
        sdpa = get_attention(Backend.SDPA)
        fns["sdpa+key_mask"] = lambda: sdpa(q, k, v, mask)
        with torch.no_grad():
            times = time_interleaved(fns, warmup=warmup, repeats=repeats)
        flops = 4.0 * n * n * heads * head_dim
        ref = times["sdpa"].median_s
        rows.append({"seq_len": n, "heads": heads, "head_dim": head_dim, "dtype": dtype,
                     "backends": {name: {"time_s": t.median_s, "gflops": flops / t.median_s / 1e9,
                                         "over_sdpa": t.median_s / ref} for name, t in times.items()}})
    return rows


def measure_tasks(config: ApolloConfig, clip: Clip, *, batch: int = 2, warmup: int = 1, repeats: int = 5) -> dict:
    """T2AV, T2V, T2A, masked-dense T2V and a video-only model (same weights), timed interleaved at
    the sampler's batch (cond + uncond). Absent streams are dropped from the sequence, so T2V
    should cost what a video-only model costs; the masked-dense formulation pays for all streams.
    `ratios` are paired by round (see `paired_ratio`), `ratios_best` compare the fastest samples."""
    model = random_model(config)
    inputs = {task: task_inputs(config, task, clip, batch) for task in (Task.T2AV, Task.T2V, Task.T2A)}
    video_only = video_only_blocks(model)
    fns = {
        "t2av": lambda: model(inputs[Task.T2AV]),
        "t2v": lambda: model(inputs[Task.T2V]),
        "t2a": lambda: model(inputs[Task.T2A]),
        "masked_dense_t2v": lambda: masked_dense_forward(model, inputs[Task.T2AV], VIDEO_STREAMS),
        "video_only_model": lambda: run_blocks(model, video_only, inputs[Task.T2V]),
    }
    with torch.no_grad():
        times = time_interleaved(fns, warmup=warmup, repeats=repeats)
    flops = {}
    for task in (Task.T2AV, Task.T2V, Task.T2A):
        tokens, speech = input_tokens(config, inputs[task])
        flops[task.value] = forward_flops(config, tokens, speech_tokens=speech, batch=batch)["total"]
    pairs = {"t2v_over_t2av": ("t2v", "t2av"), "t2a_over_t2av": ("t2a", "t2av"),
             "masked_dense_t2v_over_t2v": ("masked_dense_t2v", "t2v"), "t2v_over_video_only": ("t2v", "video_only_model")}
    med = {k: t.median_s for k, t in times.items()}
    best = {k: t.min_s for k, t in times.items()}
    ratios = {name: paired_ratio(times[a], times[b]) for name, (a, b) in pairs.items()}
    ratios_best = {name: best[a] / best[b] for name, (a, b) in pairs.items()}
    flop_ratios = {"t2v_over_t2av": flops["t2v"] / flops["t2av"], "t2a_over_t2av": flops["t2a"] / flops["t2av"],
                   "masked_dense_t2v_over_t2v": flops["t2av"] / flops["t2v"]}
    if not all(math.isfinite(r) and r > 0 for r in (*ratios.values(), *ratios_best.values())):
        raise RuntimeError(f"measure_tasks: non-positive timing ratio {ratios}, {ratios_best}")
    return {"preset": config.name, "clip": clip.to_dict(), "batch": batch, "time_s": med, "best_s": best, "flops": flops,
            "ratios": ratios, "ratios_best": ratios_best, "flop_ratios": flop_ratios}


def apply_peak(rows: list[dict], peak: dict[str, dict]) -> None:
    """(Re)compute every forward row's MFU against `peak` (e.g. the best peak of the whole run)."""
    for row in rows:
        for name, m in row["by_dtype"].items():
            if "skipped" in m:
                continue
            m["peak_gflops"] = mfu_peak(peak, name)
            m["mfu"] = row["flops"] / m["time_s"] / 1e9 / m["peak_gflops"]
            m["mfu_best"] = row["flops"] / m["min_s"] / 1e9 / m["peak_gflops"]
