"""fp16 with measured fp32 islands: which nodes of a graph must stay fp32, found on its captured inputs.

The export's fp16 (`tpo-export --precision fp16`) keeps a fixed list of op types fp32 (`FP16_ISLANDS`: the
classic overflow and underflow points, and ops whose fp16 kernels ONNX Runtime lacks). Here the list is
measured per graph, on the inputs the graph really sees (calibration/capture.py):

    range    onnxruntime's own MinMax calibrator over every float tensor of the fp32 graph; a node whose output
             reaches 1/FP16_HEADROOM of fp16's largest value (65504) stays fp32, whatever its op type
    error    each numeric op type of the fixed list is tried in fp16 (the others kept); it leaves the island list
             when the graph's largest output error stays within FP16_ERROR_SLACK x the error of the fixed list
             (and ONNX Runtime has the kernel): islands the measurement says are unnecessary go, ones it says
             are needed stay
Kernel-gap op types (`KERNEL_ISLANDS`) are never tried: they stay fp32 for ONNX Runtime's sake, not numerics.
The conversion itself is onnxruntime.transformers' `convert_float_to_float16` (as the export's), inputs and
outputs kept fp32, followed by `join_fp32_islands`: the converter casts every island's output to fp16 and back
even when the next op is an island too, so RMSNorm's sum of squares (Pow -> ReduceMean) overflowed between
two fp32 ops once a residual stream passed 256 (docs/export.md, "Adjacent islands").
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

FP16_MAX = 65504.0
FP16_HEADROOM = 4.0          # a tensor seen at a quarter of fp16's range on the calibration clips may pass it on others
FP16_ERROR_SLACK = 1.5       # an op type goes fp16 when the graph's error stays within 1.5x the fixed list's
# Numeric islands: normalisations and softmax (sums of squares, exp), and the elementwise ops whose range
# explodes or vanishes in fp16. Tried one by one.
NUMERIC_ISLANDS = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization", "Softmax", "ReduceMean",
                   "Pow", "Sqrt", "Reciprocal", "Erf", "Exp", "Log", "Sigmoid", "ReduceSum")
# Kernel gaps and integer logic: ONNX Runtime's CPU provider has no fp16 kernel, or the op feeds indices.
KERNEL_ISLANDS = ("Resize", "Range", "CumSum", "TopK", "Min", "Max", "Upsample", "ArgMax")
FP16_ISLANDS = NUMERIC_ISLANDS + KERNEL_ISLANDS       # the export's fixed list (export/onnx_export.py)


def convert(model: onnx.ModelProto, op_islands: tuple[str, ...], node_islands: tuple[str, ...] = (),
            shape_infer: bool = True) -> onnx.ModelProto:
    """A copy of `model` in fp16 with `op_islands` (op types) and `node_islands` (node names) kept fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(copy, keep_io_types=True, op_block_list=list(op_islands),
                                             node_block_list=list(node_islands), disable_shape_infer=not shape_infer)
    join_fp32_islands(converted, op_islands)
    return converted


def join_fp32_islands(model: onnx.ModelProto, op_islands: tuple[str, ...] = FP16_ISLANDS) -> int:
    """Remove the fp32 -> fp16 -> fp32 round trips between adjacent islands, in place; returns how many.

    A Cast to float whose input is a Cast to float16 of an fp32 tensor (typed float, or an output of an
    `op_islands` node) is bypassed: its consumers read the fp32 tensor. A Cast to float16 left without
    consumers goes too. Graph outputs are never bypassed or removed."""
    g = model.graph
    float_, half = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    def is_fp32(name: str) -> bool:
        src = producer.get(name)
        return types.get(name) == float_ or (src is not None and src.op_type in op_islands)

    bypass: dict[str, str] = {}
    for n in g.node:
        first = producer.get(n.input[0]) if cast_to(n) == float_ else None
        if first is not None and cast_to(first) == half and is_fp32(first.input[0]) and n.output[0] not in outputs:
            bypass[n.output[0]] = first.input[0]
    if not bypass:
        return 0
    kept = [n for n in g.node if not (n.op_type == "Cast" and n.output[0] in bypass)]
    for n in kept:
        for i, name in enumerate(n.input):
            if name in bypass:
                n.input[i] = bypass[name]
    used = {i for n in kept for i in n.input} | outputs
    kept = [n for n in kept if not (cast_to(n) == half and n.output[0] not in used)]
    live = {o for n in kept for o in n.output} | {i for n in kept for i in n.input}
    del g.node[:]
    g.node.extend(kept)
    stale = [v for v in g.value_info if v.name not in live]
    for v in stale:
        g.value_info.remove(v)
    return len(bypass)


def _session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _error(reference: list[list[np.ndarray]], model: onnx.ModelProto, samples: list[dict], threads: int) -> float:
    """The largest output error of `model` on `samples`, relative to each fp32 output's range (as measure.py);
    inf when ONNX Runtime cannot run it (no fp16 kernel for some op)."""
    try:
        session = _session(model, threads)
        got = [session.run(None, s) for s in samples]
    except Exception:              # NOT_IMPLEMENTED kernels: the candidate is not runnable, so not chosen
        return float("inf")
    err = 0.0
    for ref, out in zip(reference, got, strict=True):
        for x, y in zip(ref, out, strict=True):
            if np.issubdtype(x.dtype, np.floating) and x.size:
                err = max(err, float(np.abs(x - y.astype(np.float32)).max()) / (float(np.abs(x).max()) or 1.0))
    return err


def range_nodes(src: Path, samples: list[dict], limit: float = FP16_MAX / FP16_HEADROOM) -> dict[str, float]:
    """Nodes whose output reaches `limit` on `samples`: {node name: largest |value| seen}. The ranges come from
    onnxruntime's MinMax calibrator (reductions inside the graph: a scalar per tensor, not the tensors), run
    in priority-based order so that each tensor is reduced as soon as it exists (quantize.py `_restricted`:
    onnxruntime's default order keeps every calibrated tensor alive to the end of the run)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from .quantize import _quiet, _Replay, _restricted

    model = onnx.load(str(src), load_external_data=False)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    del model
    with tempfile.TemporaryDirectory() as scratch, _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # tensors that are NaN throughout (masked scores)
        calibrator = _restricted(MinMaxCalibrater, set(producer))(
            str(src), None, str(Path(scratch) / "augmented.onnx"), use_external_data_format=external)
        calibrator.augment_graph()
        calibrator.create_inference_session()
        calibrator.collect_data(_Replay(samples))
        ranges = calibrator.compute_data()
    out = {}
    for tensor, r in ranges.data.items():
        peak = max(abs(float(np.min(r.range_value[0]))), abs(float(np.max(r.range_value[1]))))
        if peak >= limit and tensor in producer:
            out[producer[tensor]] = max(out.get(producer[tensor], 0.0), peak)
    return out


def measure_islands(src: Path, samples: list[dict], threads: int = 1) -> dict:
    """The measured fp32 islands of the fp32 graph `src` on its captured `samples` (see the module docstring).
    Returns {"op_islands", "node_islands" (with the peak each reached), "dropped" (op types now fp16),
    "kept" (tried and needed: {op type: error}), "error_fixed", "error"}."""
    model = onnx.load(str(src))
    reference_session = _session(model, threads)
    reference = [reference_session.run(None, s) for s in samples]
    nodes = range_nodes(src, samples)
    present = {n.op_type for n in model.graph.node}
    kernel = tuple(o for o in KERNEL_ISLANDS if o in present)
    numeric = [o for o in NUMERIC_ISLANDS if o in present]
    error_fixed = _error(reference, convert(model, FP16_ISLANDS, tuple(nodes)), samples, threads)
    allowed = FP16_ERROR_SLACK * error_fixed + 1e-6
    islands, kept = list(numeric), {}
    for op in numeric:
        trial = tuple(o for o in islands if o != op) + kernel
        err = _error(reference, convert(model, trial, tuple(nodes)), samples, threads)
        if err <= allowed:
            islands.remove(op)
        else:
            kept[op] = err
    final = tuple(islands) + kernel
    return {"op_islands": list(final), "node_islands": {n: round(v, 1) for n, v in nodes.items()},
            "dropped": [o for o in numeric if o not in islands], "kept": kept, "error_fixed": error_fixed,
            "error": _error(reference, convert(model, final, tuple(nodes)), samples, threads)}


def to_fp16_measured(src: Path, dst: Path, samples: list[dict], threads: int = 1) -> dict:
    """Write `src` in fp16 with its measured islands to `dst`; returns what `measure_islands` found."""
    found = measure_islands(src, samples, threads)
    model = convert(onnx.load(str(src)), tuple(found["op_islands"]), tuple(found["node_islands"]))
    onnx.save_model(model, str(dst))
    return {"kind": "fp16 measured islands", **found}


def to_fp16_fixed(src: Path, dst: Path) -> dict:
    """`src` in fp16 with the fixed island list: a graph with no captured inputs to measure on."""
    model = onnx.load(str(src))
    present = sorted({n.op_type for n in model.graph.node} & set(FP16_ISLANDS))
    onnx.save_model(convert(model, FP16_ISLANDS), str(dst))
    return {"kind": "fp16 fixed islands", "op_islands": present, "node_islands": {}}
