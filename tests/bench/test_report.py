"""report.json and report.md from a fake result (entries built by the suite's own code), and the plots."""

from __future__ import annotations

import json
import sys

import pytest

from tpo.bench.report import write_report
from tpo.bench.stages import Timed
from tpo.bench.suite import Plan, Suite


def fake_result(tmp_path) -> dict:
    suite = Suite(Plan(out=tmp_path, threads=2), log=lambda m: None)
    suite.result["peak"] = {"flops_per_s": 1e10, "bytes_per_s": 1e10, "matmul_n": 64, "copy_mib": 1}
    step = Timed("track_step", {"torch-fp32": [[0.030, 0.030], [0.020, 0.020]],
                                "onnxruntime-fp32": [[0.010, 0.010], [0.010, 0.010]]},
                 {"torch-fp32": {"graph_s": [0.025] * 4, "engine_s": [0.024] * 4},
                  "onnxruntime-fp32": {"graph_s": [0.008] * 4, "engine_s": [0.007] * 4}})
    entry = suite.stage_entry(step, group="composite", label="tracking step",
                              count={"flops": 1e8, "bytes": 1e6, "matmul_flops": 9e7, "activation_bytes": 2e6,
                                     "uncounted_count": 0})
    capture = suite.stage_entry(Timed("capture", {"runtime-opencv": [[0.0002, 0.0003]]}), group="host")
    suite.result.update({
        "meta": {"created": "now", "quick": True, "threads": 2, "machine": {"cpus": 2}, "versions": {"x": "1"}},
        "variants": {"torch-fp32": {"backend": "torch", "precision": "fp32", "description": "eager"},
                     "onnxruntime-fp32": {"backend": "onnxruntime", "precision": "fp32", "description": "ort"}},
        "notes": ["tensorrt-fp16: skipped (no GPU)"],
        "stages": [entry, capture],
        "stream": {"frames": 3, "variants": {"onnxruntime-fp32": {
            "processed": 3, "frames_in": 3, "dropped": 0, "sustained_fps": 30.0,
            "latency_ms": {"p50": 10.0, "p95": 11.0, "p99": 12.0, "jitter": 2.0}}}},
        "live": {"source_fps": 30.0, "seconds": 1.0, "queue": "newest", "variants": {"onnxruntime-fp32": {
            "frames_in": 30, "processed": 20, "dropped": 10, "deadline_misses": 4, "processed_fps": 20.0,
            "latency_ms": {"p50": 30.0, "p95": 40.0, "p99": 50.0}}}},
        "scaling": {"tracked objects": {"x": [1, 2], "stages": [entry, entry]}},
        "sizes": {"videochat-tpo": {"weights": "random", "stages": [entry], "extrapolated": {"llm_prefill": {
            "label": "EXTRAPOLATED to 32 layers from 1- and 2-layer measurements",
            "variants": {"torch-fp32": {"p50_1_layer_ms": 10.0, "p50_2_layers_ms": 15.0, "per_layer_ms": 5.0,
                                        "p50_32_layers_ms": 165.0}}}}}},
        "memory": {"rss_peak_mb": [{"phase": "start", "mb": 100.0}]},
        "load": {"whole run": {"wall_s": 10.0, "own_cpus": 1.9, "others_cpus": 0.1, "loadavg_1m": 2.0}},
    })
    suite.goal()
    return suite.result


def test_entry_and_goal_from_the_suite_code(tmp_path):
    result = fake_result(tmp_path)
    e = result["stages"][0]
    assert e["variants"]["torch-fp32"]["p50"] == pytest.approx(25.0)
    assert e["ratios"]["onnxruntime-fp32"] == {"median": 2.5, "min": 2.0, "max": 3.0, "rounds": 2}
    assert e["breakdown"]["onnxruntime-fp32"]["host_ms"] == pytest.approx(2.0)
    assert e["breakdown"]["onnxruntime-fp32"]["adapter_ms"] == pytest.approx(1.0)
    assert e["floor"]["floor_ms"] == pytest.approx(10.0)                 # 1e8 FLOP at 1e10 FLOP/s
    assert e["x_floor"]["onnxruntime-fp32"] == pytest.approx(1.0)
    rows = result["goal"]["rows"]
    assert [(r["size"], r["stage"], r["met"]) for r in rows] == [("tiny", "track_step", True),
                                                                  ("videochat-tpo", "track_step", True)]


def test_json_and_markdown(tmp_path):
    result = fake_result(tmp_path)
    written = write_report(result, tmp_path / "out")
    data = json.loads(written["json"].read_text())
    assert data["stages"][0]["stage"] == "track_step"
    md = written["md"].read_text()
    assert "| tiny | track_step | 2 | 2.50x [2.00-3.00] | met | - |" in md
    assert "| tracking step | onnxruntime-fp32 | 10.0 |" in md
    assert "tensorrt-fp16: skipped (no GPU)" in md
    assert "EXTRAPOLATED to 32 layers" in md
    assert "## Live source at 30.0 fps" in md and "| onnxruntime-fp32 | 30 | 20 | 10 | 4 |" in md
    assert "## Machine load" in md


def test_without_matplotlib_the_plots_are_named_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import matplotlib -> ImportError
    written = write_report(fake_result(tmp_path), tmp_path / "out")
    assert written["plots"] == []
    assert "matplotlib is not installed" in written["plot_note"]
    assert "matplotlib is not installed" in written["md"].read_text()
    assert not list((tmp_path / "out").glob("*.png"))


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    written = write_report(fake_result(tmp_path), tmp_path / "out")
    assert written["plot_note"] is None
    names = sorted(p.name for p in written["plots"])
    assert names == ["breakdown.png", "latency_stages.png", "scaling.png", "sizes.png"]
    for p in written["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![scaling.png](scaling.png)" in written["md"].read_text()
