"""What a stage is, how it is timed, and the statistics every table is made of.

A *stage* is one named piece of work (a graph call, preprocessing a frame, one tracking step, ...) with one
zero-argument callable per *variant* (a backend at a precision: "torch-fp32", "onnxruntime-fp32", ...).
`alternate` times them side by side: every variant is warmed up first, then each round runs `iters` calls
of every variant in turn, the order rotated each round, so that a noisy neighbour or a frequency change
hits all variants alike. Ratios are computed *per round* (median of the baseline's calls in that round /
median of the variant's calls in that round) and reported as the median over rounds with their range.

Definitions used in every report:
- p50 / p95 / p99: linear-interpolated percentiles of the per-call times (numpy's default);
- jitter: p99 - p50, the tail a frame budget has to absorb above the typical call (std is reported too);
- ratio: baseline time / variant time, so > 1 means the variant is faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


def percentile(xs: Sequence[float], q: float) -> float:
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0:
        raise ValueError("percentile of no samples")
    return float(np.percentile(a, q))


def jitter(xs: Sequence[float]) -> float:
    """p99 - p50 (see the module docstring)."""
    return percentile(xs, 99) - percentile(xs, 50)


def summarize(seconds: Sequence[float], scale: float = 1000.0, digits: int = 4) -> dict[str, float]:
    """Per-call times in seconds -> {count, mean, p50, p95, p99, min, max, std, jitter} in ms (default)."""
    a = np.asarray(seconds, dtype=np.float64) * scale
    if a.size == 0:
        return {"count": 0}
    out = {"count": int(a.size), "mean": float(a.mean()),
           "p50": percentile(a, 50), "p95": percentile(a, 95), "p99": percentile(a, 99),
           "min": float(a.min()), "max": float(a.max()), "std": float(a.std()), "jitter": jitter(a)}
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in out.items()}


def ratio_per_round(base: Sequence[Sequence[float]], other: Sequence[Sequence[float]]) -> dict[str, float] | None:
    """Per round r: median(base[r]) / median(other[r]); -> {median, min, max, rounds} (None without rounds).

    Rounds where either side has no samples are skipped; > 1 means `other` is faster."""
    ratios = [float(np.median(b)) / float(np.median(o)) for b, o in zip(base, other, strict=True)
              if len(b) and len(o) and float(np.median(o)) > 0]
    if not ratios:
        return None
    return {"median": round(float(np.median(ratios)), 4), "min": round(min(ratios), 4),
            "max": round(max(ratios), 4), "rounds": len(ratios)}


# ------------------------------------------------------------------------------------------ timing
@dataclass
class Timed:
    """Samples of one stage: variant -> rounds -> per-call seconds; plus per-call side records."""

    stage: str
    rounds: dict[str, list[list[float]]] = field(default_factory=dict)
    extra: dict[str, dict[str, list[float]]] = field(default_factory=dict)   # variant -> key -> per-call seconds

    def samples(self, variant: str) -> list[float]:
        return [x for r in self.rounds.get(variant, []) for x in r]

    def stats(self, variant: str) -> dict[str, float]:
        return summarize(self.samples(variant))

    def ratios(self, baseline: str) -> dict[str, dict | None]:
        if baseline not in self.rounds:
            return {}
        return {v: ratio_per_round(self.rounds[baseline], r) for v, r in self.rounds.items() if v != baseline}


def alternate(stage: str, variants: dict[str, Callable[[], object]], rounds: int, iters: int, warmup: int = 2,
              clock: Callable[[], float] = time.perf_counter, on_round: Callable[[], None] | None = None,
              budget_s: float | None = None, probes: dict[str, Callable[[], dict[str, float]]] | None = None
              ) -> Timed:
    """Warm every variant up, then `rounds` rounds of `iters` calls per variant, order rotated per round.

    `budget_s` stops after the round in which the stage's total time passes it (at least one round always
    runs, so every variant has samples). `probes[variant]()` is read after each call and returns per-call
    side measurements (e.g. seconds inside the graphs) to keep in `Timed.extra`."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
        if probes and name in probes:
            probes[name]()          # reset any counters the warm-up moved
    timed = Timed(stage, {n: [] for n in names}, {n: {} for n in names})
    start = clock()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = variants[name]
            calls = []
            for _ in range(iters):
                t0 = clock()
                fn()
                calls.append(clock() - t0)
                if probes and name in probes:
                    for key, value in probes[name]().items():
                        timed.extra[name].setdefault(key, []).append(value)
            timed.rounds[name].append(calls)
        if on_round is not None:
            on_round()
        if budget_s is not None and clock() - start > budget_s:
            break
    return timed


# --------------------------------------------------------------------------------- graph-time probe
class CountingRunner:
    """Wraps any graph runner (`.run(dict) -> dict`) and sums the seconds spent inside `run`, so a stage
    made of several graph calls splits into graph time and host time (everything else in the stage)."""

    def __init__(self, runner, clock: Callable[[], float] = time.perf_counter):
        self.runner, self.clock = runner, clock
        self.name = getattr(runner, "name", "?")
        self.seconds, self.calls = 0.0, 0

    def run(self, inputs: dict) -> dict:
        t0 = self.clock()
        out = self.runner.run(inputs)
        self.seconds += self.clock() - t0
        self.calls += 1
        return out
