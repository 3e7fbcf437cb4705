"""Targets of the performance bench (PASS/MISS with the gap) and the console table.

Targets are judged on medians (MFU) and on round-paired median ratios (block and task
comparisons: both contenders of a round saw the same load). The best-of-N figure is shown beside
each: on a shared machine contention only adds time, so it bounds what the code can do.
"""
from __future__ import annotations

MFU_TARGET, MFU_MIN_TOKENS = 0.60, 2000
COMFY_TARGET = 1.2  # ComfyUI's block time / ours
VIDEO_ONLY_TARGET = 1.10  # T2V time / video-only model time
E2E_TARGET_S = 5.0  # tiny T2AV 2 s clip, whole command


def _target(goal: str, value: float | None, ok: bool | None, gap: str, detail: str) -> dict:
    status = "N/A" if ok is None else ("PASS" if ok else "MISS")
    return {"goal": goal, "value": value, "status": status, "gap": gap, "detail": detail}


def evaluate_targets(report: dict) -> dict:
    """The four targets of issue 6, from whichever sections the report holds."""
    out = {}
    goal = f"MFU >= {MFU_TARGET:.0%} at >= {MFU_MIN_TOKENS} tokens"
    # Per case the dtype one would run it in (the higher MFU), then the worst case.
    rows, eager = [], []
    for r in report.get("forward", []):
        measured = [(dt, m) for dt, m in r["by_dtype"].items() if "mfu" in m]
        if r["tokens"] >= MFU_MIN_TOKENS and measured:
            rows.append((r, *max(measured, key=lambda x: x[1]["mfu"])))
            plain = [m["mfu"] for dt, m in measured if "+" not in dt]  # modes such as fp32+compile left out
            if plain:
                eager.append((r, max(plain)))
    if rows:
        worst = min(rows, key=lambda x: x[2]["mfu"])
        v = worst[2]["mfu"]
        detail = (f"worst: {worst[0]['preset']} {worst[1]} at {worst[0]['tokens']} tokens, best sample "
                  f"{worst[2]['mfu_best']:.1%}; {len(rows)} case(s) >= {MFU_MIN_TOKENS} tokens")
        if eager and any("+" in mode for _, mode, _ in rows):
            row, mfu = min(eager, key=lambda x: x[1])
            detail += f"; without compile the worst is {row['preset']} at {row['tokens']} tokens: {mfu:.1%}"
        out["mfu"] = _target(goal, v, v >= MFU_TARGET, f"{(MFU_TARGET - v) * 100:.1f} points short" if v < MFU_TARGET else "",
                             detail)
    else:
        out["mfu"] = _target(goal, None, None, "", f"no measured forward at >= {MFU_MIN_TOKENS} tokens (quick sizes)")
    # Judged against ComfyUI's block as ComfyUI runs it here (its own attention choice; on a CPU
    # that is its sub-quadratic kernel), both eager. The like-for-like figure, ComfyUI forced onto
    # our SDPA kernel, is reported beside it: there the two blocks do the same math with the same
    # kernels, so parity is the expected result and the 1.2x comes from the attention choice.
    goal = f"our joint block >= {COMFY_TARGET}x ComfyUI's JointBlock as ComfyUI runs it here (eager, same dtype)"
    cases = report.get("comfy_block", {}).get("cases", [])
    if cases:
        worst = min(cases, key=lambda c: c["theirs_over_ours"]["comfy_default"])
        v = worst["theirs_over_ours"]["comfy_default"]
        c = worst["case"]
        same = min(cases, key=lambda c: c["theirs_over_ours"]["comfy_sdpa"])
        attention = worst.get("comfy_default_attention", "its default")
        detail = (f"worst: width {c['hidden']}, {c['heads']} heads, {c['x_tokens']}+{c['context_tokens']} tokens, ComfyUI "
                  f"attention {attention}, best-of-N {worst['theirs_over_ours_best']['comfy_default']:.2f}x; with ComfyUI "
                  f"forced onto the same SDPA kernel: worst {same['theirs_over_ours']['comfy_sdpa']:.2f}x (best-of-N "
                  f"{same['theirs_over_ours_best']['comfy_sdpa']:.2f}x)")
        compiled = [k["compiled"]["comfy_sdpa_over_ours_compiled"] for k in cases if "compiled" in k]
        if compiled:
            detail += f"; ours compiled vs ComfyUI SDPA eager: {min(compiled):.2f}x worst"
        out["comfy_block"] = _target(goal, v, v >= COMFY_TARGET, f"needs {COMFY_TARGET / v:.2f}x faster" if v < COMFY_TARGET else "",
                                     detail)
    else:
        out["comfy_block"] = _target(goal, None, None, "", "comfy section not run")
    goal = f"T2V <= {VIDEO_ONLY_TARGET:.2f}x a video-only forward"
    tasks = report.get("tasks", [])
    if tasks:
        worst = max(tasks, key=lambda t: t["ratios"]["t2v_over_video_only"])
        v = worst["ratios"]["t2v_over_video_only"]
        c = worst["clip"]
        out["t2v_vs_video_only"] = _target(goal, v, v <= VIDEO_ONLY_TARGET,
                                           f"{(v - VIDEO_ONLY_TARGET) * 100:.1f}% over" if v > VIDEO_ONLY_TARGET else "",
                                           f"worst: {c['width']}x{c['height']} {c['seconds']:g} s, best-of-N "
                                           f"{worst['ratios_best']['t2v_over_video_only']:.2f}; masked-dense T2V costs "
                                           f"{worst['ratios']['masked_dense_t2v_over_t2v']:.2f}x T2V")
    else:
        out["t2v_vs_video_only"] = _target(goal, None, None, "", "tasks section not run")
    goal = f"tiny T2AV 2 s clip <= {E2E_TARGET_S:g} s end to end (one CLI run)"
    e2e = report.get("end_to_end")
    row = next((r for r in (e2e or {}).get("tasks", []) if r["task"] == "t2av"), None)
    if row is not None:
        v = row["cli_wall_s"]
        d = e2e["defaults"]
        out["e2e_t2av"] = _target(goal, v, v <= E2E_TARGET_S, f"{v - E2E_TARGET_S:.1f} s over" if v > E2E_TARGET_S else "",
                                  f"{e2e['preset']} {d.get('width')}x{d.get('height')} {d.get('seconds')} s, {e2e['steps']} steps; "
                                  f"in-process generate {row['phases_s']['generate']:.2f} s + mux {row['phases_s']['mux']:.2f} s")
    else:
        out["e2e_t2av"] = _target(goal, None, None, "", "no t2av end-to-end row")
    return out


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_perf(report: dict) -> str:
    """A plain-text table of the report for the console."""
    m = report["machine_before"]
    load = "/".join(f"{x:.1f}" for x in m["load_average"]) or "?"
    lines = [f"APOLLO-AV perf ({report['mode']}): torch {m['torch']}, {m['threads']} threads, {m['cpu_capability']}, "
             f"flags {','.join(m['cpu_flags']) or '?'}, load {load} on {m['cpu_count']} cores"]
    if m["load_average"] and m["load_average"][0] > 0.5 * (m["cpu_count"] or 1):
        lines.append("  note: measured under load; absolute speeds are noisy, ratios less so")
    mp = report["matmul_peak"]
    lines.append("matmul peak      " + "   ".join(f"{k} {v['gflops']:.1f} GFLOP/s" for k, v in mp.items()))
    if "forward" in report:
        lines.append("DiT forward, T2AV batch 1 (MFU = achieved / peak of the dtype, bf16's >= fp32's; median and best sample;"
                     " est/cnt = memory.estimate FLOPs / executed FLOPs)")
        lines.append(f"  {'preset':<18}{'tokens':>7}{'GFLOP':>9}{'est/cnt':>8}  {'dtype':<5}{'time s':>9}{'GFLOP/s':>9}{'MFU':>7}{'best':>7}")
        for r in report["forward"]:
            for dt, v in r["by_dtype"].items():
                head = f"  {r['preset']:<18}{r['tokens']:>7}{r['flops'] / 1e9:>9.2f}{r['estimate_over_counted']:>8.2f}  {dt:<5}"
                if "skipped" in v:
                    lines.append(head + "  " + v["skipped"])
                else:
                    lines.append(head + f"{v['time_s']:>9.3f}{v['gflops']:>9.1f}{v['mfu']:>7.1%}{v['mfu_best']:>7.1%}")
        b = report.get("bf16_modes", {})
        if "skipped" in b:
            lines.append(f"  bf16 modes: {b['skipped']}")
        elif b:
            lines.append(f"  bf16 weights {b['bf16_weights_over_fp32']:.2f}x fp32 time, autocast {b['autocast_over_fp32']:.2f}x "
                         f"({b['tokens']} tokens); faster bf16 mode: {b['faster_bf16_mode']}")
    if "attention" in report:
        lines.append("attention backends (time / sdpa, batch 1)")
        for r in report["attention"]:
            cells = "  ".join(f"{k} {v['over_sdpa']:.2f} ({v['gflops']:.1f} GFLOP/s)" for k, v in r["backends"].items())
            lines.append(f"  N={r['seq_len']:<6} {r['heads']}x{r['head_dim']} {r['dtype']}: {cells}")
    for t in report.get("tasks", []):
        r, f = t["ratios"], t["flop_ratios"]
        c = t["clip"]
        lines.append(f"task cost, {t['preset']} {c['width']}x{c['height']} {c['seconds']:g} s, batch {t['batch']} "
                     f"(time ratio paired by round, FLOP ratio)")
        lines.append(f"  T2V/T2AV {r['t2v_over_t2av']:.2f} ({f['t2v_over_t2av']:.2f})   T2A/T2AV {r['t2a_over_t2av']:.2f} "
                     f"({f['t2a_over_t2av']:.2f})   masked-dense T2V/T2V {r['masked_dense_t2v_over_t2v']:.2f} "
                     f"({f['masked_dense_t2v_over_t2v']:.2f})   T2V/video-only {r['t2v_over_video_only']:.3f} "
                     f"(best-of-N {t['ratios_best']['t2v_over_video_only']:.3f})")
    if "comfy_block" in report:
        lines.append("joint block vs ComfyUI SD3 JointBlock (theirs / ours paired by round; >1 = ours faster)")
        for r in report["comfy_block"]["cases"]:
            c, x = r["case"], r["theirs_over_ours"]
            lines.append(f"  D={c['hidden']} H={c['heads']} {c['x_tokens']}+{c['context_tokens']} tok {r['dtype']}: "
                         f"vs comfy+sdpa {x['comfy_sdpa']:.2f}x (best-of-N {r['theirs_over_ours_best']['comfy_sdpa']:.2f}x), vs comfy default ({r['comfy_default_attention']}) "
                         f"{x['comfy_default']:.2f}x, no-RoPE vs comfy+sdpa {x['comfy_sdpa_vs_ours_no_rope']:.2f}x; "
                         f"RoPE {r['rope_share_of_ours']:.0%} of ours; max |diff| {r['max_abs_diff_vs_comfy']:.1e}")
            comp = r.get("compiled")
            if comp and "error" in comp:
                lines.append(f"    torch.compile: not available ({comp['error']})")
            elif comp:
                lines.append(f"    torch.compile: ours compiled vs comfy+sdpa eager {comp['comfy_sdpa_over_ours_compiled']:.2f}x, "
                             f"vs comfy compiled {comp['comfy_compiled_over_ours_compiled']:.2f}x; ours eager/compiled "
                             f"{comp['ours_eager_over_compiled']:.2f}x; max |diff| vs eager {comp['max_abs_diff_vs_eager']:.1e}")
            for who, table in r.get("profile", {}).items():
                top = ", ".join(f"{e['op'].replace('aten::', '')} {e['share']:.0%}" for e in table[:5])
                lines.append(f"    profile {who}: {top}")
    e2e = report.get("end_to_end")
    if e2e:
        lines.append(f"end to end, {e2e['preset']} {e2e['defaults']}, {e2e['steps']} steps"
                     + (f" (untrained {e2e['untrained_bundle']} bundle)" if e2e.get("untrained_bundle") else ""))
        lines.append(f"  {'task':<6}{'load':>7}{'text':>7}{'inputs':>7}{'sample':>8}{'decode':>7}{'mux':>7}{'CLI wall':>10}{'peak RSS':>10}")
        for r in e2e["tasks"]:
            p = r["phases_s"]
            lines.append(f"  {r['task']:<6}{p['load']:>7.2f}{p['encode_text']:>7.2f}{p['encode_inputs']:>7.2f}{p['sample']:>8.2f}"
                         f"{p['decode']:>7.2f}{p['mux']:>7.2f}{r['cli_wall_s']:>9.2f}s{r['cli_peak_rss_mib']:>7.0f}MiB")
    big = report.get("apollo_26b")
    if big:
        c = big["clip"]
        lines.append(f"apollo-26b at {c['seconds']:g} s {c['width']}x{c['height']}: {big['parameters'] / 1e9:.1f} B params, "
                     f"{big['tokens_total']} tokens, {big['flops_per_step'] / 1e15:.2f} PFLOP/step (memory.estimate), "
                     f"{big['flops_per_step_counted'] / 1e15:.2f} PFLOP/step (executed), x2 with CFG; "
                     f"weights bf16 {big['weight_bytes']['bf16'] / 2**30:.1f} GiB, peak bf16 "
                     f"{big['peak_bytes_inference']['bf16'] / 2**30:.1f} GiB")
    lines.append("targets")
    for t in report["targets"].values():
        lines.append(f"  {t['status']:<5} {t['goal']}: {_f(t['value'], '.3f')}" + (f"  gap {t['gap']}" if t["gap"] else "")
                     + f"  ({t['detail']})")
    for section, error in report.get("errors", {}).items():
        lines.append(f"ERROR in section {section}: {error}")
    lines.append(f"elapsed {report['elapsed_s']:.0f} s")
    return "\n".join(lines)
