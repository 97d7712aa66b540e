"""The fast-path benchmark runs and accounts for its time (no timing assertions: shared machines are noisy)."""

from __future__ import annotations

from tpo.bench.fast_path import measure


def test_fast_path_benchmark_reports_fps_and_shares(fp32_artifacts):
    r = measure(fp32_artifacts, threads=1, frames=12, width=96, height=64, fps=30.0)
    assert r["frames_in"] == r["processed"] == 12 and r["dropped"] == 0
    assert r["fast_path_fps"] > 0
    assert 0 < r["graph_share"] < 1 and abs(r["graph_share"] + r["non_graph_share"] - 1) < 1e-3
    assert sum(r["non_graph_parts"].values()) <= r["non_graph_share"] + 1e-3
