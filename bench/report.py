"""The outputs: `report.json` (everything), `report.md` (tables) and PNG plots (`plots.py`: matplotlib, the
`bench` extra).

`write_report(result, out)` writes all three; without matplotlib the plots are skipped with one line saying
so (returned and printed, and written into report.md), never silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .plots import plot
from .preprocessing import markdown as preprocessing_lines


def emit_json(report: dict, out: Path | None) -> None:
    """A bench script's report: JSON on stdout and, with `--out`, the same in that file, written beside it and
    renamed when complete (an interrupted run leaves no half-written report)."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        part = out.with_name(f".{out.name}.partial")
        part.write_text(text + "\n")
        part.replace(out)


def _ms(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _ratio(r) -> str:
    if not r:
        return "-"
    if r["rounds"] == 1:
        return f"{r['median']:.2f}x"
    return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def stage_rows(entries: list[dict], with_floor: bool = True) -> list[list]:
    rows = []
    for e in entries:
        for v, st in e["variants"].items():
            if not st.get("count"):
                continue
            ratio = "(baseline)" if v == e.get("baseline") and len(e["variants"]) > 1 else _ratio(e["ratios"].get(v))
            row = [e.get("label") or e["stage"], v, _ms(st["p50"]), _ms(st["p95"]), _ms(st["p99"]), _ms(st["mean"]),
                   _ms(st["jitter"]), st["count"], ratio]
            if with_floor:
                floor_ms = (e.get("floor") or {}).get("floor_ms")
                xf = (e.get("x_floor") or {}).get(v)
                row += [_ms(floor_ms) if floor_ms is not None else "-", f"{xf:.1f}x" if xf is not None else "-"]
            rows.append(row)
    return rows


STAGE_HEADER = ["stage", "variant", "p50 ms", "p95 ms", "p99 ms", "mean ms", "jitter ms", "calls", "ratio vs baseline"]


def breakdown_rows(entries: list[dict]) -> list[list]:
    rows = []
    for e in entries:
        for v, b in (e.get("breakdown") or {}).items():
            share = b.get("engine_share")
            rows.append([e.get("label") or e["stage"], v, _ms(b["total_ms"]), _ms(b["engine_ms"]), _ms(b["adapter_ms"]),
                         _ms(b["host_ms"]), f"{100 * share:.0f}%" if share is not None else "-"])
    return rows


def markdown(result: dict, plot_note: str | None) -> str:
    """report.md: the header, then one section per part of the run that has results (see each `_section`)."""
    lines = _header(result, plot_note) + _goal(result.get("goal", {})) + _stages(result.get("stages", []))
    lines += preprocessing_lines(result.get("preprocess_sizes") or {})
    lines += _end_to_end(result) + _scaling(result.get("scaling", {})) + _sizes(result.get("sizes", {}))
    lines += _machine(result)
    plots = result.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines) + "\n"


def _header(result: dict, plot_note: str | None) -> list[str]:
    """Run, machine, peak, timing and versions; definitions; the variants; the notes."""
    meta = result.get("meta", {})
    peak = result.get("peak", {})
    machine = meta.get("machine", {})
    lines = ["# tpo-bench report", ""]
    lines += [f"- created {meta.get('created')}, {'quick' if meta.get('quick') else 'full'} run, "
              f"wall {meta.get('wall_s')} s",
              f"- machine: {machine.get('processor')}, {machine.get('cpus')} CPUs, "
              f"{meta.get('threads')} threads per engine; {machine.get('platform')}",
              f"- measured peak: {peak.get('flops_per_s', 0) / 1e9:.1f} GFLOP/s (best float32 matmul "
              f"n={peak.get('matmul_n')}: {peak.get('matmul_by')} GFLOP/s), "
              f"{peak.get('bytes_per_s', 0) / 1e9:.1f} GB/s (memcpy, read + write)",
              f"- timing: warm-up {meta.get('warmup')} calls, then up to {meta.get('rounds')} rounds of "
              f"{meta.get('iters')} calls per variant, order rotated per round",
              f"- versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}", ""]
    defs = meta.get("definitions", {})
    if defs:
        lines += ["Definitions: " + "; ".join(f"**{k}** = {v}" for k, v in defs.items()), ""]
    lines += ["## Variants", ""]
    lines += _table(["variant", "backend", "precision", "what runs"],
                    [[n, v["backend"], v["precision"], v["description"]] for n, v in result.get("variants", {}).items()])
    notes = list(result.get("notes", []))
    if plot_note:
        notes.append(plot_note)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def _breakdown_cell(b: dict, variant: str) -> str:
    x = b.get(variant)
    return "-" if not x else (f"{_ms(x['total_ms'])} = engine {_ms(x['engine_ms'])} + adapter "
                              f"{_ms(x['adapter_ms'])} + host {_ms(x['host_ms'])}")


def _goal(goal: dict) -> list[str]:
    """The goal table, with where the time goes, and the tracking step's graphs side by side."""
    if not goal.get("rows"):
        return []
    rows = []
    for r in goal["rows"]:
        b = r.get("breakdown", {})
        verdict = "met" if r["met"] else "NOT met"
        if r.get("noisy"):
            verdict += " (busy machine: noisy)"
        others = r.get("others_cpus")
        rows.append([r["size"], r["stage"], r.get("threads", "-"), _ratio(r["ratio"]), verdict,
                     "-" if others is None else f"{others:.2f}", _breakdown_cell(b, "torch-fp32"),
                     _breakdown_cell(b, "onnxruntime-fp32")])
    lines = ["## Goal: " + goal["target"], ""]
    lines += ["Where the goal is not met the two right-hand columns show where the time goes (mean per call): "
              "engine = inside the engine's own call, adapter = the runner's casts/conversions, host = "
              "everything else in the stage. 'other CPUs' = CPUs other processes kept busy while the stage "
              "ran; above 0.25 a 2-thread PyTorch run can be many times slower than on a quiet machine.", ""]
    lines += _table(["size", "stage", "threads", "ORT fp32 vs eager", "2x goal", "other CPUs",
                     "torch-fp32 mean ms", "onnxruntime-fp32 mean ms"], rows)
    comp = [[r["size"], c["graph"], _ms(c["torch_ms"]), _ms(c["ort_ms"]),
             f"{c['ratio']:.2f}x" if c.get("ratio") else "-",
             f"{c['ort_x_floor']:.1f}x" if c.get("ort_x_floor") is not None else "-"]
            for r in goal["rows"] for c in r.get("components") or []]
    if comp:
        lines += ["The tracking step's graphs (p50 ms; the step = these four + host memory-bank updates):", ""]
        lines += _table(["size", "graph", "torch-fp32", "onnxruntime-fp32", "ratio", "ORT x floor"], comp)
    return lines


BREAKDOWN_HEADER = ["stage", "variant", "mean ms", "engine ms", "adapter ms", "host ms", "engine share"]


def _stages(stages: list[dict]) -> list[str]:
    """The tiny stages, where their time goes, and their counted FLOPs and bytes."""
    if not stages:
        return []
    lines = ["## Stages (tiny, embedded checkpoint, 320x240 clip)", ""]
    lines += _table(STAGE_HEADER + ["floor ms", "x floor"], stage_rows(stages))
    bdr = breakdown_rows(stages)
    if bdr:
        lines += ["### Where the time goes", "",
                  "engine = inside the engine call (ORT session.run / module forward); adapter = the runner's "
                  "input casts and conversions; host = the rest of the stage (numpy state, pre/postprocess).", ""]
        lines += _table(BREAKDOWN_HEADER, bdr)
    counted = [e for e in stages if e.get("count")]
    if counted:
        lines += ["### FLOPs and bytes (counted from the fp32 ONNX graphs at the shapes fed)", ""]
        rows = []
        for e in counted:
            c, f = e["count"], e.get("floor") or {}
            rows.append([e["label"], f"{c['flops'] / 1e9:.3f}", f"{c['matmul_flops'] / 1e9:.3f}",
                         f"{c['bytes'] / 1e6:.2f}", f"{c['activation_bytes'] / 1e6:.2f}",
                         _ms(f.get("floor_ms")), f.get("bound", "-"), c.get("uncounted_count", 0)])
        lines += _table(["stage", "GFLOP", "matmul GFLOP", "MB (weights + I/O)", "activation MB", "floor ms",
                         "bound", "uncounted nodes"], rows)
    return lines


def _end_to_end(result: dict) -> list[str]:
    """Time to first result, the file stream and the live source."""
    lines = []
    ttfr = result.get("first_result", {})
    if ttfr:
        lines += ["## Time to first result", ""]
        lines += _table(STAGE_HEADER, stage_rows(list(ttfr.values()), with_floor=False))
        trig = [[t, ", ".join(f"{v}: {k}" for v, k in e.get("triggered", {}).items())] for t, e in ttfr.items()]
        lines += _table(["question task", "task triggered per variant"], trig)
    stream = result.get("stream", {})
    if stream.get("variants"):
        lines += [f"## Stream from a file ({stream['frames']} frames, capture -> frame path -> JSONL)", ""]
        rows = [[v + (" (stopped early: time budget)" if d.get("stopped_early") else ""), d["processed"],
                 d["frames_in"], d["dropped"], d["sustained_fps"], _ms(d["latency_ms"].get("p50")),
                 _ms(d["latency_ms"].get("p95")), _ms(d["latency_ms"].get("p99")), _ms(d["latency_ms"].get("jitter"))]
                for v, d in stream["variants"].items()]
        lines += _table(["variant", "processed", "frames in", "dropped", "sustained fps", "latency p50 ms", "p95 ms",
                         "p99 ms", "jitter ms"], rows)
    live = result.get("live", {})
    if live.get("variants"):
        lines += [f"## Live source at {live['source_fps']} fps for {live['seconds']} s ({live['queue']})", ""]
        rows = [[v, d["frames_in"], d["processed"], d["dropped"], d["deadline_misses"], d["processed_fps"],
                 _ms(d["latency_ms"].get("p50")), _ms(d["latency_ms"].get("p95")), _ms(d["latency_ms"].get("p99"))]
                for v, d in live["variants"].items()]
        lines += _table(["variant", "frames in", "processed", "dropped", "deadline misses", "processed fps",
                         "latency p50 ms", "p95 ms", "p99 ms"], rows)
    return lines


def _scaling(scaling: dict) -> list[str]:
    """One table per scaling axis: p50 per variant and the ratios to the baseline."""
    if not scaling:
        return []
    lines = ["## Scaling (tiny)", ""]
    for axis, d in scaling.items():
        variants = list(dict.fromkeys(v for e in d["stages"] for v in e["variants"]))
        rows = []
        for x, e in zip(d["x"], d["stages"], strict=True):
            rows.append([x] + [_ms(e["variants"].get(v, {}).get("p50")) for v in variants] +
                        [_ratio(e["ratios"].get(v)) for v in variants if v != e.get("baseline")])
        ratio_cols = [f"{v} ratio" for v in variants if v != d["stages"][0].get("baseline")]
        lines += [f"### {axis}", ""] + _table([axis] + [f"{v} p50 ms" for v in variants] + ratio_cols, rows)
    return lines


def _sizes(sizes: dict) -> list[str]:
    """Per model size: its stages, where their time goes, and the extrapolated LLM costs."""
    if not sizes:
        return []
    lines = ["## Model sizes", ""]
    for size, d in sizes.items():
        extra = f", {d['params_m']} M parameters" if d.get("params_m") else ""
        extra += f" ({d['params_note']})" if d.get("params_note") else ""
        lines += [f"### {size} ({d.get('weights')}{extra})", ""]
        lines += _table(STAGE_HEADER + ["floor ms", "x floor"], stage_rows(d.get("stages", [])))
        bdr = breakdown_rows(d.get("stages", []))
        if bdr:
            lines += _table(BREAKDOWN_HEADER, bdr)
        for g, ex in (d.get("extrapolated") or {}).items():
            lines += [f"**{g}: {ex['label']}**", ""]
            rows = [[v] + [_ms(x) if isinstance(x, float) else x for x in r.values()]
                    for v, r in ex["variants"].items()]
            if rows:
                keys = list(next(iter(ex["variants"].values())).keys())
                lines += _table(["variant"] + keys, rows)
    return lines


def _machine(result: dict) -> list[str]:
    """The machine's load per part and the memory after each."""
    lines = []
    load = result.get("load", {})
    if load:
        lines += ["## Machine load", "", "CPUs kept busy by other processes while each part ran (machine busy time "
                  "minus this process's CPU time, over wall time): timings from a part with a high value are noisy.",
                  ""]
        lines += _table(["part", "wall s", "this process CPUs", "other processes CPUs", "loadavg 1 min"],
                        [[k, v.get("wall_s"), v.get("own_cpus", "-"), v.get("others_cpus", "-"),
                          v.get("loadavg_1m", "-")] for k, v in load.items()])
    mem = result.get("memory", {})
    if mem.get("rss_peak_mb"):
        lines += ["## Memory", "", "Peak resident set size of the bench process after each part (it only grows; "
                  "every variant lives in the one process):", ""]
        lines += _table(["after", "peak RSS MiB"], [[m["phase"], m["mb"]] for m in mem["rss_peak_mb"]])
        if mem.get("device_used_mb"):
            lines += [f"Device memory: {mem['device']}", ""]
            lines += _table(["after", "MiB"], [[m["phase"], ", ".join(f"{k} {v}" for k, v in m.items() if k != "phase")]
                                               for m in mem["device_used_mb"]])
    return lines


def write_report(result: dict, out: str | Path) -> dict:
    """report.json, report.md and the plots into `out`; returns {"json", "md", "plots", "plot_note"}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots, note = plot(result, out)
    result["plots"] = plots
    if note:
        result["plot_note"] = note
    (out / "report.json").write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    (out / "report.md").write_text(markdown(result, note))
    return {"json": out / "report.json", "md": out / "report.md", "plots": [out / p for p in plots], "plot_note": note}


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
