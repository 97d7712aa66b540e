"""The benchmark: the state a run shares, its bookkeeping (notes, memory, stage entries), and its parts in order.

Order of a run (each part alternates the variants after warm-up, see `stages.alternate`):
1. set-up (`variants.py`): a 320x240 30 fps MJPG clip written by the bench (synthetic scene), the tiny
   artifacts (cached exports or `--artifacts`), one runtime `Session` per variant, the graph feeds recorded
   from a real run, the machine's peak (`floor.measure_peak`);
2. stages of the embedded tiny model on those feeds (`tiny_stages.py`): capture, preprocess, every graph
   (vision encoder, connector, LLM prefill, per-token decode, router, box encoder, temporal head, the mask
   pieces), the per-frame tracking step, the frame path (preprocess + step + postprocess), postprocess,
   sink; then both branches' preprocessing at camera sizes (`preprocessing.py`);
3. end to end (`end_to_end.py`): time to first result per question, a file stream (sustained fps, latency per
   frame), a simulated live source at `source_fps` (newest frame wins; dropped frames, deadline misses);
4. scaling (`scaling.py`): frames per clip and batch, frame resolution, tracked objects, prompt length, and
   the goal stages at one thread per engine;
5. model sizes (`sizes.py`): tiny, small, videochat-tpo dimensions (random weights; LLM cost per layer
   extrapolated);
then the goal check (`goal.py`). Peak resident memory is read after each part.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo.contract import Manifest

from . import end_to_end, floor, scaling, sizes, tiny_stages, variants
from .backends import Variant
from .goal import BUSY_CPUS, goal_rows
from .inputs import Captured
from .measure import LoadMeter, device_memory_mb, rss_mb
from .plan import BASELINE, Plan
from .stages import Timed, alternate

SAMPLES_KEPT = 400
# the parts in order, by the names report.json's "load" section keeps
PARTS = (("setup", variants.setup), ("run_stages", tiny_stages.run_stages),
         ("run_preprocess_sizes", tiny_stages.run_preprocess_sizes), ("run_end_to_end", end_to_end.run_end_to_end),
         ("run_scaling", scaling.run_scaling), ("run_threads", scaling.run_threads), ("run_sizes", sizes.run_sizes))


def _samples_ms(xs: list[float]) -> list[float]:
    a = np.asarray(xs) * 1000.0
    if a.size > SAMPLES_KEPT:
        a = a[np.linspace(0, a.size - 1, SAMPLES_KEPT).astype(int)]
    return [round(float(x), 4) for x in a]


@dataclass
class Suite:
    plan: Plan
    log: Callable[[str], None] = print
    result: dict = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    # set by the set-up part
    work: Path | None = None
    frames: np.ndarray | None = None               # the clip, [N, 240, 320, 3] uint8 RGB
    queries: dict[str, str] = field(default_factory=dict)    # question kind -> question about the clip
    video: Path | None = None
    manifest: Manifest | None = None               # the fp32 tiny artifacts' (inputs, counts, preprocessing)
    feeds: dict[str, dict] = field(default_factory=dict)     # stage -> the graph's recorded inputs
    captured: Captured | None = None

    # ---- bookkeeping
    def note(self, text: str) -> None:
        self.result.setdefault("notes", []).append(text)
        self.log(f"note: {text}")

    def memory(self, phase: str) -> None:
        mem = self.result.setdefault("memory", {})
        mem.setdefault("rss_peak_mb", []).append({"phase": phase, "mb": rss_mb()})
        dev = device_memory_mb()
        if dev is not None:
            mem.setdefault("device_used_mb", []).append({"phase": phase, **dev})
            mem["device"] = "GPU memory in use (nvidia-smi, whole device) and PyTorch's peak allocation"

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="stage", disable=not self.plan.progress, leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    def count(self, graph: str, feed: dict, path: Path | None = None) -> dict | None:
        """FLOPs and bytes of `graph` (the fp32 tiny file, or `path`) at `feed`'s shapes; None if uncountable."""
        path = path or self.manifest.graph(graph).path
        try:
            return floor.count_graph(path, feeds=feed).to_dict()
        except Exception as e:                 # noqa: BLE001  (a graph the counter cannot read: no floor)
            self.note(f"FLOP count of {graph} failed ({type(e).__name__}: {str(e)[:80]})")
            return None

    def time_stage(self, name: str, variants: dict, *, probes: dict | None = None, rounds: int | None = None,
                   iters: int | None = None, warmup: int | None = None, budget_s: float | None = None) -> Timed:
        p = self.plan
        meter = LoadMeter()
        timed = alternate(name, variants, rounds or p.rounds, iters or p.iters,
                          p.warmup if warmup is None else warmup,
                          budget_s=p.stage_budget_s if budget_s is None else budget_s, probes=probes)
        timed.load = meter.read()
        return timed

    # ---- a stage's report entry
    def stage_entry(self, timed: Timed, *, group: str, graph: str | None = None, shapes: dict | None = None,
                    count: dict | None = None, label: str | None = None) -> dict:
        entry = {"stage": timed.stage, "label": label or timed.stage, "group": group, "graph": graph,
                 "threads": self.plan.threads, "shapes": shapes, "variants": {}, "ratios": {}, "breakdown": {},
                 "samples_ms": {}}
        for v in timed.rounds:
            entry["variants"][v] = timed.stats(v)
            entry["samples_ms"][v] = _samples_ms(timed.samples(v))
            breakdown = _breakdown(timed, v)
            if breakdown is not None:
                entry["breakdown"][v] = breakdown
        base = BASELINE if BASELINE in timed.rounds else next(iter(timed.rounds))
        entry["baseline"] = base
        entry["load"] = getattr(timed, "load", None)
        entry["ratios"] = timed.ratios(base)
        if count is not None:
            entry["count"] = count
            entry.update(self._floor(count, entry["variants"]))
        return entry

    def _floor(self, count: dict, variants: dict) -> dict:
        """The entry's floor (ms) and each variant's p50 over it."""
        fl = floor.floor_seconds(count, self.result["peak"])
        ms = {k: (round(v * 1e3, 5) if isinstance(v, float) else v) for k, v in fl.items()}
        out = {"floor": {("floor_ms" if k == "floor_s" else k.replace("_s", "_ms")): v for k, v in ms.items()}}
        if fl["floor_s"] > 0:
            out["x_floor"] = {v: round(st["p50"] / 1e3 / fl["floor_s"], 2) for v, st in variants.items()
                              if st.get("count")}
        return out

    # ---- the run
    def goal(self) -> None:
        """The issue's goal per size, stage and thread count (`goal.py`)."""
        self.result["goal"] = goal_rows(self.result, self.plan)

    def run(self) -> dict:
        t0 = time.perf_counter()
        load = LoadMeter()
        self.result["load"] = {}
        for name, part in PARTS:
            meter = LoadMeter()
            part(self)
            self.result["load"][name] = meter.read()
        self.result["load"]["whole run"] = load.read()
        busy = self.result["load"]["whole run"].get("others_cpus")
        if busy is not None and busy > BUSY_CPUS:
            extra = (f"; with {self.plan.threads} threads per engine, an engine that needs every thread at each "
                     "barrier (PyTorch's OpenMP) suffers most: compare the threads=1 rows"
                     if self.plan.threads > 1 else "")
            self.note(f"other processes kept {busy:.2f} of the {os.cpu_count()} CPUs busy during the run (see "
                      f"'Machine load'){extra}")
        self.goal()
        self.memory("end")
        self.result["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
        return self.result


def _breakdown(timed: Timed, variant: str) -> dict | None:
    """Where a variant's time went (mean per call): inside the engine, the runner's adapter, the host."""
    extra = timed.extra.get(variant) or {}
    if not extra.get("graph_s"):
        return None
    total = float(np.mean(timed.samples(variant)))
    g, e = float(np.mean(extra["graph_s"])), float(np.mean(extra["engine_s"]))
    return {"total_ms": round(total * 1e3, 4), "engine_ms": round(e * 1e3, 4), "adapter_ms": round((g - e) * 1e3, 4),
            "host_ms": round((total - g) * 1e3, 4), "engine_share": round(e / total, 4) if total > 0 else None}
