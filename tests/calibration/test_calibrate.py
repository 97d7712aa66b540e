"""tpo-calibrate on the tiny fp32 export: capture (record, replay, refusals), int8 / int4 graphs, the cache, the
gate (mean and worst question), bad input as one line. Speed is measured in the report, never asserted here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from tpo.calibration import calibrate as C
from tpo.calibration import cli
from tpo.calibration.capture import Captures
from tpo.calibration.gate import agreement
from tpo.calibration.sources import CalibrationClip, load_clips
from tpo.contract import MANIFEST_FILE, Manifest, Precision
from tpo.contract import graphs as G
from tpo.errors import InputError


def _run(argv, capsys) -> tuple[int, list[str], str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.startswith("tpo-calibrate:")], captured.out


def _ops(entry) -> list[str]:
    return [n.op_type for n in onnx.load(str(entry.path), load_external_data=False).graph.node]


def test_int8_artifact_is_planned_gated_and_runs(calibrated, fp32_artifacts):
    m = Manifest.load(calibrated.root / "int8")
    m.verify()
    assert m.precision == Precision.INT8 and m.parity["passed"]
    for name in C.INT8_GRAPHS:
        assert m.graphs[name].precision == Precision.INT8 and "DequantizeLinear" in _ops(m.graphs[name]), name
    for name in (G.TASK_ROUTER.name, G.BOX_ENCODER.name, G.TEMPORAL_HEAD.name):
        assert m.graphs[name].precision == Precision.FP32
    llm = _ops(m.graphs[G.LLM.name])
    assert "MatMulInteger" in llm or "DynamicQuantizeMatMul" in llm      # dynamic int8: no calibration ranges
    report = m.parity["calibration"]["graphs"]
    for name in (*C.INT8_GRAPHS, G.LLM.name):
        row = report[name]
        assert row["bytes"] < row["bytes_fp32"] and row["ms"] > 0 and row["ms_fp32"] > 0, (name, row)
        assert 0 <= row["max_rel_err"] < 1.0, (name, row)
    gate = m.parity["task_agreement"]
    assert gate["questions"] == 8 and gate["means"]["routing"] >= 0.98 and not gate["failures"]
    Manifest.load(fp32_artifacts).verify()            # the source untouched (its files are hard-linked)

    import tpo.runtime

    clip = load_clips("synthetic:1@1000", min_frames=8)[0]
    session = tpo.runtime.open(calibrated.root / "int8", threads=1)
    task, question, _ = clip.questions[0]
    assert session.ask(question, clip.frames, clip.fps).task == task


def test_int4_llm_keeps_lm_head_fp32_and_replays_the_capture(calibrated):
    m = Manifest.load(calibrated.root / "int4")
    assert m.precision == Precision.INT4 and m.graphs[G.LLM.name].precision == Precision.INT4
    graph = onnx.load(str(m.graphs[G.LLM.name].path), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(a.i == 4 for n in nbits for a in n.attribute if a.name == "bits")
    kept = m.parity["calibration"]["graphs"][G.LLM.name]["kept_fp32"]
    assert len(kept) == 1 and [n.op_type for n in graph.node if n.name == kept[0]] == ["MatMul"]
    int8 = Manifest.load(calibrated.root / "int8")
    for name in C.INT8_GRAPHS:                        # the same capture and method: the cache gave the same file
        assert m.graphs[name].sha256 == int8.graphs[name].sha256
        assert m.parity["calibration"]["graphs"][name].get("cached"), name


def test_lm_head_int4_quantises_the_projection_too(calibrated, fp32_artifacts, tmp_path):
    """`--lm-head int4`: the projection to the logits is MatMulNBits like the rest (the 6.4x of docs/export.md)."""
    src = Manifest.load(fp32_artifacts).graphs[G.LLM.name].path
    kept = C.quantize_weight_only(src, tmp_path / "kept.onnx", 4, keep_fp32_output=C.LM_LOGITS)
    whole = C.quantize_weight_only(src, tmp_path / "whole.onnx", 4, keep_fp32_output=None)
    assert whole["quantized_ops"] == kept["quantized_ops"] + 1 and not whole["kept_fp32"]
    assert (tmp_path / "whole.onnx").stat().st_size < (tmp_path / "kept.onnx").stat().st_size


def test_capture_round_trip_and_refusals(calibrated, tmp_path):
    folder = calibrated.root / "captures"
    captures = Captures.load(folder)
    meta = json.loads((folder / "captures.json").read_text())
    assert set(captures.graphs) >= set(C.INT8_GRAPHS) and meta["clips"] == ["clip_00000", "clip_00001"]
    llm = captures.graphs[G.LLM.name]
    assert {s["inputs_embeds"].shape[1] for s in llm} != {1} and any(s["inputs_embeds"].shape[1] == 1 for s in llm)
    with pytest.raises(InputError, match="recorded from another graph"):
        captures.check_graph(G.CONNECTOR.name, "0" * 64)
    copy = tmp_path / "captures"
    import shutil

    shutil.copytree(folder, copy)
    with open(copy / f"{G.CONNECTOR.name}.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(Exception, match="sha256 differs"):
        Captures.load(copy)


class _Stub:
    """A session whose answers are given: task, tokens and one region box per question."""

    def __init__(self, boxes):
        self.boxes = iter(boxes)

    def ask(self, question, frames, fps):
        box = next(self.boxes)
        return SimpleNamespace(task="region", token_ids=[1, 2], results={"region": [{"box": box}]})


def test_gate_refuses_one_broken_question_that_the_mean_hides():
    clips = [CalibrationClip(f"c{i}", np.zeros((8, 4, 4, 3), np.uint8), 8.0, [("region", "where?", 0)])
             for i in range(12)]
    good = [[0, 0, 10, 10]] * 12
    one_off = good[:11] + [[5, 5, 15, 15]]                  # IoU 0.14 on the last clip only
    ok = agreement(_Stub(good), _Stub(good), clips, Precision.INT8)
    bad = agreement(_Stub(good), _Stub(one_off), clips, Precision.INT8)
    assert ok["passed"] and bad["means"]["box_iou"] > 0.9
    assert not bad["passed"] and bad["failures"] == [
        f"c11 'where?': box_iou {bad['worst']['box_iou']:.3f} < 0.5 (worst-case floor)"]


def test_a_graph_that_breaks_routing_is_refused(fp32_artifacts, calibrated, tmp_path, capsys, monkeypatch,
                                                break_lm_head):
    real = C.quantize_dynamic_int8

    def broken(src, dst, keep_fp32_output=None):
        info = real(src, dst, keep_fp32_output)
        break_lm_head(dst, info["kept_fp32"])         # a wrong lm_head: the answers change
        return info

    monkeypatch.setattr(C, "quantize_dynamic_int8", broken)
    monkeypatch.setenv("TPO_CALIBRATION_CACHE", str(tmp_path / "cache"))      # no cached LLM to fall back on
    out = tmp_path / "o" / "refused"
    out.parent.mkdir()
    code, lines, _ = _run(["--artifacts", fp32_artifacts, "--captures", calibrated.root / "captures",
                           "--out", out, "--held-out", "2", "--samples", "4"], capsys)
    assert code == cli.EXIT_GATE and len(lines) == 1 and "gate failed" in lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["refused.calibration-failed.json"]


@pytest.mark.parametrize("make, args, message", [
    (None, ["--calibration-data", "synthetic:0"], "N must be >= 1"),
    (None, ["--calibration-data", "synthetic:x"], "write synthetic:N"),
    (None, [], "give --calibration-data SRC"),
    (None, ["--calibration-data", "{tmp}/nothing"], "no such file or folder"),
    ("empty_dir", ["--calibration-data", "{tmp}/clips"], "no videos"),
    ("garbage_video", ["--calibration-data", "{tmp}/clips/bad.mp4"], "bad.mp4"),
    ("short_video", ["--calibration-data", "{tmp}/clips/short.avi"], "fewer than 8 frames"),
    (None, ["--calibration-data", "synthetic:1", "--precision", "fp32"], "tpo-calibrate makes int8, int4, fp16, auto"),
    (None, ["--calibration-data", "synthetic:1", "--precision", "mixed"], "ask for auto"),
    (None, ["--calibration-data", "synthetic:1", "--precision", "auto", "--budget", "0"], "--budget 0.0: a fraction"),
    (None, ["--calibration-data", "synthetic:1", "--method", "best"], "--method 'best'"),
    (None, ["--calibration-data", "synthetic:1", "--precision", "int4", "--lm-head", "int2"], "--lm-head 'int2'"),
])
def test_bad_input_is_one_line(fp32_artifacts, tmp_path, capsys, make, args, message):
    clips = tmp_path / "clips"
    clips.mkdir()
    if make == "garbage_video":
        (clips / "bad.mp4").write_bytes(b"not a video at all" * 100)
    elif make == "short_video":
        import cv2

        writer = cv2.VideoWriter(str(clips / "short.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (32, 32))
        for _ in range(3):
            writer.write(np.zeros((32, 32, 3), np.uint8))
        writer.release()
    argv = ["--artifacts", fp32_artifacts, "--out", tmp_path / "o"] + [a.format(tmp=tmp_path) for a in args]
    code, lines, _ = _run(argv, capsys)
    assert code == cli.EXIT_USAGE and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_a_non_fp32_export_is_refused(calibrated, tmp_path, capsys):
    code, lines, _ = _run(["--artifacts", calibrated.root / "int8", "--calibration-data", "synthetic:1",
                           "--out", tmp_path / "o"], capsys)
    assert code == 2 and "calibrate an fp32 export" in lines[0]
    assert (calibrated.root / "int8" / MANIFEST_FILE).is_file()


def test_cache_is_keyed_by_graph_data_and_method(calibrated):
    names = sorted(p.name for p in Path(calibrated.cache).glob("*.onnx"))
    assert any(n.startswith(f"{G.CONNECTOR.name}-") and "-minmax-v" in n for n in names)
    assert any(n.startswith(f"{G.LLM.name}-") and "-w4b32" in n for n in names)
    assert any(n.startswith(f"{G.LLM.name}-") and "-d8-v" in n for n in names)


def test_tpo_export_int8_exports_fp32_then_calibrates(fp32_artifacts, tmp_path, capsys, monkeypatch):
    """`tpo-export --precision int8 --calibration-data SRC`: the fp32 export goes to a hidden folder beside --out
    (here the fixture's, copied, instead of exporting again), is calibrated into --out and removed."""
    import shutil

    from tpo.export import cli as export_cli
    from tpo.export import exporter

    seen = []

    def fake_export(opts):
        seen.append(opts)
        shutil.copytree(fp32_artifacts, opts.out)
        return Manifest.load(opts.out)

    monkeypatch.setattr(exporter, "export_artifacts", fake_export)
    out = tmp_path / "int8"
    code = export_cli.main(["--precision", "int8", "--calibration-data", "synthetic:1", "--out", str(out),
                            "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and f"wrote {out} (13 graphs, int8)" in printed
    assert seen[0].precision == Precision.FP32 and seen[0].out.name.startswith(".int8.fp32-")
    assert Manifest.load(out).precision == Precision.INT8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]          # the fp32 folder is gone


def test_a_signal_stops_calibration_at_the_next_clip(fp32_artifacts, tmp_path, capsys, monkeypatch):
    """Ctrl-C is a flag (tpo/signals.py) read between clips, graphs and gate questions: one line, exit 130."""
    import os
    import signal

    from tpo.runtime.session import Session

    asked = []
    ask = Session.ask

    def ask_then_ctrl_c(self, *a, **k):
        if not asked:
            os.kill(os.getpid(), signal.SIGINT)
        asked.append(1)
        return ask(self, *a, **k)

    monkeypatch.setattr(Session, "ask", ask_then_ctrl_c)
    out = tmp_path / "o"
    code, lines, _ = _run(["--artifacts", fp32_artifacts, "--calibration-data", "synthetic:2", "--out", out], capsys)
    assert code == 130 and lines == [f"tpo-calibrate: interrupted (SIGINT); nothing written to {out}"]
    assert len(asked) == 4 and not out.exists()            # the first clip's questions, then the stop point


def test_int8_quantises_weight_matmuls_only_and_bounded_passes_change_nothing(fp32_artifacts, tmp_path):
    """QDQ goes on the MatMuls with a constant weight; attention's activation x activation MatMuls stay fp32 (and
    are not calibrated). Calibrating one tensor per pass (a 1-byte budget) writes the same graph as one pass."""
    from tpo.bench.full_size import SIZES, feed_for
    from tpo.calibration.quantize import fold_weight_transposes, quantize_int8, weight_nodes

    manifest = Manifest.load(fp32_artifacts)
    entry = manifest.graphs[G.CONNECTOR.name]
    sizes = dict(SIZES, num_vision_tokens=manifest.dims["num_vision_tokens"].max)
    samples = [feed_for(entry, sizes, seed=i) for i in range(2)]
    source = onnx.load(str(entry.path))
    fold_weight_transposes(source)
    weights, activations = weight_nodes(source)
    assert weights and activations
    one = quantize_int8(entry.path, tmp_path / "one.onnx", samples, "minmax")
    many = quantize_int8(entry.path, tmp_path / "many.onnx", samples, "percentile", budget=1)
    again = quantize_int8(entry.path, tmp_path / "again.onnx", samples, "percentile")
    assert one["quantized_nodes"] == len(weights) and one["fp32_matmuls"] == len(activations)
    assert one["calibration_passes"] == again["calibration_passes"] == 1 < many["calibration_passes"]
    assert (tmp_path / "many.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()
    weight_matmuls = [n.name for n in source.graph.node if n.op_type == "MatMul" and n.name in set(weights)]
    graph = onnx.load(str(tmp_path / "one.onnx")).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    dequantized = [[made_by.get(i) == "DequantizeLinear" for i in n.input[:2]]
                   for n in graph.node if n.op_type == "MatMul"]
    assert dequantized.count([True, True]) == len(weight_matmuls)
    assert dequantized.count([False, False]) == len(activations) == len(dequantized) - len(weight_matmuls)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_take_samples_of_different_shapes(fp32_artifacts, tmp_path, method):
    """A video (392 tokens) and an image (49) through the connector: onnxruntime's histogram calibrators stacked
    the samples into one array and crashed with a bare traceback; they now see one flat array per tensor."""
    from tpo.bench.full_size import SIZES, feed_for
    from tpo.calibration.quantize import quantize_int8

    manifest = Manifest.load(fp32_artifacts)
    entry = manifest.graphs[G.CONNECTOR.name]
    samples = [feed_for(entry, dict(SIZES, num_vision_tokens=n), seed=n) for n in (392, 49)]
    assert samples[0]["vision_tokens"].shape != samples[1]["vision_tokens"].shape
    info = quantize_int8(entry.path, tmp_path / f"{method}.onnx", samples, method)
    assert info["quantized_nodes"] > 0 and (tmp_path / f"{method}.onnx").is_file()


def test_a_tensor_at_one_magnitude_still_has_histogram_bins():
    """|x| all near 1000 (a spread of float32's last bits): numpy has no 2,048 finite bins between its min and
    max; binned from 0, as a symmetric range is, it has."""
    from tpo.calibration.quantize import _flat_histograms

    collector = _flat_histograms()(method="percentile", symmetric=True, num_bins=2048, num_quantized_bins=128,
                                   percentile=99.999, scenario="same")
    values = np.full((4, 8), 1000.0, np.float32) + np.float32(6e-5) * np.arange(32, dtype=np.float32).reshape(4, 8)
    collector.collect({"t": [values, values[:1]]})
    hist, edges, low, high = collector.histogram_dict["t"]
    assert edges[0] == 0 and np.isfinite(edges).all() and hist.sum() == 32 + 8 + 1
