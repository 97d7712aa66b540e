"""fp16 with measured islands (calibration/fp16.py), `--precision auto --budget` (the per-graph search), and the
gate's near-tied temporal windows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tpo.calibration import calibrate as C
from tpo.calibration.fp16 import FP16_ISLANDS, FP16_MAX, measure_islands
from tpo.calibration.gate import NEAR_TIE, agreement
from tpo.calibration.sources import CalibrationClip
from tpo.contract import Manifest, Precision
from tpo.contract import graphs as G


def _graph(path) -> None:
    """x [1, 16] -> Mul(x, 4000) -> LayerNormalization -> y1 (the Mul reaches 40,000: past fp16's headroom), and
    x -> Softmax -> y2 (safe in fp16)."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["big"], name="scale_up"),
             helper.make_node("LayerNormalization", ["big", "g", "b"], ["y1"], name="norm", axis=-1),
             helper.make_node("Softmax", ["x"], ["y2"], name="soft", axis=-1)]
    inits = [helper.make_tensor("k", TensorProto.FLOAT, [], [4000.0]),
             helper.make_tensor("g", TensorProto.FLOAT, [16], np.ones(16).tolist()),
             helper.make_tensor("b", TensorProto.FLOAT, [16], np.zeros(16).tolist())]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 16]),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_islands_are_measured_range_and_error(tmp_path):
    _graph(tmp_path / "g.onnx")
    rng = np.random.default_rng(0)
    samples = [{"x": (rng.standard_normal((1, 16)) * 5).astype(np.float32)} for _ in range(4)]
    samples[0]["x"][0, 0] = 10.0                           # 40,000 after the Mul
    found = measure_islands(tmp_path / "g.onnx", samples)
    assert list(found["node_islands"]) == ["scale_up"] and found["node_islands"]["scale_up"] >= FP16_MAX / 4
    assert "Softmax" in found["dropped"]                   # measured harmless: fp16
    assert found["error"] <= 1.5 * found["error_fixed"] + 1e-6
    assert set(found["op_islands"]) <= set(FP16_ISLANDS)


def test_fp16_with_measured_islands_is_gated(calibrated, fp32_artifacts, tmp_path):
    m = C.calibrate(C.CalibrateOptions(artifacts=fp32_artifacts, out=tmp_path / "fp16", precision=Precision.FP16,
                                       captures=calibrated.root / "captures", held_out=1, threads=1,
                                       cache_dir=calibrated.cache), say=lambda _: None)
    assert m.precision == Precision.FP16 and m.parity["passed"]
    rows = m.parity["calibration"]["graphs"]
    for name, entry in m.graphs.items():
        if name in C.FP16_KEEP_FP32:                        # measured: fp16 costs the temporal head its ranking
            assert entry.precision == Precision.FP32 and "R1@0.5" in rows[name]["kept"]
            continue
        assert entry.precision == Precision.FP16, name
        assert set(entry.fp32_islands) == set(rows[name]["op_islands"]) | set(rows[name]["node_islands"])
    # the LLM's causal mask is filled with fp32's lowest value: measured out of fp16's range, kept fp32 by node
    assert any(v > FP16_MAX for v in rows[G.LLM.name]["node_islands"].values())
    assert rows[G.BOX_ENCODER.name]["kind"] == "fp16 fixed islands"        # no clip asked for a box prompt
    Manifest.load(tmp_path / "fp16").verify()


def test_auto_takes_the_smallest_kind_within_budget(calibrated, fp32_artifacts, tmp_path, monkeypatch, break_lm_head):
    """The int4 LLM is broken on purpose (its lm_head permuted): the search must refuse it, take the next kind
    (dynamic int8), and keep the smallest passing kind for every other graph (int8 where it stays within the
    budget on the held-out clip: a graph whose int8 moves an image-dependent box keeps fp16)."""
    real = C.quantize_weight_only

    def broken(src, dst, bits, block=32, keep_fp32_output=None):
        info = real(src, dst, bits, block, keep_fp32_output)
        break_lm_head(dst, info["kept_fp32"])         # a wrong lm_head: the answers change
        return info

    monkeypatch.setattr(C, "quantize_weight_only", broken)
    said = []
    m = C.calibrate(C.CalibrateOptions(artifacts=fp32_artifacts, out=tmp_path / "auto", precision=Precision.MIXED,
                                       captures=calibrated.root / "captures", held_out=1, threads=1, budget=0.05,
                                       cache_dir=tmp_path / "cache"), say=said.append)
    report = m.parity["calibration"]
    trials = [(t["graph"], t["kind"], t["passed"]) for t in report["trials"]]
    assert trials[0] == (G.LLM.name, "w4", False) and trials[1] == (G.LLM.name, "d8", True)   # largest first
    assert report["plan"][G.LLM.name] == "d8" and m.graphs[G.LLM.name].precision == Precision.INT8
    for name in C.INT8_GRAPHS:        # the first kind that passed, in candidate order (qdq8, then fp16)
        tried = [(kind, passed) for graph, kind, passed in trials if graph == name]
        assert tried[0][0] == "qdq8" and report["plan"][name] == next(k for k, p in tried if p), (name, tried)
    assert m.precision == Precision.MIXED and m.parity["passed"] and report["budget"] == 0.05
    assert any(line.startswith("auto: llm w4: over budget") for line in said)


class _Windows:
    def __init__(self, windows):
        self.windows = windows

    def ask(self, question, frames, fps):
        return SimpleNamespace(task="temporal", token_ids=[1], results={"temporal": [{"windows_raw": self.windows}]})


@pytest.mark.parametrize("second_score, passes", [(0.50 - NEAR_TIE / 2, True), (0.50 - 3 * NEAR_TIE, False)])
def test_a_near_tied_top_window_is_not_a_failure(second_score, passes):
    clips = [CalibrationClip("c", np.zeros((8, 4, 4, 3), np.uint8), 8.0, [("temporal", "when?", None)])]
    fp32 = _Windows([[0.0, 2.0, 0.50], [6.0, 8.0, second_score]])
    other = _Windows([[6.0, 8.0, 0.51], [0.0, 2.0, 0.49]])          # picks fp32's second window
    got = agreement(fp32, other, clips, Precision.FP16)
    assert got["passed"] == passes and got["near_ties"] == int(passes)
    assert got["means"]["window_iou"] == (1.0 if passes else 0.0)
