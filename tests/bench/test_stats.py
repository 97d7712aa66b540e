"""Statistics and the alternating timer: percentiles, jitter, per-round ratios, rotation, budget."""

from __future__ import annotations

import numpy as np
import pytest

from tpo.bench.stages import Timed, alternate, jitter, percentile, ratio_per_round, summarize


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def test_percentiles_are_linear_interpolation():
    xs = list(range(1, 101))          # 1..100
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 95) == pytest.approx(95.05)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_jitter_is_p99_minus_p50():
    xs = [1.0] * 98 + [10.0, 20.0]
    assert jitter(xs) == pytest.approx(np.percentile(xs, 99) - 1.0)
    assert jitter([3.0] * 10) == 0.0


def test_summarize_in_milliseconds():
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert s["count"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["p50"] == pytest.approx(2.5)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(4.0)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4]), abs=1e-4)
    assert s["jitter"] == pytest.approx(s["p99"] - s["p50"])
    assert summarize([]) == {"count": 0}


def test_ratio_per_round_uses_each_rounds_medians():
    base = [[2.0, 2.0, 50.0], [4.0, 4.0], []]          # an outlier inside a round does not move its median
    other = [[1.0, 1.0, 1.0], [1.0, 1.0], [1.0]]        # the third round has no baseline sample: skipped
    r = ratio_per_round(base, other)
    assert r == {"median": 3.0, "min": 2.0, "max": 4.0, "rounds": 2}
    assert ratio_per_round([[1.0]], [[2.0]])["median"] == 0.5     # < 1: the variant is slower
    assert ratio_per_round([], []) is None


def test_alternate_rotates_order_and_computes_ratios():
    clock = FakeClock()
    calls = []

    def make(name, cost):
        def fn():
            calls.append(name)
            clock.advance(cost)
        return fn

    timed = alternate("s", {"a": make("a", 0.002), "b": make("b", 0.001)}, rounds=4, iters=2, warmup=1, clock=clock)
    assert calls[:2] == ["a", "b"]                       # warm-up: one call each
    body = calls[2:]
    firsts = [body[i * 4] for i in range(4)]             # 4 calls per round (2 variants x 2 iters)
    assert firsts == ["a", "b", "a", "b"]                # rotated each round
    assert [len(r) for r in timed.rounds["a"]] == [2, 2, 2, 2]
    assert timed.stats("a")["p50"] == pytest.approx(2.0)
    assert timed.ratios("a")["b"]["median"] == pytest.approx(2.0)    # b takes half of a's time
    assert timed.ratios("missing") == {}


def test_alternate_budget_stops_after_a_round_but_keeps_one():
    clock = FakeClock()
    timed = alternate("s", {"a": lambda: clock.advance(1.0)}, rounds=10, iters=3, warmup=0, clock=clock,
                      budget_s=0.5)
    assert len(timed.rounds["a"]) == 1 and len(timed.samples("a")) == 3


def test_probes_are_reset_after_warmup_and_read_per_call():
    clock = FakeClock()
    state = {"inside": 0.0}

    def fn():
        clock.advance(0.003)
        state["inside"] += 0.002

    def probe():
        out = {"graph_s": state["inside"], "engine_s": state["inside"]}
        state["inside"] = 0.0
        return out

    timed = alternate("s", {"a": fn}, rounds=2, iters=2, warmup=3, clock=clock, probes={"a": probe})
    assert timed.extra["a"]["graph_s"] == pytest.approx([0.002] * 4)   # the warm-up's 0.006 s was discarded


def test_timed_samples_flatten_rounds():
    t = Timed("s", {"a": [[1.0, 2.0], [3.0]]})
    assert t.samples("a") == [1.0, 2.0, 3.0]
    assert t.samples("b") == []
