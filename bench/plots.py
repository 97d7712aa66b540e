"""report.md's PNG plots (matplotlib, the `bench` extra): latency per stage, the scaling axes, the model sizes,
and where the time goes. Without matplotlib none is written and one line says why (never silently)."""

from __future__ import annotations

import math
from pathlib import Path

from .goal import GOAL_STAGES

PLOTS = ("latency_stages.png", "scaling.png", "sizes.png", "breakdown.png")


def plot(result: dict, out: Path) -> tuple[list[str], str | None]:
    """The PNGs written into `out` (file names); ([], one-line reason) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots: skipped, matplotlib is not installed (pip install 'tpo-edge[bench]')"
    written = []
    for name, draw in zip(PLOTS, (_latency, _scaling, _sizes, _breakdown), strict=True):
        fig = draw(plt, result)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written, None


def _latency(plt, result: dict):
    """Box plots of every tiny stage's calls per variant (log scale)."""
    stages = result.get("stages", [])
    if not stages:
        return None
    variants = list(dict.fromkeys(v for e in stages for v in e["samples_ms"]))
    boxes = sum(1 for e in stages for v in variants if e["samples_ms"].get(v))
    fig, ax = plt.subplots(figsize=(11, 0.2 * boxes + 0.25 * len(stages) + 1.5))
    pos, data, colours, ticks = [], [], [], []
    cmap = plt.get_cmap("tab10")
    y = 0.0
    for e in stages:
        start = y
        for v in (v for v in variants if e["samples_ms"].get(v)):
            data.append(e["samples_ms"][v])
            pos.append(y)
            colours.append(cmap(variants.index(v) % 10))
            y += 1
        ticks.append(((start + y - 1) / 2, e["stage"]))
        y += 0.8
    box = dict(positions=pos, widths=0.7, patch_artist=True, showfliers=True, whis=(1, 99),
               flierprops={"markersize": 2}, medianprops={"color": "black", "linewidth": 1.5})
    try:
        bp = ax.boxplot(data, orientation="horizontal", **box)      # matplotlib >= 3.10
    except TypeError:
        bp = ax.boxplot(data, vert=False, **box)
    for patch, c in zip(bp["boxes"], colours, strict=True):
        patch.set_facecolor(c)
        patch.set_edgecolor(c)
    ax.set_xscale("log")
    ax.set_yticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (log); box = p25-p75, whiskers = p1-p99")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i % 10)) for i in range(len(variants))]
    ax.legend(handles, variants, fontsize=8, loc="lower right")
    ax.set_title("latency per stage (tiny)")
    return fig


def _scaling(plt, result: dict):
    """One panel per scaling axis: p50 per variant along the axis."""
    scaling = result.get("scaling", {})
    if not scaling:
        return None
    n = len(scaling)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (axis, d) in zip(axes.flat, scaling.items(), strict=False):   # the grid may have spare cells
        variants = list(dict.fromkeys(v for e in d["stages"] for v in e["variants"]))
        xs = list(range(len(d["x"])))
        for v in variants:
            ys = [e["variants"].get(v, {}).get("p50") for e in d["stages"]]
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=v)
        labels = [str(x) for x in d["x"]]
        long = max(len(x) for x in labels) > 9
        ax.set_xticks(xs, labels, rotation=20 if long else 0, ha="right" if long else "center",
                      fontsize=7 if long else 9)
        ax.set_yscale("log")
        ax.set_title(axis, fontsize=9)
        ax.set_ylabel("p50 ms")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig


def _sizes(plt, result: dict):
    """Bars of each stage's p50 per model size and variant."""
    sizes = result.get("sizes", {})
    stage_names = list(dict.fromkeys(e["stage"] for d in sizes.values() for e in d.get("stages", [])))
    if not stage_names:
        return None
    variants = list(dict.fromkeys(v for d in sizes.values() for e in d.get("stages", []) for v in e["variants"]))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(stage_names) * len(sizes)), 4.5))
    width = 0.8 / max(1, len(sizes) * len(variants))
    k = 0
    cmap = plt.get_cmap("tab20")
    for size, d in sizes.items():
        by = {e["stage"]: e for e in d.get("stages", [])}
        for v in variants:
            ys = [by[s]["variants"].get(v, {}).get("p50") if s in by else None for s in stage_names]
            xs = [i + k * width for i in range(len(stage_names))]
            ax.bar(xs, [y or 0 for y in ys], width, label=f"{size} {v}", color=cmap(k % 20))
            k += 1
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(stage_names))], stage_names, rotation=35,
                  ha="right", fontsize=8)
    ax.set_ylabel("p50 ms (log)")
    ax.set_title("model size: tiny / small / videochat-tpo dimensions")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _breakdown(plt, result: dict):
    """Engine, adapter and host time of the composite and goal stages, tiny and every size."""
    sized = [e for d in result.get("sizes", {}).values() for e in d.get("stages", [])
             if e["group"].startswith("size:")]
    bars = []
    for e in result.get("stages", []) + sized:
        if e["group"] == "composite" or e["stage"].split("[")[0] in GOAL_STAGES:
            tag = f" ({e['group'][5:]})" if e["group"].startswith("size:") else ""
            bars += [(f"{e['stage']}{tag}\n{v}", b) for v, b in (e.get("breakdown") or {}).items()]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(bars) + 1.5))
    eng = [b[1]["engine_ms"] for b in bars]
    ada = [max(0.0, b[1]["adapter_ms"]) for b in bars]
    host = [max(0.0, b[1]["host_ms"]) for b in bars]
    ys = range(len(bars))
    ax.barh(ys, eng, label="engine")
    ax.barh(ys, ada, left=eng, label="adapter (casts, conversions)")
    ax.barh(ys, host, left=[a + b for a, b in zip(eng, ada, strict=True)], label="host (numpy, Python)")
    ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per call")
    ax.legend(fontsize=8)
    ax.set_title("where the time goes")
    return fig
