"""Quantise one fp32 graph, with ONNX Runtime's own quantisation tools (`onnxruntime.quantization`): they write
the QDQ form that ONNX Runtime's CPU provider fuses into integer kernels and TensorRT consumes as explicit
quantisation, and the MatMulNBits form of weight-only quantisation that the CPU provider runs. Chosen over
nvidia-modelopt because it needs nothing beyond the onnxruntime this project already installs and runs here
without a GPU; this module writes no quantiser of its own.

- `quantize_int8`: static QDQ, per-channel int8 weights, uint8 activations (asymmetric: the u8 x s8 kernels of
  x86 VNNI / ARM dot-product), activation ranges from the captured samples by `method` (minmax, entropy,
  percentile). Only the MatMul / Conv / Gemm with a constant weight are quantised: attention's activation x
  activation MatMuls, normalisations, softmax and the rest stay fp32. onnxruntime's calibrators measure just the
  tensors that are quantised, in passes bounded in memory, and hand their ranges to its `quantize_static`: a
  full-size SAM2 Hiera-L encoder calibrates in a few GB (quantize_static's own calibration passed 24 GB).
- `quantize_dynamic_int8`: int8 weights, activations quantised per call (no calibration): the LLM's int8, where
  MatMulNBits' 8-bit CPU kernel is 10x slower than fp32 (measured, docs/export.md).
- `quantize_weight_only`: block-wise (32 / 128) int4 or int8 weights of the MatMuls (RTN), activations fp32;
  the LLM's lm_head (the projection to its logits output, found by shape) stays fp32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from tpo.errors import InputError

METHODS = ("minmax", "entropy", "percentile")
INT8_OPS = ("MatMul", "Conv", "Gemm")
EXTERNAL_BYTES = 1_800_000_000          # at or above it the quantised graph keeps its weights in a side file
CALIBRATION_BYTES = 4_000_000_000      # calibration data a histogram calibrator may keep in one pass


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


def weight_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """The MatMul / Conv / Gemm nodes whose second input is an initializer (a weight: these are quantised) and the
    MatMuls of two activations (attention's Q K^T and A V), which stay fp32: calibrating them is what did not fit
    a full-size encoder (a global attention matrix of SAM2 Hiera-L at 1024 px is 512 MB); without them that
    encoder's int8 runs 1.7x faster than fp32 on one CPU thread (measured, tpo.bench.precision). Names, in graph
    order; call after `fold_weight_transposes`."""
    inits = {t.name for t in model.graph.initializer}
    weight, activation = [], []
    for n in model.graph.node:
        if n.op_type in INT8_OPS and len(n.input) > 1:
            (weight if n.input[1] in inits else activation).append(n.name)
    return weight, activation


def _name_nodes(model: onnx.ModelProto) -> int:
    """Name the unnamed nodes and the repeats of a name (the quantiser selects nodes by name); returns how many."""
    taken = {n.name for n in model.graph.node}
    seen: set[str] = set()
    count = 0
    for i, n in enumerate(model.graph.node):
        if n.name and n.name not in seen:
            seen.add(n.name)
        else:
            name = f"{n.op_type}_tpo_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
            count += 1
    return count


def _retained_bytes(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> dict[str, int]:
    """Bytes of each value of the graph for one sample, from its inferred shapes (symbolic dimensions bound by the
    samples' input shapes, the rest counted as 1): what a histogram calibrator keeps per sample and tensor."""
    bound: dict[str, int] = {}
    for i in model.graph.input:
        shape = samples[0].get(i.name)
        for k, d in enumerate(i.type.tensor_type.shape.dim):
            if d.dim_param and shape is not None and k < np.ndim(shape):
                bound[d.dim_param] = int(np.shape(shape)[k])
    out = {}
    for v in (*model.graph.value_info, *model.graph.output, *model.graph.input):
        t = v.type.tensor_type
        count = 1
        for d in t.shape.dim:
            count *= d.dim_value or bound.get(d.dim_param, 1)
        out[v.name] = count * (onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize if t.elem_type else 4)
    return out


def _calibrators(method: str, percentile: float):
    """onnxruntime's calibrator class and the settings that its `create_calibrator` gives `quantize_static`'s."""
    from onnxruntime.quantization.calibrate import EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater

    return {"minmax": (MinMaxCalibrater, {}),
            "entropy": (EntropyCalibrater, {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128}),
            "percentile": (PercentileCalibrater, {"symmetric": True, "num_bins": 2048,
                                                  "percentile": percentile})}[method]


def _restricted(base: type, tensors: set[str]) -> type:
    """`base` (an onnxruntime calibrator) that calibrates only `tensors` of what it would select, and runs its
    session in priority-based order. onnxruntime's default order computes the graph first and the added
    ReduceMin / ReduceMax nodes last, so every calibrated tensor stays alive to the end of the run (a full-size
    Hiera-L passed 16 GB before its first sample finished; 2.5 GB in priority-based order, measured)."""
    import onnxruntime

    class Restricted(base):
        def select_tensors_to_calibrate(self, model):
            found, value_infos = super().select_tensors_to_calibrate(model)
            return found & tensors, value_infos

        def collect_data(self, data_reader):
            if getattr(self, "num_bins", None) is not None and not self.collector:     # a histogram calibrator
                self.collector = _flat_histograms()(
                    method=self.method, symmetric=self.symmetric, num_bins=self.num_bins,
                    num_quantized_bins=self.num_quantized_bins, percentile=self.percentile, scenario=self.scenario)
            return super().collect_data(data_reader)

        def create_inference_session(self):
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
            self.infer_session = onnxruntime.InferenceSession(self.augmented_model_path, sess_options=options,
                                                              providers=self.execution_providers)

    return Restricted


def _flat_histograms() -> type:
    """onnxruntime's HistogramCollector, fed one flat array per tensor that starts with a 0.

    Flat: it stacks a tensor's samples into one array, which fails on samples of different shapes (prompts of
    different lengths, a video and an image through one graph); the values, and so the histogram, are the same
    flattened. The 0: it bins |x| from the smallest |x| seen, and a tensor whose values nearly all sit at one
    magnitude has no 2,048 finite bins there (numpy refuses); from 0, as a symmetric int8 range is, it always
    has. One value among a sample's thousands moves no percentile. Both crashed `--method percentile` and
    `entropy` on the tiny checkpoints (docs/export.md)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    class FlatHistograms(HistogramCollector):
        def collect(self, name_to_arr):
            flat = {}
            for k, v in name_to_arr.items():
                arrays = v if isinstance(v, list) else [v]
                dtype = arrays[0].dtype if arrays else np.float32
                flat[k] = [np.concatenate([np.zeros(1, dtype), *(np.ravel(a) for a in arrays)])]
            return super().collect(flat)

    return FlatHistograms


def calibration_passes(tensors: list[str], sizes: dict[str, int], method: str, samples: int,
                       budget: int) -> list[list[str]]:
    """`tensors` in groups that each keep at most `budget` bytes of calibration data (a tensor over it alone):
    a histogram calibrator keeps every calibrated tensor of every sample until it makes its histograms; minmax
    reduces each to its min and max inside the graph, so it needs one pass."""
    if method == "minmax":
        return [list(tensors)] if tensors else []
    groups: list[list[str]] = []
    used = budget
    for t in tensors:
        cost = sizes.get(t, 4) * samples
        if used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(t)
        used += cost
    return groups


def _calibrate(src: Path, scratch: Path, samples: list[dict[str, np.ndarray]], method: str, percentile: float,
               nodes: set[str], external: bool, budget: int):
    """Activation ranges of the inputs and outputs of `nodes`, with onnxruntime's calibrators, in passes of at
    most `budget` bytes of kept data; each pass's ranges are its tensors' own, so the passes' union is the
    ranges of one pass over all of them. Returns (TensorsData, passes)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    structure = onnx.load(str(src), load_external_data=False)
    structure = onnx.shape_inference.infer_shapes(structure)
    inits = {t.name for t in structure.graph.initializer}
    tensors: list[str] = []
    for n in structure.graph.node:
        if n.name in nodes:
            tensors += [t for t in (*n.input, *n.output) if t and t not in inits and t not in tensors]
    groups = calibration_passes(tensors, _retained_bytes(structure, samples), method, len(samples), budget)
    del structure
    base, settings = _calibrators(method, percentile)
    ranges: dict = {}
    for i, group in enumerate(groups):
        folder = scratch / f"calibration-{i}"
        folder.mkdir()
        calibrator = _restricted(base, set(group))(str(src), list(INT8_OPS), str(folder / "augmented.onnx"),
                                                   use_external_data_format=external, **settings)
        calibrator.augment_graph()
        calibrator.create_inference_session()
        calibrator.collect_data(_Replay(samples))
        ranges.update(calibrator.compute_data().items())
        del calibrator
        shutil.rmtree(folder)
    method_enum = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}[method]
    return TensorsData(method_enum, ranges), len(groups)


def quantize_int8(src: Path, dst: Path, samples: list[dict[str, np.ndarray]], method: str = "minmax",
                  percentile: float = 99.999, budget: int = CALIBRATION_BYTES) -> dict:
    """QDQ int8 of `src` into `dst` calibrated on `samples`; returns what was done (for the report).

    The MatMuls / Convs / Gemms with a constant weight are quantised (`weight_nodes`); the calibration covers
    just their inputs and outputs (`_calibrate`) and its ranges go to `quantize_static` through onnxruntime's
    calibration cache, so that its QDQ quantiser is the one that writes the graph."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if method not in METHODS:
        raise InputError(f"calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if not samples:
        raise InputError(f"{src.name}: no calibration samples")
    name = src.name
    with tempfile.TemporaryDirectory(dir=dst.parent) as folder, _quiet():
        scratch = Path(folder)
        model = onnx.load(str(src))
        folded = fold_weight_transposes(model)
        renamed = _name_nodes(model)
        external = _external(src)
        if folded or renamed:
            src = scratch / "folded.onnx"
            onnx.save_model(model, str(src), save_as_external_data=external, location="folded.onnx.data")
        quantized, kept = weight_nodes(model)
        del model
        if not quantized:
            raise InputError(f"{name}: no MatMul / Conv / Gemm with a constant weight to quantise")
        t = time.perf_counter()
        ranges, passes = _calibrate(src, scratch, samples, method, percentile, set(quantized), external, budget)
        seconds = time.perf_counter() - t
        cache = scratch / "ranges.json"
        save_tensors_data(ranges, cache)
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(INT8_OPS), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=quantized, calibrate_method=ranges.calibration_method,
                        use_external_data_format=external, calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    model = onnx.load(str(dst), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    return {"kind": "int8 qdq", "method": method, "samples": len(samples), "per_channel": True,
            "quantized_ops": ops.count("DequantizeLinear"), "ops": list(INT8_OPS), "folded_transposes": folded,
            "quantized_nodes": len(quantized), "fp32_matmuls": len(kept), "calibration_passes": passes,
            "calibration_s": round(seconds, 1)}


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
