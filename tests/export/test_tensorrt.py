"""The tensorrt export target without TensorRT: the parser lint on small ONNX graphs, the engine cache
(key, side file, atomic writes), the build loop with the TensorRT calls stubbed out, and the one-line
errors (with nothing TensorRT imported) on a machine without a GPU."""

from __future__ import annotations

import hashlib
import importlib.abc
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from tpo import engine_cache
from tpo.contract import Dim, GraphEntry, Manifest, Precision, TensorSpec
from tpo.engine_cache import EngineCache, GpuInfo, engine_cache_key, probe_with_driver, profile_from_dims
from tpo.errors import CheckpointError, TPOError
from tpo.export import tensorrt_build, tensorrt_probe
from tpo.export.tensorrt_build import build_engines
from tpo.export.tensorrt_lint import lint_for_tensorrt, lint_manifest
from tpo.export.tensorrt_probe import TensorRTUnavailable

DIMS = {"batch": Dim(1, 2, 8), "seq": Dim(1, 64, 512)}
SHA = hashlib.sha256(b"graph").hexdigest()
FAKE_GPU = GpuInfo(0, "Fake Orin", 8, 7, 12060, 1 << 34)


def _save(tmp_path: Path, name: str, nodes, inputs, outputs, initializers=(), opset=17, **kw) -> Path:
    graph = h.make_graph(nodes, name, inputs, outputs, list(initializers))
    imports = [h.make_opsetid("", opset)] + kw.pop("extra_opsets", [])
    model = h.make_model(graph, opset_imports=imports, **kw)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _mlp(tmp_path: Path, dtype=T.FLOAT, name="mlp") -> Path:
    np_dtype = {T.FLOAT: np.float32, T.FLOAT16: np.float16}[dtype]
    x = h.make_tensor_value_info("x", dtype, ["batch", "seq", 4])
    y = h.make_tensor_value_info("y", dtype, ["batch", "seq", 3])
    w = numpy_helper.from_array(np.ones((4, 3), np_dtype), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             h.make_node("Relu", ["m"], ["y"], name="act")]
    return _save(tmp_path, name, nodes, [x], [y], [w])


# ----------------------------------------------------------------------------------------------- lint
def test_supported_graph_has_no_problems(tmp_path):
    assert lint_for_tensorrt(_mlp(tmp_path), DIMS) == []


def test_unsupported_op_is_named(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [4])
    path = _save(tmp_path, "uniq", [h.make_node("Unique", ["x"], ["u"], name="dedupe")], [x],
                 [h.make_tensor_value_info("u", T.FLOAT, None)])
    problems = lint_for_tensorrt(path, {})
    assert len(problems) == 1, problems
    assert problems[0].startswith("uniq.onnx: node 'dedupe' (Unique): Unique is not supported")


def test_sequence_and_unknown_and_custom_ops(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [4])
    nodes = [h.make_node("SequenceConstruct", ["x"], ["s"], name="seq"),
             h.make_node("NoSuchOp", ["x"], ["n"], name="mystery"),
             h.make_node("FusedThing", ["x"], ["f"], domain="com.example", name="fused")]
    path = _save(tmp_path, "ops", nodes, [x], [h.make_tensor_value_info("f", T.FLOAT, [4])],
                 extra_opsets=[h.make_opsetid("com.example", 1)])
    text = "\n".join(lint_for_tensorrt(path, {}))
    assert "node 'seq' (SequenceConstruct): SequenceConstruct is not supported: sequence types" in text
    assert "node 'mystery' (NoSuchOp): NoSuchOp is not in TensorRT" in text
    assert "node 'fused' (FusedThing): custom-domain op com.example::FusedThing" in text


def test_float64_tensors_and_casts_are_named(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [4])
    scale = numpy_helper.from_array(np.ones(4, np.float64), "scale64")
    nodes = [h.make_node("Cast", ["x"], ["x64"], to=T.DOUBLE, name="widen"),
             h.make_node("Mul", ["x64", "scale64"], ["y64"], name="scale"),
             h.make_node("Cast", ["y64"], ["y"], to=T.FLOAT, name="narrow")]
    path = _save(tmp_path, "f64", nodes, [x], [h.make_tensor_value_info("y", T.FLOAT, [4])], [scale])
    problems = lint_for_tensorrt(path, {})
    text = "\n".join(problems)
    assert "f64.onnx: initializer 'scale64': float64 - TensorRT has no float64, its parser narrows it" in text
    assert "f64.onnx: node 'widen' (Cast): Cast to float64" in text
    assert "f64.onnx: tensor 'x64': float64" in text   # found by shape inference
    assert all(p.startswith("f64.onnx: ") for p in problems)


def test_types_operators_refuse_and_those_they_take(tmp_path):
    s = h.make_tensor_value_info("text", T.STRING, [1])
    ids = h.make_tensor_value_info("ids", T.INT64, [2, 2])
    flags = h.make_tensor_value_info("flags", T.BOOL, [2, 2])
    lo = numpy_helper.from_array(np.array(0, np.int64), "lo")
    nodes = [h.make_node("MatMul", ["ids", "ids"], ["prod"], name="intmm"),
             h.make_node("Sqrt", ["ids"], ["root"], name="introot"),
             h.make_node("Add", ["flags", "flags"], ["both"], name="booladd"),
             # accepted by TensorRT 10 although its operator table lists fewer types: not reported
             h.make_node("Add", ["ids", "ids"], ["sum"], name="intadd"),
             h.make_node("Clip", ["ids", "lo"], ["clipped"], name="intclip"),
             h.make_node("Equal", ["flags", "flags"], ["same"], name="boolequal")]
    outs = [h.make_tensor_value_info(n, t, None) for n, t in
            (("prod", T.INT64), ("root", T.INT64), ("both", T.BOOL), ("sum", T.INT64), ("clipped", T.INT64),
             ("same", T.BOOL))]
    path = _save(tmp_path, "types", nodes, [s, ids, flags], outs, [lo])
    assert lint_for_tensorrt(path, {}) == [
        "types.onnx: input 'text': string has no TensorRT data type",
        "types.onnx: node 'intmm' (MatMul): input 'ids' is int64, which TensorRT's MatMul does not take",
        "types.onnx: node 'introot' (Sqrt): input 'ids' is int64, which TensorRT's Sqrt does not take",
        "types.onnx: node 'booladd' (Add): input 'flags' is bool, which TensorRT's Add does not take",
    ]


def test_symbolic_dims_without_a_profile(tmp_path):
    path = _mlp(tmp_path)
    problems = lint_for_tensorrt(path, {"batch": DIMS["batch"]})
    assert problems == [
        "mlp.onnx: input 'x' axis 1: dimension 'seq' has no min/opt/max in the manifest's dims, "
        "so no optimization profile covers it"
    ]
    bad = lint_for_tensorrt(path, {**DIMS, "seq": Dim(8, 4, 16)})
    assert bad == ["mlp.onnx: dimension 'seq': range min=8 opt=4 max=16 is not ordered"]
    x = h.make_tensor_value_info("x", T.FLOAT, [None, 4])   # dynamic, unnamed
    anon = _save(tmp_path, "anon", [h.make_node("Relu", ["x"], ["y"])], [x],
                 [h.make_tensor_value_info("y", T.FLOAT, [None, 4])])
    assert "input 'x' axis 0: dynamic dimension without a name" in lint_for_tensorrt(anon, {})[0]


def test_loop_scan_outputs_need_a_constant_trip_count(tmp_path):
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Identity", ["v_in"], ["v_out"]),
         h.make_node("Identity", ["v_in"], ["scan"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("v_in", T.FLOAT, [2])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, [2]),
         h.make_tensor_value_info("scan", T.FLOAT, [2])],
    )
    inputs = [h.make_tensor_value_info("n", T.INT64, []), h.make_tensor_value_info("v", T.FLOAT, [2])]
    outputs = [h.make_tensor_value_info("v_final", T.FLOAT, [2]), h.make_tensor_value_info("scans", T.FLOAT, None)]
    cond = numpy_helper.from_array(np.array(True), "cond")
    dynamic = _save(tmp_path, "loop_dyn", [h.make_node("Loop", ["n", "cond", "v"], ["v_final", "scans"],
                                                       body=body, name="loop")], inputs, outputs, [cond])
    assert any("node 'loop' (Loop): 1 scan output(s) with a trip count that is not a build-time constant" in p
               for p in lint_for_tensorrt(dynamic, {}))
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    static = _save(tmp_path, "loop_static", [h.make_node("Loop", ["trip", "cond", "v"], ["v_final", "scans"],
                                                         body=body, name="loop")], inputs[1:], outputs, [cond, trip])
    assert lint_for_tensorrt(static, {}) == []


def test_problems_inside_subgraphs_are_found(tmp_path):
    branch = h.make_graph([h.make_node("Unique", ["x"], ["u"], name="inner_unique")], "then", [],
                          [h.make_tensor_value_info("u", T.FLOAT, None)])
    other = h.make_graph([h.make_node("Identity", ["x"], ["u2"])], "else", [],
                         [h.make_tensor_value_info("u2", T.FLOAT, None)])
    inputs = [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [4])]
    path = _save(tmp_path, "branch", [h.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=other,
                                                  name="choose")], inputs, [h.make_tensor_value_info("out", T.FLOAT, None)])
    problems = lint_for_tensorrt(path, {})
    assert any("If choose then_branch: node 'inner_unique' (Unique)" in p for p in problems), problems


def test_local_functions_are_expanded_not_flagged_as_custom(tmp_path):
    good = h.make_function("local", "Block", ["a"], ["b"], [h.make_node("Relu", ["a"], ["b"])],
                           [h.make_opsetid("", 17)])
    bad = h.make_function("local", "Dedupe", ["a"], ["b"], [h.make_node("Unique", ["a"], ["b"], name="uq")],
                          [h.make_opsetid("", 17)])
    x = h.make_tensor_value_info("x", T.FLOAT, [4])
    nodes = [h.make_node("Block", ["x"], ["y"], domain="local", name="b1"),
             h.make_node("Block", ["y"], ["z"], domain="local", name="b2"),
             h.make_node("Dedupe", ["z"], ["u"], domain="local", name="d1")]
    path = _save(tmp_path, "funcs", nodes, [x], [h.make_tensor_value_info("u", T.FLOAT, None)],
                 extra_opsets=[h.make_opsetid("local", 1)], functions=[good, bad])
    assert lint_for_tensorrt(path, {}) == [
        "funcs.onnx: function local::Dedupe: node 'uq' (Unique): Unique is not supported: "
        "unsupported by TensorRT's ONNX parser"
    ]


def test_restrictions_opset_and_version(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [1, 1, 8, 8])
    nodes = [h.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], name="pool"),
             h.make_node("Resize", ["p", "", "scales"], ["r"], mode="cubic", name="up")]
    scales = numpy_helper.from_array(np.ones(4, np.float32), "scales")
    path = _save(tmp_path, "restrict", nodes, [x], [h.make_tensor_value_info("r", T.FLOAT, None),
                                                    h.make_tensor_value_info("idx", T.INT64, None)], [scales])
    text = "\n".join(lint_for_tensorrt(path, {}))
    assert "node 'pool' (MaxPool): the Indices output is unsupported" in text
    assert "node 'up' (Resize): mode 'cubic' is unsupported" in text

    old = _save(tmp_path, "old", [h.make_node("Relu", ["x"], ["y"])], [x],
                [h.make_tensor_value_info("y", T.FLOAT, [1, 1, 8, 8])], opset=8)
    assert lint_for_tensorrt(old, {}) == ["old.onnx: opset 8 is outside 9..24, the range TensorRT 10.15's parser covers"]

    q = h.make_tensor_value_info("q", T.FLOAT, [1, 2, 4, 8])
    attn = _save(tmp_path, "attn", [h.make_node("Attention", ["q", "q", "q"], ["o"], name="sdpa")], [q],
                 [h.make_tensor_value_info("o", T.FLOAT, [1, 2, 4, 8])], opset=23)
    assert lint_for_tensorrt(attn, {}, trt_version="10.15.1") == []
    assert any("Attention needs TensorRT 10.14 or newer" in p for p in lint_for_tensorrt(attn, {}, trt_version="10.8"))


def test_lint_reads_structure_only(tmp_path):
    """Weights stored as external data are not read: the lint works with the data file gone."""
    path = _mlp(tmp_path, name="big")
    model = onnx.load(str(path))
    onnx.external_data_helper.convert_model_to_external_data(model, location="big.data", size_threshold=0)
    onnx.save(model, str(path))
    (tmp_path / "big.data").unlink()
    assert lint_for_tensorrt(path, DIMS) == []
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot onnx")
    assert lint_for_tensorrt(garbage, {})[0].startswith("garbage.onnx: not a readable ONNX model")


def test_lint_manifest(tmp_path):
    manifest = _manifest(tmp_path)
    assert lint_manifest(manifest) == []
    mlp = manifest.graphs["mlp"]
    manifest.dims = {}
    manifest.graphs["gone"] = replace(mlp, name="gone", file="gone.onnx")
    manifest.graphs["away"] = replace(mlp, name="away", file="../mlp.onnx")
    assert lint_manifest(manifest) == [
        "mlp.onnx: input 'x' axis 0: dimension 'batch' has no min/opt/max in the manifest's dims, "
        "so no optimization profile covers it",
        "mlp.onnx: input 'x' axis 1: dimension 'seq' has no min/opt/max in the manifest's dims, "
        "so no optimization profile covers it",
        "gone.onnx: missing (graph gone)",
        f"{tmp_path / 'manifest.json'}: graph away: path '../mlp.onnx' leaves the artifacts folder",
    ]
    assert lint_manifest(manifest, graphs=["nope"]) == ["manifest: no graph 'nope' (has ['away', 'gone', 'mlp'])"]
    elsewhere = replace(manifest, root=tmp_path / "elsewhere")       # graph files looked up in `root`
    assert lint_manifest(elsewhere, graphs=["mlp"]) == ["mlp.onnx: missing (graph mlp)"]
    assert lint_manifest(elsewhere, tmp_path, graphs=["mlp"]) == lint_manifest(manifest, graphs=["mlp"])
    with pytest.raises(TypeError, match=r"lint_manifest takes a tpo\.contract\.Manifest"):
        lint_manifest({"graphs": {}})


# ---------------------------------------------------------------------------------------------- cache
PROFILE = {"x": ((1, 1, 4), (2, 64, 4), (8, 512, 4))}


def test_cache_key_changes_with_each_component():
    base = dict(onnx_sha256=SHA, trt_version="10.8.0.43", compute_capability="sm_87", precision="fp16",
                profile=PROFILE)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**{**base, "compute_capability": "8.7"})   # same GPU, other spelling
    assert key == engine_cache_key(**{**base, "profile": {"x": [[1, 1, 4], [2, 64, 4], [8, 512, 4]]}})
    variants = {
        "onnx_sha256": hashlib.sha256(b"other").hexdigest(), "trt_version": "10.9.0.34",
        "compute_capability": "sm_90", "precision": "fp32",
        "profile": {"x": ((1, 1, 4), (2, 64, 4), (8, 1024, 4))},
    }
    keys = {name: engine_cache_key(**{**base, name: value}) for name, value in variants.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(variants)
    assert key.startswith(f"{SHA[:12]}-trt10.8.0.43-sm_87-fp16-")
    with pytest.raises(TPOError, match="not a sha256"):
        engine_cache_key("abc", "10.8", "sm_87", "fp16", PROFILE)


def test_profile_from_dims():
    inputs = [TensorSpec("x", "float32", ("batch", "seq", 4))]
    assert profile_from_dims(inputs, DIMS) == {"x": ((1, 1, 4), (2, 64, 4), (8, 512, 4))}
    with pytest.raises(TPOError, match="dimension 'seq' with no range"):
        profile_from_dims(inputs, {"batch": DIMS["batch"]}, "mlp")
    with pytest.raises(TPOError, match=r"^graph mlp: dimension 'seq': range min=8 opt=4 max=16 is not ordered$"):
        profile_from_dims(inputs, {**DIMS, "seq": Dim(8, 4, 16)}, "mlp")


def test_store_writes_the_engine_untouched_and_a_side_file(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = engine_cache_key(SHA, "10.8.0.43", "sm_87", "fp16", PROFILE)
    plan = bytes(range(256)) * 41
    entry = cache.store(key, plan, {"graph": "llm", "onnx_sha256": SHA, "tensorrt_version": "10.8.0.43",
                                    "compute_capability": "sm_87", "precision": "fp16", "created": "2025-01-01"})
    assert entry.engine.read_bytes() == plan                       # no bytes glued on
    meta = json.loads((tmp_path / "engines" / f"{key}.json").read_text())
    assert meta["engine_sha256"] == hashlib.sha256(plan).hexdigest() and meta["engine_bytes"] == len(plan)
    assert meta["graph"] == "llm" and meta["key"] == key
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [f"{key}.engine", f"{key}.json"]
    assert cache.lookup(key).read() == plan
    assert [e.key for e in cache.find(SHA, "10.8.0.43", "8.7", "fp16")] == [key]
    assert cache.find(SHA, "10.9", "sm_87", "fp16") == []
    entry.engine.write_bytes(plan[:-1])                              # truncated: not a cache hit
    assert cache.lookup(key) is None
    entry.engine.write_bytes(plan[:-1] + b"\x00")                    # same size, other bytes: refused on read
    with pytest.raises(TPOError, match="sha256 differs"):
        cache.lookup(key).read()
    entry.metadata_path.unlink()                                     # no side file: an interrupted build
    assert cache.lookup(key) is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TPO_ENGINE_CACHE", str(tmp_path / "here"))
    assert EngineCache().root == tmp_path / "here"
    monkeypatch.delenv("TPO_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert EngineCache().root == tmp_path / "xdg" / "tpo-edge" / "engines"


# ------------------------------------------------------------------------------------------ GPU probe
class _FakeDriver:
    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_NO_DEVICE = 100

    class CUdevice_attribute:
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

    def __init__(self, init=0, count=1):
        self.init, self.count = init, count

    def cuInit(self, flags):
        if self.init == "missing":
            raise RuntimeError("libcuda.so not found")
        return (self.init,)

    def cuDeviceGetCount(self):
        return 0, self.count

    def cuDeviceGet(self, ordinal):
        return 0, ordinal

    def cuDeviceGetAttribute(self, attr, dev):
        return 0, {75: 8, 76: 7}[attr]

    def cuDeviceGetName(self, n, dev):
        return 0, b"Fake Orin\0\0"

    def cuDriverGetVersion(self):
        return 0, 12060

    def cuDeviceTotalMem(self, dev):
        return 0, 1 << 34


def test_probe_branches():
    assert probe_with_driver(_FakeDriver(init="missing")) == "no NVIDIA driver: libcuda could not be loaded"
    assert probe_with_driver(_FakeDriver(init=100)) == "cuInit failed: 100"
    assert probe_with_driver(_FakeDriver(count=0)) == "the NVIDIA driver reports no CUDA device"
    assert probe_with_driver(_FakeDriver(), 3) == "CUDA device 3 requested but only 1 present"
    gpu = probe_with_driver(_FakeDriver())
    assert gpu == FAKE_GPU and gpu.compute_capability == "sm_87"


# ------------------------------------------------------------------------------ build without TensorRT
class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Records every attempt to find tensorrt or polygraphy (imports and find_spec both come here)."""

    def __init__(self):
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorrt", "polygraphy"):
            self.asked.append(name)
        return None


@pytest.fixture
def import_recorder(monkeypatch):
    recorder = _ImportRecorder()
    monkeypatch.setattr(sys, "meta_path", [recorder, *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] in ("tensorrt", "polygraphy")]:
        monkeypatch.delitem(sys.modules, name)
    return recorder


def _manifest_of(path: Path, precision: Precision, dtype: str = "float32", islands: tuple[str, ...] = ()) -> Manifest:
    """A manifest listing the one graph `path` (input x, output y). The TensorRT target reads only the
    dims, the graphs and the folder, so the model's sections (preprocess, tokens, llm, tracker) stay empty."""
    entry = GraphEntry("mlp", path.name, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size,
                       precision, (TensorSpec("x", dtype, ("batch", "seq", 4)),),
                       (TensorSpec("y", dtype, ("batch", "seq", 3)),), fp32_islands=islands)
    return Manifest(precision=precision, opset=17, model={}, tools={}, preprocess=None, tokens=None, llm=None,
                    vision_graphs={}, tracker=None, dims=dict(DIMS), graphs={"mlp": entry}, files={},
                    root=path.parent)


def _manifest(tmp_path: Path, precision=Precision.FP32, dtype=T.FLOAT) -> Manifest:
    return _manifest_of(_mlp(tmp_path, dtype=dtype), precision, "float32" if dtype == T.FLOAT else "float16")


def test_build_without_gpu_is_one_line_and_imports_nothing(tmp_path, monkeypatch, import_recorder):
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: "the NVIDIA driver reports no CUDA device")
    with pytest.raises(TensorRTUnavailable) as err:
        build_engines(_manifest(tmp_path), cache=EngineCache(tmp_path / "engines"))
    assert str(err.value) == "tensorrt target: no GPU (the NVIDIA driver reports no CUDA device)"
    assert import_recorder.asked == []
    assert not (tmp_path / "engines").exists()


def test_build_on_this_machine_without_gpu(tmp_path, import_recorder):
    reason = engine_cache.gpu_probe()
    if not isinstance(reason, str):
        pytest.skip(f"this machine has a GPU ({reason}); the no-GPU message cannot be shown")
    with pytest.raises(TensorRTUnavailable) as err:
        build_engines(_manifest(tmp_path), cache=EngineCache(tmp_path / "engines"))
    assert str(err.value) == f"tensorrt target: no GPU ({reason})" and "\n" not in str(err.value)
    assert import_recorder.asked == []


def test_build_without_tensorrt_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: FAKE_GPU)
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # as if not installed
    with pytest.raises(TensorRTUnavailable) as err:
        build_engines(_manifest(tmp_path), cache=EngineCache(tmp_path / "engines"))
    assert str(err.value).startswith("tensorrt target: TensorRT is not installed (pip install tensorrt")


def test_probe_refuses_before_any_export_and_imports_no_tensorrt(monkeypatch, import_recorder):
    """`probe_tensorrt` (what tpo-export asks before exporting) answers from the driver and package
    metadata only: no TensorRT import, no TensorRT object, whatever is missing."""
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: "the NVIDIA driver reports no CUDA device")
    with pytest.raises(TensorRTUnavailable, match=r"^tensorrt target: no GPU \(the NVIDIA driver reports no CUDA"):
        tensorrt_probe.probe_tensorrt()
    monkeypatch.setattr(engine_cache, "gpu_probe", lambda ordinal=0: FAKE_GPU)
    monkeypatch.setattr(tensorrt_probe, "module_available", lambda name: name != "tensorrt")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        tensorrt_probe.probe_tensorrt()
    monkeypatch.setattr(tensorrt_probe, "module_available", lambda name: name != "polygraphy")
    monkeypatch.setattr(tensorrt_probe, "tensorrt_version", lambda: "10.8.0")
    with pytest.raises(TensorRTUnavailable, match="polygraphy is not installed"):
        tensorrt_probe.probe_tensorrt()
    monkeypatch.setattr(tensorrt_probe, "module_available", lambda name: True)
    monkeypatch.setattr(tensorrt_probe, "tensorrt_version", lambda: "8.6.1")
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 8.6.1 is too old \(need 10.0 or newer\)"):
        tensorrt_probe.probe_tensorrt()
    monkeypatch.setattr(tensorrt_probe, "tensorrt_version", lambda: "10.8.0")
    assert tensorrt_probe.probe_tensorrt() is FAKE_GPU
    assert import_recorder.asked == []


def test_probe_without_cuda_bindings_and_no_gpu_has_no_install_hint(monkeypatch):
    import tpo.kernels.path as kpath

    real = tensorrt_probe.module_available
    monkeypatch.setattr(tensorrt_probe, "module_available", lambda name: name != "cuda.bindings" and real(name))
    monkeypatch.setattr(kpath, "driver_device_count", lambda: kpath.NO_DRIVER)
    with pytest.raises(TensorRTUnavailable) as err:
        tensorrt_probe.probe_tensorrt()
    assert str(err.value) == "tensorrt target: no GPU present: no NVIDIA driver (libcuda could not be loaded)"
    monkeypatch.setattr(kpath, "driver_device_count", lambda: 1)
    with pytest.raises(TensorRTUnavailable, match=r"1 NVIDIA GPU\(s\) present but cuda-bindings is not installed"):
        tensorrt_probe.probe_tensorrt()


class _FakeTrt:
    __version__ = "10.8.0.43"


@pytest.fixture
def stub_builds(monkeypatch):
    """TensorRT present (stubbed): build_engines runs its cache logic; each 'build' returns fixed bytes."""
    calls = []

    def fake_build(plan, trt, timing, progress):
        calls.append(plan)
        return b"PLAN:" + plan.key.encode(), {}

    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda device: (FAKE_GPU, _FakeTrt))
    monkeypatch.setattr(tensorrt_build, "_build_one", fake_build)
    return calls


def test_build_stores_reuses_and_rebuilds(tmp_path, stub_builds):
    manifest = _manifest(tmp_path)
    cache = EngineCache(tmp_path / "engines")
    lines = []
    built = build_engines(manifest, cache=cache, progress=lines.append)["mlp"]
    profile = {"x": ((1, 1, 4), (2, 64, 4), (8, 512, 4))}
    assert built.key == engine_cache_key(manifest.graphs["mlp"].sha256, "10.8.0.43", "sm_87", "fp32", profile)
    assert not built.reused and built.engine.read_bytes() == b"PLAN:" + built.key.encode()
    meta = json.loads(built.metadata_path.read_text())
    assert meta["graph"] == "mlp" and meta["tensorrt_version"] == "10.8.0.43" and meta["compute_capability"] == "sm_87"
    assert meta["profiles"] == [{"x": {"min": [1, 1, 4], "opt": [2, 64, 4], "max": [8, 512, 4]}}]
    assert {"build_seconds", "polygraphy_version", "created", "onnx_sha256"} <= set(meta) and meta["precision"] == "fp32"
    assert stub_builds[0].strongly_typed is False and stub_builds[0].fp16_flag is False

    again = build_engines(manifest, cache=cache)["mlp"]               # same key: from the cache
    assert again.reused and again.key == built.key and len(stub_builds) == 1
    rebuilt = build_engines(manifest, cache=cache, rebuild=True)["mlp"]
    assert not rebuilt.reused and rebuilt.key == built.key and len(stub_builds) == 2

    wider = replace(manifest, dims={**DIMS, "seq": Dim(1, 64, 1024)})  # another profile: another engine
    third = build_engines(wider, cache=cache)["mlp"]
    assert not third.reused and third.key != built.key and len(stub_builds) == 3
    assert built.engine.is_file()                                     # the old one stays for its profile
    assert any("building a TensorRT 10.8.0.43 engine for sm_87 (fp32)" in line for line in lines)


def test_fp16_typing_policy(tmp_path, stub_builds):
    (tmp_path / "typed").mkdir()
    typed = _manifest(tmp_path / "typed", Precision.FP16, T.FLOAT16)
    build_engines(typed, cache=EngineCache(tmp_path / "engines"))
    assert stub_builds[-1].strongly_typed is True and stub_builds[-1].fp16_flag is False
    (tmp_path / "plain").mkdir()
    plain = _manifest_of(_mlp(tmp_path / "plain"), Precision.FP16, islands=("act",))
    build_engines(plain, cache=EngineCache(tmp_path / "engines"))
    assert stub_builds[-1].strongly_typed is False and stub_builds[-1].fp16_flag is True
    assert stub_builds[-1].fp32_islands == ("act",)
    int8 = _manifest_of(_mlp(tmp_path / "plain"), Precision.INT8)
    with pytest.raises(TPOError, match=r"graph mlp: precision 'int8' has no TensorRT build here \(fp32, fp16\)"):
        build_engines(int8, cache=EngineCache(tmp_path / "engines"))


def test_fp16_export_with_islands_builds_strongly_typed(tmp_path, stub_builds):
    """The export's fp16 conversion (onnxruntime's converter, fp32 I/O, Softmax kept fp32) gives float16
    weights and explicit Casts, so the engine is built strongly typed: TensorRT keeps the fp32 island."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    x = h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", 4])
    y = h.make_tensor_value_info("y", T.FLOAT, ["batch", "seq", 3])
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             h.make_node("Softmax", ["m"], ["y"], axis=-1, name="probs")]
    path = _save(tmp_path, "mlp", nodes, [x], [y], [w])
    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True, op_block_list=["Softmax"])
    onnx.save(model, str(path))
    assert lint_for_tensorrt(path, DIMS) == []
    build_engines(_manifest_of(path, Precision.FP16, islands=("Softmax",)), cache=EngineCache(tmp_path / "engines"))
    assert stub_builds[-1].strongly_typed is True and stub_builds[-1].fp16_flag is False
    assert tensorrt_build._island_nodes(path, ("Softmax",)) == {"probs"}
    assert tensorrt_build._island_nodes(path, ("pro",)) == {"proj", "probs"}


def test_build_reports_missing_graph_file_and_dims(tmp_path, stub_builds):
    cache = EngineCache(tmp_path / "engines")
    manifest = _manifest(tmp_path)
    (tmp_path / "mlp.onnx").unlink()
    with pytest.raises(TPOError, match=r"mlp\.onnx: missing \(graph mlp"):
        build_engines(manifest, cache=cache)
    manifest = _manifest(tmp_path)
    manifest.dims = {"batch": DIMS["batch"]}
    with pytest.raises(TPOError, match="graph mlp: input x has dimension 'seq' with no range"):
        build_engines(manifest, cache=cache)
    with pytest.raises(TPOError, match=r"manifest has no graph 'nope' \(has \['mlp'\]\)"):
        build_engines(_manifest(tmp_path), cache=cache, graphs=["nope"])
    away = _manifest(tmp_path)
    away.graphs["mlp"] = replace(away.graphs["mlp"], file="../mlp.onnx")
    with pytest.raises(CheckpointError, match="path '../mlp.onnx' leaves the artifacts folder"):
        build_engines(away, cache=cache)
    (tmp_path / "other").mkdir()                                      # `root`: where the graph files are
    moved = replace(_manifest(tmp_path / "other"), root=tmp_path / "nowhere")
    assert build_engines(moved, tmp_path / "other", cache=cache)["mlp"].engine.is_file()
    with pytest.raises(TypeError, match=r"build_engines takes a tpo\.contract\.Manifest"):
        build_engines({"graphs": {}}, tmp_path, cache=cache)
    assert len(stub_builds) == 1                                      # nothing built before a refusal


def test_gpu_check_script_without_gpu_says_why(tmp_path):
    """tests/gpu/check_tensorrt.py works before a GPU is lent: without one it says so on one line, exits 2."""
    import subprocess

    reason = engine_cache.gpu_probe()
    if not isinstance(reason, str):
        pytest.skip(f"this machine has a GPU ({reason})")
    script = Path(__file__).resolve().parents[1] / "gpu" / "check_tensorrt.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"check_tensorrt: no GPU: {reason}"
