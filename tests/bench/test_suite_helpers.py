"""Pieces of the suite that need no model: the simulated live source, feeds, extrapolation, load meter."""

from __future__ import annotations

import numpy as np
import pytest

from tpo.bench.inputs import example_feed
from tpo.bench.measure import LoadMeter, extrapolate_layers, live_source, sum_counts


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += max(dt, 1e-9)


class FakeSession:
    """A session whose frame path costs `cost` seconds of the fake clock."""

    def __init__(self, clock, cost):
        self.clock, self.cost, self.frames = clock, cost, []

    def tracker(self, prompt):
        return object()

    def track_frame(self, tracker, frame):
        self.clock.t += self.cost
        self.frames.append(int(frame[0, 0, 0]))
        return [{"mask": np.zeros((2, 2), bool), "box": None, "score": 0.0}]


def frames(n):
    return np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(n)])


def test_live_source_slow_consumer_takes_the_newest_and_accounts_every_frame(tmp_path):
    clock = FakeClock()
    s = FakeSession(clock, cost=0.25)                       # 2.5 periods per frame at 10 fps
    r = live_source(s, frames(10), 10.0, 1.0, np.zeros(1), tmp_path / "l.jsonl", clock=clock, sleep=clock.sleep)
    assert s.frames == [0, 2, 5, 7, 9]                       # the newest arrived frame each time
    assert (r["frames_in"], r["processed"], r["dropped"], r["deadline_misses"]) == (10, 5, 5, 5)
    assert r["accounted"] is True
    assert r["latency_ms"]["max"] == pytest.approx(350.0)     # frame 9 (arrived 0.9 s) done at 1.25 s
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 5


def test_live_source_fast_consumer_drops_nothing(tmp_path):
    clock = FakeClock()
    s = FakeSession(clock, cost=0.01)
    r = live_source(s, frames(10), 10.0, 1.0, np.zeros(1), tmp_path / "l.jsonl", clock=clock, sleep=clock.sleep)
    assert s.frames == list(range(10))
    assert (r["processed"], r["dropped"], r["deadline_misses"]) == (10, 0, 0)


def test_example_feed_respects_domains():
    """Values by each tensor's declared domain (the contract's), whatever the tensor is called."""
    from tpo.contract.graphs import TensorSpec

    class Def:
        inputs = [TensorSpec("a", "int64", ("objects", 4), "slot_times"), TensorSpec("b", "bool", ("objects", 4), "valid"),
                  TensorSpec("c", "bool", (), "flag"), TensorSpec("d", "int64", ("batch", "sequence"), "positions"),
                  TensorSpec("e", "int64", ("batch", "total_sequence"), "ones"),
                  TensorSpec("f", "float32", ("boxes", 4), "box_corners"), TensorSpec("x", "float32", ("objects", 3))]

    f = example_feed(Def, {"objects": 2, "batch": 1, "sequence": 3, "past_sequence": 5, "total_sequence": 8,
                           "boxes": 3})
    assert f["a"].tolist() == [[0, 1, 2, 3]] * 2
    assert f["b"].all() and f["c"].shape == () and not f["c"]
    assert f["d"].tolist() == [[5, 6, 7]]
    assert f["e"].shape == (1, 8) and f["e"].dtype == np.int64 and f["e"].all()
    assert f["f"].shape == (3, 4) and ((f["f"] >= 0) & (f["f"] <= 1)).all()
    assert f["x"].shape == (2, 3) and f["x"].dtype == np.float32


def test_example_feed_of_every_contract_graph_matches_its_dtypes():
    from tpo.contract import graphs as G
    from tpo.runtime.backend import NP_DTYPES

    sizes = {d: 2 for d in G.DYNAMIC_DIMS} | {"total_sequence": 4} | {s: 3 for s in G.SIZES}
    for spec in G.GRAPHS:
        inputs, _ = spec.tensors(sizes, num_layers=1)

        class Def:
            pass

        Def.inputs = inputs
        feed = example_feed(Def, sizes)
        assert list(feed) == [t.name for t in inputs], spec.name
        for t in inputs:
            assert feed[t.name].dtype == NP_DTYPES[t.dtype], (spec.name, t.name)


def test_extrapolation_is_linear_in_layers_and_labelled():
    one = {"variants": {"v": {"p50": 10.0}}}
    two = {"variants": {"v": {"p50": 14.0}}}
    out = extrapolate_layers({("llm_prefill", 1): one, ("llm_prefill", 2): two}, 32)
    row = out["llm_prefill"]["variants"]["v"]
    assert row["per_layer_ms"] == pytest.approx(4.0)
    assert row["p50_32_layers_ms"] == pytest.approx(10.0 + 31 * 4.0)
    assert "EXTRAPOLATED" in out["llm_prefill"]["label"]
    # the head from a full 1-layer graph, the layer from two cut-vocabulary graphs one layer apart
    cut1, cut2 = {"variants": {"v": {"p50": 3.0}}}, {"variants": {"v": {"p50": 5.5}}}
    out = extrapolate_layers({("llm_decode", "1"): one, ("llm_decode", "1v"): cut1, ("llm_decode", "2v"): cut2},
                             32, base="1", per_layer=("1v", "2v"))
    assert out["llm_decode"]["variants"]["v"]["p50_32_layers_ms"] == pytest.approx(10.0 + 31 * 2.5)
    assert extrapolate_layers({("llm_decode", "1"): one}, 32, base="1", per_layer=("1v", "2v")) == {}


def test_sum_counts_needs_every_part():
    c = {"flops": 1, "matmul_flops": 1, "elementwise_flops": 0, "bytes": 2, "weight_bytes": 1, "io_bytes": 1,
         "activation_bytes": 3, "nodes": 1, "uncounted_count": 0}
    assert sum_counts([c, c])["flops"] == 2
    assert sum_counts([c, None]) is None


def test_load_meter_reads():
    r = LoadMeter().read()
    assert r["wall_s"] >= 0
    if "others_cpus" in r:
        assert r["others_cpus"] >= 0
