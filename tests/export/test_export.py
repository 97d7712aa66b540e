"""tpo-export on the embedded tiny checkpoint: graphs, manifest, the parity gate, atomicity, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tpo.contract import MANIFEST_FILE, Manifest
from tpo.contract import graphs as G
from tpo.errors import CheckpointError, TPOError
from tpo.export import cli
from tpo.export.exporter import ExportOptions, ParityFailed, export_artifacts


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_FILE).read_text())


# ------------------------------------------------------------------------------------------- fp32 / fp16
def test_fp32_export_has_every_graph_within_budget(fp32_artifacts):
    m = _manifest(fp32_artifacts)
    assert set(m["graphs"]) == {g.name for g in G.GRAPHS}
    parity = m["parity"]
    assert parity["passed"] and not parity["failures"]
    for name, r in parity["graphs"].items():
        assert r["samples"] >= 1, name
        assert r["max_rel"] <= 1e-4, (name, r["max_rel"])
        assert all(o["finite"] for o in r["outputs"].values()), name
    worst = parity["tasks"]["worst"]
    assert worst["same_triggers"] and worst["same_tokens"]
    assert worst["box_iou"] >= 0.99 and worst["mask_iou"] >= 0.99 and worst["track_box_iou"] >= 0.99
    assert worst["window_err_s"] <= 0.05
    tasks = {r["task_torch"] for r in parity["tasks"]["rows"]}
    assert {"track", "region", "temporal"} <= tasks, "the parity clips must exercise every head"


def test_fp16_export_is_half_the_size_with_islands_and_agrees(fp16_artifacts, fp32_artifacts):
    m16, m32 = _manifest(fp16_artifacts), _manifest(fp32_artifacts)
    assert m16["precision"] == "fp16"
    for name, g in m16["graphs"].items():
        assert g["precision"] == "fp16"
        if m32["graphs"][name]["bytes"] > 200_000:    # below that the graph's structure outweighs its weights
            assert g["bytes"] < 0.8 * m32["graphs"][name]["bytes"], name
    total16 = sum(g["bytes"] for g in m16["graphs"].values())
    assert total16 < 0.6 * sum(g["bytes"] for g in m32["graphs"].values())
    assert "Softmax" in m16["graphs"][G.LLM.name]["fp32_islands"]
    model = onnx.load(str(fp16_artifacts / m16["graphs"][G.MASK_IMAGE_ENCODER.name]["file"]))
    dtypes = {init.data_type for init in model.graph.initializer if len(init.dims) >= 2}
    assert onnx.TensorProto.FLOAT16 in dtypes
    # inputs and outputs stay fp32 (keep_io_types): the host feeds the same tensors at either precision
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}
    tasks = m16["parity"]["tasks"]
    assert m16["parity"]["passed"]
    assert tasks["worst"]["same_triggers"]
    assert tasks["worst"]["box_iou"] >= 0.95 and tasks["worst"]["mask_iou"] >= 0.95


def test_manifest_names_match_the_graph_files(fp32_artifacts):
    m = _manifest(fp32_artifacts)
    for name, g in m["graphs"].items():
        model = onnx.load(str(fp32_artifacts / g["file"]), load_external_data=False)
        for declared, actual in ((g["inputs"], model.graph.input), (g["outputs"], model.graph.output)):
            assert [t["name"] for t in declared] == [v.name for v in actual], name
            for t, v in zip(declared, actual, strict=True):
                dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                assert dims == t["shape"], (name, t["name"])
    llm_inputs = [t["name"] for t in m["graphs"][G.LLM.name]["inputs"]]
    assert "past_key_values.0.key" in llm_inputs and "present.0.value" in [
        t["name"] for t in m["graphs"][G.LLM.name]["outputs"]]
    for dim in ("batch", "sequence", "past_sequence", "objects", "clips"):
        assert dim in m["dims"]


# ------------------------------------------------------------------------------------------- safety
def test_runtime_refuses_a_corrupted_graph(fp32_artifacts, tmp_path):
    from tpo.runtime.session import open as open_session

    copy = tmp_path / "art"
    shutil.copytree(fp32_artifacts, copy)
    graph = copy / "memory_attention.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="memory_attention.onnx: sha256"):
        open_session(copy)
    (copy / "memory_attention.onnx").unlink()
    with pytest.raises(CheckpointError, match="memory_attention.onnx: missing"):
        open_session(copy)


def test_interrupted_export_leaves_no_loadable_artifact(tmp_path, monkeypatch):
    import tpo.export.exporter as exporter

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = exporter.export_graph
    monkeypatch.setattr(exporter, "export_graph", interrupted)
    out = tmp_path / "art"
    with pytest.raises(KeyboardInterrupt):
        export_artifacts(ExportOptions(out=out, precision="fp32", progress=False,
                                       graphs=(G.BOX_ENCODER.name, G.TASK_ROUTER.name), skip_task_parity=True))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []          # the partial folder is gone too
    with pytest.raises(TPOError):
        Manifest.load(out)


def test_a_failed_gate_writes_only_the_report(tmp_path, monkeypatch):
    import tpo.export.parity as parity

    monkeypatch.setattr(parity, "FP32_MAX_REL", 0.0)   # nothing can pass
    out = tmp_path / "art"
    with pytest.raises(ParityFailed, match="box_encoder.box_embeds"):
        export_artifacts(ExportOptions(out=out, precision="fp32", progress=False,
                                       graphs=(G.BOX_ENCODER.name,), skip_task_parity=True))
    assert not out.exists()
    report = json.loads((tmp_path / "art.parity-failed.json").read_text())
    assert report["passed"] is False and report["graphs"]["box_encoder"]["samples"] >= 1


def test_a_subset_export_is_loadable_and_verified(tmp_path):
    out = tmp_path / "art"
    m = export_artifacts(ExportOptions(out=out, precision="fp16", progress=False,
                                       graphs=(G.BOX_ENCODER.name,), skip_task_parity=True))
    loaded = Manifest.load(out)
    loaded.verify()
    assert loaded.graph(G.BOX_ENCODER.name).path.is_file()
    assert m.parity["graphs"][G.BOX_ENCODER.name]["max_rel"] < 1e-2 and m.root == out


# ------------------------------------------------------------------------------------------- the command
@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp8"], "--precision 'fp8'"),
    (["--precision", "int8"], "pass --calibration-data SRC"),
    (["--opset", "9"], "--opset 9"),
    (["--targets", "onnx,coreml"], "--targets"),
    (["--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt: no such checkpoint"),
])
def test_bad_arguments_are_one_line(argv, message, tmp_path, capsys):
    rc = cli.main(["--out", str(tmp_path / "x"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_existing_out_is_refused_without_force(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert cli.main(["--out", str(tmp_path / "x")]) == 2
    assert "--force" in capsys.readouterr().err


def test_tensorrt_target_without_gpu_is_one_line(fp32_artifacts, capsys):
    rc = cli.tensorrt_target(Manifest.load(fp32_artifacts), fp32_artifacts)
    err = capsys.readouterr().err.strip()
    assert rc == cli.EXIT_TENSORRT and len(err.splitlines()) == 1 and "tensorrt target" in err


def test_check_tensorrt_lints_the_export_clean(fp32_artifacts, capsys):
    assert cli.main(["--check-tensorrt", "--out", str(fp32_artifacts)]) == 0
    assert "0 problem(s) in 13 graphs" in capsys.readouterr().out


def test_check_tensorrt_prints_engine_cache_keys_without_tensorrt(fp32_artifacts, capsys):
    from tpo.engine_cache import engine_cache_key
    from tpo.export.tensorrt_build import profile_from_dims

    m = Manifest.load(fp32_artifacts)
    assert cli.main(["--check-tensorrt", "--out", str(fp32_artifacts), "--engine-keys", "10.3.0:sm_87"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert [name for name, _ in lines] == list(m.graphs)
    for name, key in lines:
        entry = m.graphs[name]
        assert key == engine_cache_key(entry.sha256, "10.3.0", "sm_87", entry.precision,
                                       profile_from_dims(entry.inputs, m.dims, name))
    assert cli.main(["--check-tensorrt", "--out", str(fp32_artifacts), "--engine-keys", "ten:sm_87"]) == 2
    assert "write TRT_VERSION:sm_XY" in capsys.readouterr().err


def test_embeddings_file_matches_the_checkpoint(fp32_artifacts):
    import torch
    from safetensors.numpy import load_file

    from tpo.model.checkpoint import default_checkpoint, load_checkpoint

    model, _ = load_checkpoint(default_checkpoint(), dtype="fp32")
    emb = load_file(str(fp32_artifacts / "embeddings.safetensors"))
    np.testing.assert_array_equal(emb["token_embedding"], model.lm.get_input_embeddings().weight.detach().numpy())
    np.testing.assert_array_equal(emb["task_embedding.track"], model.track_token[0, 0].detach().numpy())
    assert torch.is_tensor(model.box_token)


def test_large_graphs_keep_weights_in_a_hashed_side_file(tmp_path, monkeypatch):
    """Graphs over the threshold (1.8 GB of parameters) write `<graph>.onnx.data`; forced here with 0."""
    import tpo.export.onnx_export as onnx_export
    from tpo.runtime.backend import OnnxRuntimeBackend

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "art"
    m = export_artifacts(ExportOptions(out=out, precision="fp16", progress=False,
                                       graphs=(G.TASK_ROUTER.name,), skip_task_parity=True))
    entry = m.graphs[G.TASK_ROUTER.name]
    assert list(entry.extra_files) == ["task_router.onnx.data"]
    data = out / "task_router.onnx.data"
    assert data.stat().st_size > (out / "task_router.onnx").stat().st_size
    loaded = Manifest.load(out)
    loaded.verify()
    runner = OnnxRuntimeBackend().load(loaded.graph(G.TASK_ROUTER.name))
    result = runner.run({"hidden": np.ones((1, 256), np.float32)})
    assert result["track_prompt"].shape == (1, 3, 128)
    blob = bytearray(data.read_bytes())
    blob[10] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="task_router.onnx.data: sha256"):
        loaded.verify()
