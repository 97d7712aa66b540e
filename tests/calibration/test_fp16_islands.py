"""Adjacent fp32 islands talk in fp32: RMSNorm's sum of squares of a residual stream past 256 stays finite.

onnxruntime's converter casts each blocked op's output to fp16 and back even when the next op is blocked too;
between Pow and ReduceMean a square over 65504 became inf, and the shipped LLM's fp16 export failed its parity
gate on exactly that (docs/export.md, "Adjacent islands")."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from tpo.calibration.fp16 import FP16_ISLANDS, convert, join_fp32_islands
from tpo.export.onnx_export import to_fp16


def rms_graph() -> onnx.ModelProto:
    """x [1, 8] -> x / sqrt(mean(x^2) + eps), as the dynamo exporter writes Mistral's RMSNorm."""
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["var"], keepdims=1),
             helper.make_node("Add", ["var", "eps"], ["var_eps"]),
             helper.make_node("Sqrt", ["var_eps"], ["std"]),
             helper.make_node("Reciprocal", ["std"], ["inv"]),
             helper.make_node("Mul", ["x", "inv"], ["y"])]
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [-1]),
             helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5])]
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


X = np.array([[300.0, -280.0, 5.0, 1.0, -2.0, 260.0, 0.5, 3.0]], np.float32)   # x^2 > 65504 in three places


def test_a_square_past_fp16s_range_between_two_islands_stays_finite():
    model = rms_graph()
    want = run(model, X)
    got = run(convert(model, FP16_ISLANDS), X)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_without_the_join_the_round_trip_overflows():
    """The failure this guards against is real: the converter's own output loses the norm (inf variance)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    raw = convert_float_to_float16(rms_graph(), keep_io_types=True, op_block_list=list(FP16_ISLANDS))
    assert not np.allclose(run(raw, X), run(rms_graph(), X), rtol=0.1, atol=0.1)
    assert join_fp32_islands(raw) >= 1
    np.testing.assert_allclose(run(raw, X), run(rms_graph(), X), rtol=2e-3, atol=2e-3)
    casts = [n for n in raw.graph.node if n.op_type == "Cast"]
    assert not any(n.output[0] == "sq" for n in casts), "the unused fp16 copy of the square is gone"


def test_the_exports_fp16_conversion_joins_islands(tmp_path):
    path = tmp_path / "rms.onnx"
    onnx.save_model(rms_graph(), str(path))
    to_fp16(path)
    got = run(onnx.load(str(path)), X)
    np.testing.assert_allclose(got, run(rms_graph(), X), rtol=2e-3, atol=2e-3)
