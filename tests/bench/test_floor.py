"""The FLOP and byte counter on hand-built ONNX graphs of known cost, and the floor arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tpo.bench.floor import count_graph, count_model, floor_seconds  # noqa: E402


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_matmul_of_known_shape_is_2mnk(tmp_path):
    m, k, n = 7, 5, 3
    w = numpy_helper.from_array(np.ones((k, n), np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])], [w])
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    c = count_graph(path, {"x": (m, k)})            # the symbolic "rows" pinned to m
    assert c.matmul_flops == 2 * m * n * k
    assert c.weight_bytes == k * n * 4
    assert c.io_bytes == (m * k + m * n) * 4
    assert c.bytes == c.weight_bytes + c.io_bytes
    assert c.uncounted == []
    # a different concrete shape changes the count: it is not read from the file's dims
    assert count_graph(path, {"x": (2 * m, k)}).matmul_flops == 2 * (2 * m) * n * k


def test_batched_matmul_broadcasts_and_elementwise_counts_outputs():
    b, m, k, n = 4, 6, 8, 2
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, [b, m, k]),
                    helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    c = count_model(model, {"a": (b, m, k), "b": (k, n)})
    assert c.matmul_flops == 2 * b * m * n * k
    assert c.elementwise_flops == b * m * n          # Relu: one per output element
    assert c.flops == c.matmul_flops + c.elementwise_flops


def test_gemm_transposed_and_conv():
    w = numpy_helper.from_array(np.ones((10, 6), np.float32), "w")          # transB: [N, K]
    gemm = _model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    assert count_model(gemm, {"x": (3, 6)}).matmul_flops == 2 * 3 * 10 * 6
    kw = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float32), "k")      # Cout 8, Cin 4, 3x3
    conv = _model([helper.make_node("Conv", ["x", "k"], ["y"], pads=[1, 1, 1, 1])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [kw])
    assert count_model(conv, {"x": (1, 4, 16, 16)}).matmul_flops == 2 * 1 * 8 * 16 * 16 * 4 * 9


def test_floor_is_the_slower_of_compute_and_memory():
    peak = {"flops_per_s": 1e9, "bytes_per_s": 1e9}
    fl = floor_seconds({"flops": 2e9, "bytes": 1e8}, peak)
    assert fl["floor_s"] == pytest.approx(2.0) and fl["bound"] == "compute"
    fl = floor_seconds({"flops": 1e6, "bytes": 3e9}, peak)
    assert fl["floor_s"] == pytest.approx(3.0) and fl["bound"] == "memory"


def test_weights_in_a_side_file_loaded_without_data_are_still_counted(tmp_path, monkeypatch):
    """A full-size graph is counted without reading its weights: a reshape whose shape comes from the data
    must still infer, and the MatMul behind it count (both inferencers used to give up on the side file)."""
    m, k, n = 6, 64, 32
    w = numpy_helper.from_array(np.ones((n, k), np.float32), "w")          # stored [out, in], transposed in-graph
    q_bias = numpy_helper.from_array(np.ones(n // 2, np.float32), "q_bias")   # as the ViT's qkv bias is built
    v_bias = numpy_helper.from_array(np.ones(n // 2, np.float32), "v_bias")
    shape = numpy_helper.from_array(np.array([-1, k], np.int64), "shape")
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["x2"]),
                    helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
                    helper.make_node("MatMul", ["x2", "wt"], ["xw"]),
                    helper.make_node("Shape", ["v_bias"], ["v_shape"]),      # zeros_like(v_bias), as traced
                    helper.make_node("ConstantOfShape", ["v_shape"], ["k_bias"]),
                    helper.make_node("Concat", ["q_bias", "k_bias"], ["bias"], axis=0),
                    helper.make_node("Add", ["xw", "bias"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, q_bias, v_bias, shape])
    folder = tmp_path / "graph"
    folder.mkdir()
    onnx.save_model(model, str(folder / "g.onnx"), save_as_external_data=True, location="g.onnx.data",
                    size_threshold=64)     # the float tensors out, the int64 shape inline (as exported)
    monkeypatch.chdir(tmp_path)                      # not the graph's folder
    loaded = onnx.load(str(folder / "g.onnx"), load_external_data=False)
    c = count_model(loaded, {"x": (2, 3, k)})
    assert c.uncounted == [] and c.matmul_flops == 2 * m * n * k
    assert c.weight_bytes == (n * k + n) * 4 + 2 * 8 and c.io_bytes == (m * k + m * n) * 4
