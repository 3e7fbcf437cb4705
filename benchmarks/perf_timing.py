"""Wall-clock timing for the performance bench, and this machine's matmul peak.

The machine is shared and its speed drifts, so comparisons are timed *interleaved* (A, B, A, B,
...) and summarised by the median: drift then hits every contender alike, and a ratio of medians
stays meaningful even when the absolute numbers move.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    repeats: int
    samples: tuple[float, ...] = ()  # in round order, for ratios paired by round

    def to_dict(self) -> dict:
        return asdict(self)


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a_i / b_i for two interleaved timings: both samples of a round saw the
    same load, so the ratio cancels it better than a ratio of medians or minima."""
    if len(a.samples) != len(b.samples) or not a.samples:
        raise ValueError("paired_ratio needs two timings from the same time_interleaved call")
    return statistics.median(x / y for x, y in zip(a.samples, b.samples))


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 3) -> dict[str, Timing]:
    """Median wall time of each callable, run round-robin after `warmup` untimed rounds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(s), min(s), len(s), tuple(s)) for name, s in samples.items()}


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3) -> Timing:
    return time_interleaved({"fn": fn}, warmup=warmup, repeats=repeats)["fn"]


def machine_info() -> dict:
    """What the numbers were measured on: threads, load, the CPU's vector extensions."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                    present = set(line.split(":", 1)[1].split())
                    flags = [w for w in wanted if w in present]
                    break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": flags,
        "load_average": load,
    }


def matmul_gflops(n: int, dtype: torch.dtype, *, warmup: int = 1, repeats: int = 3) -> float:
    """Achieved GFLOP/s of one square `n x n @ n x n` matmul (2 n^3 FLOPs)."""
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    t = time_call(lambda: torch.mm(a, b, out=out), warmup=warmup, repeats=repeats)
    return 2.0 * n ** 3 / t.min_s / 1e9


def matmul_peak(sizes: dict[str, list[int]], *, repeats: int = 3) -> dict[str, dict]:
    """Best achieved GFLOP/s per dtype over square matmuls of the given sizes.

    The best (min-time) sample is the estimate of the peak: slower samples are other load, not
    the machine's limit. sizes: per dtype name (fp32, bf16), the matrix sides to try.
    """
    out: dict[str, dict] = {}
    for name, sides in sizes.items():
        if name not in DTYPES:
            raise ValueError(f"matmul_peak: unknown dtype {name!r}; use one of {sorted(DTYPES)}")
        if not sides:
            raise ValueError(f"matmul_peak: no sizes given for {name}")
        per_size = {str(n): matmul_gflops(n, DTYPES[name], repeats=repeats) for n in sides}
        out[name] = {"gflops": max(per_size.values()), "by_size": per_size}
    return out
