"""Quantise one fp32 graph, with ONNX Runtime's own quantisation tools (`onnxruntime.quantization`): they write
the QDQ form that ONNX Runtime's CPU provider fuses into integer kernels and TensorRT consumes as explicit
quantisation, and the MatMulNBits form of weight-only quantisation that the CPU provider runs. Chosen over
nvidia-modelopt because it needs nothing beyond the onnxruntime this project already installs and runs here
without a GPU; this module writes no quantiser of its own.

- `quantize_int8`: static QDQ, per-channel int8 weights, uint8 activations (asymmetric: the u8 x s8 kernels of
  x86 VNNI / ARM dot-product), activation ranges from the captured samples by `method` (minmax, entropy,
  percentile). Only MatMul / Conv / Gemm are quantised: normalisations, softmax and the rest stay fp32.
- `quantize_dynamic_int8`: int8 weights, activations quantised per call (no calibration): the LLM's int8, where
  MatMulNBits' 8-bit CPU kernel is 10x slower than fp32 (measured, docs/export.md).
- `quantize_weight_only`: block-wise (32 / 128) int4 or int8 weights of the MatMuls (RTN), activations fp32;
  the LLM's lm_head (the projection to its logits output, found by shape) stays fp32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from tpo.errors import InputError

METHODS = ("minmax", "entropy", "percentile")
INT8_OPS = ("MatMul", "Conv", "Gemm")
EXTERNAL_BYTES = 1_800_000_000          # at or above it the quantised graph keeps its weights in a side file


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs a line per tensor it skips; keep the export's output readable."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class _Replay:
    """onnxruntime's CalibrationDataReader protocol over captured samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]]):
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):                     # some calibrators read twice
        pass


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """Replace each Transpose of an initializer by the transposed initializer; returns how many.

    The streamed export traces with fake weights, so nothing folds `W^T` of a linear layer: every MatMul's
    weight arrives through a Transpose node (ONNX Runtime folds it when a session loads). The quantisers only
    quantise a MatMul whose weight IS an initializer, so the fold happens first, here."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    folded = []
    for n in model.graph.node:
        if n.op_type != "Transpose" or n.input[0] not in inits or uses.get(n.input[0]) != 1:
            continue
        perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
        value = numpy_helper.to_array(inits[n.input[0]])
        new = numpy_helper.from_array(np.ascontiguousarray(value.transpose(perm)), n.output[0])
        model.graph.initializer.remove(inits.pop(n.input[0]))
        model.graph.initializer.append(new)
        folded.append(n)
    for n in folded:
        model.graph.node.remove(n)
    return len(folded)


def _external(src: Path) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in onnx.load(str(src), load_external_data=False).graph.initializer)


def quantize_int8(src: Path, dst: Path, samples: list[dict[str, np.ndarray]], method: str = "minmax",
                  percentile: float = 99.999) -> dict:
    """QDQ int8 of `src` into `dst` calibrated on `samples`; returns what was done (for the report)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method not in METHODS:
        raise InputError(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if not samples:
        raise InputError(f"{src.name}: no calibration samples")
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch, _quiet():
        model = onnx.load(str(src))
        folded = fold_weight_transposes(model)
        external = _external(src)
        if folded:
            src = Path(scratch) / "folded.onnx"
            onnx.save_model(model, str(src), save_as_external_data=external, location="folded.onnx.data")
        del model
        quantize_static(str(src), str(dst), _Replay(samples), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(INT8_OPS), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate,
                        use_external_data_format=external, extra_options=extra)
    model = onnx.load(str(dst), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"kind": "int8 qdq", "method": method, "samples": len(samples), "per_channel": True,
            "quantized_ops": ops.count("DequantizeLinear"), "ops": list(INT8_OPS), "folded_transposes": folded}


def quantize_dynamic_int8(src: Path, dst: Path, keep_fp32_output: str | None = None) -> dict:
    """Dynamic int8 of the MatMuls (per-channel int8 weights, activations quantised per call: ONNX Runtime's
    MatMulInteger / DynamicQuantizeMatMul); no calibration data. The projection to `keep_fp32_output` stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch, _quiet():
        model = onnx.load(str(src))
        folded = fold_weight_transposes(model)
        excluded = output_projection(model, keep_fp32_output) if keep_fp32_output else []
        external = _external(src)
        folded_path = Path(scratch) / "folded.onnx"
        onnx.save_model(model, str(folded_path), save_as_external_data=external, location="folded.onnx.data")
        del model
        quantize_dynamic(str(folded_path), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                         use_external_data_format=external)
    ops = [n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node]
    quantized = sum(ops.count(o) for o in ("MatMulInteger", "DynamicQuantizeMatMul"))
    if not quantized:
        raise InputError(f"{src.name}: no MatMul with a constant weight to quantise")
    return {"kind": "int8 dynamic", "quantized_ops": quantized, "kept_fp32": excluded, "folded_transposes": folded}


def output_projection(model: onnx.ModelProto, output: str) -> list[str]:
    """The MatMuls whose weight (an initializer) projects to `output`'s last dimension: the LLM's lm_head for
    its logits. Found by shape, not by node name (the dynamo exporter names nodes `node_linear_N`)."""
    out = next((o for o in model.graph.output if o.name == output), None)
    if out is None or not out.type.tensor_type.shape.dim:
        raise InputError(f"graph has no output {output!r} to find its projection by")
    width = out.type.tensor_type.shape.dim[-1].dim_value
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2
            and shapes.get(n.input[1], [None])[-1] == width]


def quantize_weight_only(src: Path, dst: Path, bits: int, block: int = 32, keep_fp32_output: str | None = None
                         ) -> dict:
    """MatMulNBits (`bits` = 4 or 8, blocks of `block` along the input dimension) of `src` into `dst`; the
    projection to `keep_fp32_output` (the LLM's logits: every greedy token is their argmax) stays fp32."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if bits not in (4, 8):
        raise InputError(f"weight-only bits {bits}: 4 or 8")
    if block not in (16, 32, 64, 128, 256):
        raise InputError(f"weight-only block {block}: one of 16, 32, 64, 128, 256")
    model = onnx.load(str(src))
    folded = fold_weight_transposes(model)
    excluded = output_projection(model, keep_fp32_output) if keep_fp32_output else []
    with _quiet():
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                         nodes_to_exclude=excluded)
        quantizer.process()
    out = quantizer.model.model
    weights = sum(len(t.raw_data) for t in out.graph.initializer)
    if weights >= EXTERNAL_BYTES:
        onnx.save_model(out, str(dst), save_as_external_data=True, location=dst.name + ".data")
    else:
        onnx.save_model(out, str(dst))
    ops = [n.op_type for n in out.graph.node]
    if not ops.count("MatMulNBits"):
        raise InputError(f"{src.name}: no MatMul with a constant weight to quantise")
    return {"kind": f"int{bits} weight-only", "block": block, "quantized_ops": ops.count("MatMulNBits"),
            "kept_fp32": excluded, "folded_transposes": folded}
