"""The streamed export (fake-weight tracing, initializers written from the shards) at small sizes: its numerics
against PyTorch, its weight check, its depth gate, and every bad input a user can cause. The full-size run
(videochat-tpo, 16.2 GB) is a measurement in docs/export.md, not a test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tpo.contract import MANIFEST_FILE, Manifest, Precision
from tpo.contract import graphs as G
from tpo.errors import CheckpointError
from tpo.export import cli
from tpo.export.exporter import ExportOptions, OutTaken, export_artifacts, install
from tpo.export.weights import (
    FP16_MAX_FINITE,
    FP16_MIN_POSITIVE,
    CheckpointTensors,
    Provenance,
    Recipe,
    cast_block,
    float_blocks,
)
from tpo.model.checkpoint import build_skeleton, default_checkpoint, resolve_checkpoint
from tpo.model.random_checkpoint import write_random_checkpoint

SUBSET = (G.VISION_ENCODER_IMAGE.name, G.LLM.name, G.TASK_ROUTER.name, G.MASK_DECODER_TRACKED.name)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return write_random_checkpoint("small", tmp_path_factory.mktemp("small") / "ckpt", seed=1).path


@pytest.fixture(scope="module")
def streamed_fp16(tmp_path_factory):
    """The embedded tiny checkpoint, streamed, four graphs, the classic graph gate on the streamed files."""
    out = tmp_path_factory.mktemp("streamed") / "fp16"
    export_artifacts(ExportOptions(out=out, precision="fp16", graphs=SUBSET, skip_task_parity=True, stream="on",
                                   gate="full", progress=False))
    return out


# ------------------------------------------------------------------------------------------ numerics
def test_streamed_graphs_agree_with_pytorch_and_the_checkpoint(streamed_fp16):
    m = json.loads((streamed_fp16 / MANIFEST_FILE).read_text())
    p = m["parity"]
    assert p["passed"] and p["mode"] == "streamed" and not p["failures"]
    assert set(m["graphs"]) == set(SUBSET)
    for name in SUBSET:
        assert p["graphs"][name]["max_rel"] < 0.02, name        # the classic fp16 export's own errors
        w = p["weights"][name]
        assert w["initializers"] > 0 and w["mismatch_count"] == 0 and not w["not_in_file"], (name, w)
        used = p["export"]["graphs"][name]
        assert used["seconds"] > 0 and used["peak_rss_mb"] > 0
    assert p["weights"]["embeddings"]["mismatches"] == []
    Manifest.load(streamed_fp16).verify()          # loadable by the runtime, every hash right
    llm = onnx.load(str(streamed_fp16 / m["graphs"][G.LLM.name]["file"]), load_external_data=False)
    weights = [t for t in llm.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert "Softmax" in m["graphs"][G.LLM.name]["fp32_islands"]


def test_depth_gate_on_a_random_checkpoint(small_ckpt, tmp_path):
    """The gate for models too large for PyTorch here, on a small one: same streamed code, cut in depth."""
    out = tmp_path / "fp32"
    m = export_artifacts(ExportOptions(out=out, precision="fp32", checkpoint=small_ckpt, graphs=(
        G.CONNECTOR.name, G.LLM.name, G.MEMORY_ATTENTION.name), stream="on", gate="depth", progress=False))
    p = m.parity
    assert p["passed"], p["failures"]
    assert p["depth"]["config"]["vision_blocks"] == 2 and p["depth"]["config"]["llm_layers"] == 2
    assert "tasks_skipped" in p
    for name, r in p["depth"]["graphs"].items():
        assert r["max_rel"] <= 1e-4 and r["samples"] >= 1, name
    assert p["depth"]["graphs"][G.LLM.name]["samples"] == 2          # prefill and a decode step
    assert not (out / ".depth-gate").exists()
    assert m.llm.num_layers == 8                                      # the export itself is whole


# ------------------------------------------------------------------------------------------ the weight check
def test_fp16_cast_is_onnxruntime_converters():
    from onnxruntime.transformers.float16 import convert_np_to_float16

    edge = [0.0, -0.0, 1e-9, -1e-9, FP16_MIN_POSITIVE, 6e-8, 1e-5, 65504.0, 65520.0, 1e6, -1e6, np.inf, -np.inf,
            np.nan, 0.3333]
    x = torch.tensor(edge + list(np.random.default_rng(0).standard_normal(1000) * 100), dtype=torch.float32)
    ours = cast_block(x, onnx.TensorProto.FLOAT16)
    theirs = np.asarray(convert_np_to_float16(x.numpy()), dtype=np.float16)
    assert np.array_equal(ours.view(np.uint16), theirs.view(np.uint16))
    assert ours[8] == FP16_MAX_FINITE and ours[2] > 0


def test_lora_merge_does_not_depend_on_the_block_size():
    reader = CheckpointTensors(resolve_checkpoint(default_checkpoint()).shards)
    prov = Provenance(build_skeleton(_tiny()))
    recipe = prov.llm_recipe("model.layers.0.mlp.down_proj.weight")
    assert recipe.op == "lora" and recipe.scale == 2.0
    whole = torch.cat(list(float_blocks(recipe, reader, 1 << 30)))
    rows = torch.cat(list(float_blocks(recipe, reader, 1)))              # one row at a time
    assert torch.equal(whole, rows)
    base, a, b = (reader.read(s).double() for s in recipe.sources)
    assert torch.equal(whole, (base + 2.0 * (b @ a)).float())
    reader.close()


def test_weight_check_finds_one_changed_value(tmp_path):
    from tpo.export.streamed import fake_weights, write_graph
    from tpo.export.weight_check import ShardSlices, check_graph
    from tpo.model.graphs import graph_defs

    files = resolve_checkpoint(default_checkpoint())
    reader = CheckpointTensors(files.shards)
    prov = Provenance(build_skeleton(_tiny()))
    (defn,) = graph_defs(prov.model, only=(G.BOX_ENCODER.name,))
    recipes = prov.graph_recipes(defn)
    fake_weights([defn.module], [recipes])
    w = write_graph(defn, recipes, reader, tmp_path / "box_encoder.onnx", Precision.FP16, 20, inline_bytes=0)
    slices = ShardSlices(files.shards)
    assert check_graph(w.path, w.initializers, slices)["mismatch_count"] == 0
    data = tmp_path / "box_encoder.onnx.data"
    raw = bytearray(data.read_bytes())
    model = onnx.load(str(w.path), load_external_data=False)
    init = next(t for t in model.graph.initializer if t.name in w.initializers and len(t.dims) == 2)
    offset = int({e.key: e.value for e in init.external_data}["offset"])
    raw[offset + 10] ^= 0x01                                              # one bit of one value
    data.write_bytes(bytes(raw))
    report = check_graph(w.path, w.initializers, slices)
    assert report["mismatch_count"] == 1 and init.name in report["mismatches"][0]
    reader.close()


def test_concat_recipe_for_sams_point_embeddings():
    prov = Provenance(build_skeleton(_tiny()))
    r = prov.recipe("sam.prompt_encoder.point_embed.weight")
    assert r.op == "concat0" and len(r.sources) == 4
    assert all(s.startswith("sam.sam_prompt_encoder.point_embeddings.") for s in r.sources)
    assert isinstance(Recipe("copy", ("x",), (1,)).to_json(), dict)


# ------------------------------------------------------------------------------------------ bad input
def _run(argv, capsys) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_wrong_dimensions_for_the_config(small_ckpt, tmp_path, capsys):
    code, err = _run(["--checkpoint", str(small_ckpt), "--config", "tiny", "--stream", "on", "--out",
                      str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1
    assert "--config tiny expects" in err[0] and "not at this configuration's dimensions" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_missing_and_truncated_shards(small_ckpt, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(small_ckpt, broken)
    shard = broken / "model-00003-of-00004.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    code, err = _run(["--checkpoint", str(broken), "--stream", "on", "--out", str(tmp_path / "o"), "--no-progress"],
                     capsys)
    assert code == 2 and len(err) == 1 and "truncated" in err[0] and shard.name in err[0]
    shard.unlink()
    code, err = _run(["--checkpoint", str(broken), "--stream", "on", "--out", str(tmp_path / "o"), "--no-progress"],
                     capsys)
    assert code == 2 and len(err) == 1 and "shard missing" in err[0]
    assert not (tmp_path / "o").exists()


def test_disk_too_small_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000_000))
    code, err = _run(["--stream", "on", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1 and "the export needs" in err[0] and "GB free, the disk has 0.0" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_mid_export_leaves_nothing(tmp_path, capsys, monkeypatch):
    from tpo.export import streamed

    real, calls = streamed.write_graph, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(streamed, "write_graph", interrupted)
    code, err = _run(["--stream", "on", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 130 and err == [f"tpo-export: interrupted; nothing written to {tmp_path / 'o'}"]
    assert list(tmp_path.iterdir()) == []


def test_second_export_to_the_same_out_is_refused_at_rename(tmp_path):
    out, first, second = tmp_path / "out", tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "manifest.json").write_text(folder.name)
    install(first, out, force=False)
    with pytest.raises(OutTaken, match="appeared while this export ran"):
        install(second, out, force=False)
    assert (out / "manifest.json").read_text() == "first"
    install(second, out, force=True)
    assert (out / "manifest.json").read_text() == "second"


def test_second_export_is_refused_at_rename(tmp_path, capsys, monkeypatch):
    """Both exports passed the early check; the first finishes while the second runs: the second is refused
    at rename, the first one's folder untouched, nothing of the second left; the CLI says so in one line."""
    from tpo.export import exporter

    out = tmp_path / "o"
    real = exporter.install

    def racing(tmp, target, force):
        target.mkdir()
        (target / "manifest.json").write_text("the first export")
        return real(tmp, target, force)

    monkeypatch.setattr(exporter, "install", racing)
    with pytest.raises(OutTaken):
        export_artifacts(ExportOptions(out=out, graphs=(G.BOX_ENCODER.name,), skip_task_parity=True, stream="on",
                                       progress=False))
    assert (out / "manifest.json").read_text() == "the first export"
    assert [p.name for p in tmp_path.iterdir()] == ["o"]

    def refused(opts):
        raise OutTaken(f"{opts.out}: appeared while this export ran (another tpo-export?); not replaced")

    monkeypatch.setattr(exporter, "export_artifacts", refused)
    code, err = _run(["--out", str(tmp_path / "p"), "--no-progress"], capsys)
    assert code == 2 and len(err) == 1 and "appeared while this export ran" in err[0]


def test_stream_flag_is_checked_early(tmp_path, capsys):
    code, err = _run(["--stream", "sometimes", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and "--stream 'sometimes'" in err[0]


def _tiny():
    from tpo.model.config import load_config

    return load_config("tiny")


def test_checkpoint_error_type_for_api_callers(small_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="expects"):
        export_artifacts(ExportOptions(out=tmp_path / "o", checkpoint=small_ckpt, config="tiny", stream="on",
                                       progress=False))
    assert not Path(tmp_path / "o").exists()


def test_streamed_mask_image_encoder_has_no_cubic_resize_and_lints_clean(tmp_path):
    """With fake weights nothing folds the Hiera position table's bicubic resize: it must not be a Resize at all
    (TensorRT's ONNX parser documents nearest and linear only), at any size; the full-size graph is the same code."""
    from tpo.export.tensorrt_lint import lint_manifest

    out = tmp_path / "o"
    export_artifacts(ExportOptions(out=out, graphs=(G.MASK_IMAGE_ENCODER.name,), skip_task_parity=True, stream="on",
                                   progress=False))
    manifest = Manifest.load(out)
    graph = onnx.load(str(manifest.path_of(manifest.graphs[G.MASK_IMAGE_ENCODER.name])), load_external_data=False)
    modes = [a.s.decode() for n in graph.graph.node if n.op_type == "Resize" for a in n.attribute if a.name == "mode"]
    assert "cubic" not in modes
    assert lint_manifest(manifest) == []
