"""The `tensorrt` export target: a lint of the ONNX graphs against TensorRT's ONNX parser, and engine builds.

Torch-free. Nothing here imports TensorRT (or polygraphy's TensorRT backend) before `gpu_probe()` has
found a GPU: on a machine without one, creating TensorRT objects can crash the process, so each missing
piece (GPU, TensorRT, polygraphy) becomes a `TensorRTUnavailable` with one line instead.

    problems = lint_for_tensorrt("artifacts/llm.onnx", manifest["dims"])   # runs anywhere
    built = build_engines(manifest, Path("artifacts"))                      # needs a GPU and TensorRT

The lint
--------
`lint_for_tensorrt` reads only the graph structure (external weights stay on disk) and reports, one line
each, what TensorRT's ONNX parser (onnx-tensorrt, operator table of TensorRT 10.15) rejects or silently
changes:
- operators outside the table, operators the table marks unsupported (sequence, string, optional,
  bitwise, integer-arithmetic quantized ops ...), operators newer than the TensorRT version checked
  against, and custom-domain operators (those need a TensorRT plugin of the same name);
- data types an operator refuses on its data inputs, where the importer's own checks or float-only layers
  say so (unary math and activations on integers, MatMul/Gemm/Conv/pooling/normalization/Softmax on
  integers, element-wise arithmetic on bool, And/Or/Xor/Not on non-bool); INT64 is native in TensorRT
  10 elsewhere (element-wise, comparison, shape, gather/scatter, reduction, Clip ...), so it is not flagged;
- tensor types TensorRT lacks (string, complex, int16, unsigned 16/32/64-bit, 8-bit float variants
  other than E4M3FN, ...), and float64 anywhere: the parser narrows float64 to float32 (clamping to
  +-FLT_MAX), so the engine would not compute what ONNX Runtime computed; Casts to float64 or to types
  without a TensorRT equivalent;
- restrictions in the table that the graph structure shows: Loop scan outputs with a trip count that is
  not a constant, reduction axes / CumSum axis / OneHot depth that are not constants, TopK unsorted or
  K >= 3840, MaxPool indices, pooling dilations, LayerNormalization's extra outputs, Resize modes,
  ScatterND reductions, Attention's KV-cache inputs/outputs, LSTM layout, Dropout in training mode;
- graph-input dimensions without a profile: a named dimension missing from the manifest's `dims`
  (or whose range is not ordered), or a dynamic dimension with no name at all;
- default-domain opsets outside 9..24.
Subgraphs (If/Loop/Scan bodies) and model-local functions are checked too.

Engines
-------
`build_engines` builds one engine per manifest graph through polygraphy's TensorRT API: one optimization
profile from the manifest's named dimensions (min/opt/max), a tactic timing cache shared by all builds
(default: `timing-trt<version>-<sm_XY>.cache` in the engine cache folder), and the cache of
`tpo.engine_cache` (key: ONNX sha256 x TensorRT version x compute capability x precision x profile).

Precision policy:
- fp32 graphs: a weakly typed network, no reduced-precision flags (TF32 off), so TensorRT computes what
  ONNX Runtime computed in the parity gate.
- fp16 graphs that carry their own types (float16 tensors, with explicit Casts around the fp32 islands,
  as the fp16 export writes them): a *strongly typed* network. TensorRT then keeps every tensor in its
  ONNX type, so the fp32 islands stay fp32 exactly as ONNX Runtime ran them; the fp16 builder flag is
  neither needed nor allowed there.
- fp16 graphs that are still all-float32: the fp16 builder flag on a weakly typed network; the graph's
  `fp32_islands` (ONNX op types such as "LayerNormalization", or node-name fragments) select ONNX nodes,
  and the TensorRT layers named after those nodes are pinned to fp32 with `precision_constraints="obey"`.
The export's fp16 conversion (float16 weights, Casts around the op types it keeps in fp32) always takes
the strongly typed path; the flag path is for hand-made or externally converted graphs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tpo import engine_cache as _cache
from tpo.engine_cache import (
    CachedEngine,
    EngineCache,
    GpuInfo,
    engine_cache_key,
    module_available,
    profile_from_dims,
    profile_to_json,
    tensorrt_version,
)
from tpo.errors import TPOError

__all__ = [
    "BuiltEngine", "EngineCache", "GpuInfo", "TensorRTBuildError", "TensorRTUnavailable", "build_engines",
    "engine_cache_key", "format_problems", "gpu_probe", "lint_for_tensorrt", "lint_manifest", "probe_tensorrt",
    "tensorrt_version",
    "TABLE_VERSION",
]

MIN_TENSORRT = (10, 0)   # INT64 bindings, execute_async_v3, strongly typed networks


class TensorRTUnavailable(TPOError):
    """The tensorrt target cannot run here: no GPU, no TensorRT or no polygraphy."""


class TensorRTBuildError(TPOError):
    """TensorRT refused a graph (parse or build failure)."""


def gpu_probe(ordinal: int = 0) -> GpuInfo | str:
    """CUDA device `ordinal` as a GpuInfo, or one line saying why there is none (cuda-bindings only)."""
    return _cache.gpu_probe(ordinal)


# ============================================================================================ the lint
# Which operators TensorRT's ONNX parser imports: onnx-tensorrt's operator table (docs/operators.md of
# TensorRT 10.15), as data: op -> the TensorRT version that added it ("" = 10.0 or older).
TABLE_VERSION = "10.15"
OPSET_RANGE = (9, 24)


def _words(text: str) -> list[str]:
    return text.split()


SUPPORTED_OPS: dict[str, str] = {
    **dict.fromkeys(_words(
        "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast "
        "CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv "
        "DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor "
        "Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater "
        "GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler "
        "InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop "
        "LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul "
        "Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear "
        "RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 "
        "ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu "
        "Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND "
        "Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt "
        "Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor"), ""),
    **dict.fromkeys(_words("BlackmanWindow HammingWindow HannWindow"), "10.4"),
    "STFT": "10.5",
    "Attention": "10.14",
    **dict.fromkeys(_words("RMSNormalization RotaryEmbedding TensorScatter"), "10.15"),
}

_UNSUPPORTED_REASONS = {
    "sequence types have no TensorRT equivalent": "ConcatFromSequence SequenceAt SequenceConstruct "
    "SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SplitToSequence",
    "string tensors have no TensorRT equivalent": "RegexFullMatch StringConcat StringNormalizer StringSplit "
    "TfIdfVectorizer",
    "optional types have no TensorRT equivalent": "Optional OptionalGetElement OptionalHasElement",
    "integer-arithmetic quantized ops are unsupported (use QuantizeLinear/DequantizeLinear)":
        "ConvInteger MatMulInteger QLinearConv QLinearMatMul DynamicQuantizeLinear",
    "bitwise ops are unsupported": "BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor",
    "unsupported by TensorRT's ONNX parser": "AffineGrid Bernoulli Col2Im CenterCropPad Compress DFT Det "
    "ImageDecoder MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss "
    "SoftmaxCrossEntropyLoss Unique",
}
UNSUPPORTED_OPS: dict[str, str] = {op: why for why, ops in _UNSUPPORTED_REASONS.items() for op in _words(ops)}

# Data types an operator refuses on its data inputs. Only refusals with firm evidence are listed: the
# importer's own type checks (onnx-tensorrt's onnxOpImporters.cpp/importerUtils.cpp: unary math ops take
# floats only, activations refuse integers, element-wise arithmetic refuses bool, And/Or/Xor/Not take bool
# only, MatMul/Gemm/PRelu refuse integers) and layers that compute in floating point only (convolution,
# pooling, normalization, softmax, einsum, recurrent). Where the operator table lists fewer types than the
# importer accepts (e.g. Clip and Relu on int64, Equal on bool), nothing is reported: no overclaiming.
_NON_FLOAT = frozenset({"bool", "int32", "int64", "uint8", "int8"})
_INTS_BOOL = frozenset({"bool", "int32", "int64", "uint8"})
_NON_BOOL = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "uint8", "int8"})


def _rejects(types: frozenset, names: str) -> dict[str, frozenset]:
    return dict.fromkeys(_words(names), types)


REJECTED_TYPES: dict[str, frozenset] = {
    **_rejects(_INTS_BOOL, "Exp Log Sqrt Reciprocal Sin Cos Tan Sinh Cosh Asin Acos Atan Asinh Acosh Atanh "
                           "Ceil Floor Erf Round Sigmoid Tanh Softplus Softsign Elu Selu LeakyRelu HardSigmoid "
                           "ThresholdedRelu ScaledTanh ParametricSoftplus PRelu"),
    **_rejects(_NON_FLOAT, "MatMul Gemm Conv ConvTranspose AveragePool MaxPool LpPool GlobalAveragePool "
                           "GlobalMaxPool GlobalLpPool BatchNormalization InstanceNormalization "
                           "LayerNormalization GroupNormalization Softmax LogSoftmax Einsum LRN RNN GRU LSTM "
                           "Hardmax"),
    **_rejects(frozenset({"bool", "uint8"}), "Abs Sign Neg Clip Add Sub Mul Div Max Min Sum Mean Greater "
                                             "Less GreaterOrEqual LessOrEqual Mod"),
    **_rejects(_NON_BOOL, "And Or Xor Not"),
    "Pow": frozenset({"bool", "uint8"}),   # integer Pow since TensorRT 10.8 (older: see _POW_INTS_SINCE)
}
_POW_INTS_SINCE = "10.8"

# Which inputs carry the data the refusals are about (default: input 0).
_DATA_INPUTS: dict[str, tuple[int, ...] | str] = {
    **dict.fromkeys(_words("Add Sub Mul Div Mod Max Min Sum Mean Greater GreaterOrEqual Less LessOrEqual "
                           "And Or Xor MatMul Einsum"), "all"),
    "Gemm": (0, 1), "PRelu": (0, 1),
}

# ONNX element types -> names; the ones TensorRT has no type for at all.
_ONNX_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 25: "uint2", 26: "int2",
    27: "float6e2m3", 28: "float6e3m2",
}
_TRT_TYPES = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "bool", "uint8", "int8",
                        "float8e4m3fn", "int4", "float4e2m1"})
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _type_name(elem_type: int) -> str:
    return _ONNX_TYPES.get(int(elem_type), f"type#{elem_type}")


@dataclass
class _Scope:
    """Names visible in one graph: tensor types and which tensors are constants."""

    types: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)   # name -> TensorProto (maybe without data)

    def child(self) -> _Scope:
        return _Scope(dict(self.types), dict(self.constants))


class _Linter:
    def __init__(self, label: str, model, dims: Mapping[str, Any], trt_version: str):
        self.label = label
        self.model = model
        self.dims = dims
        self.trt_version = trt_version
        self.trt = _version_tuple(trt_version)
        self.problems: list[str] = []
        self.seen: set[str] = set()
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.checked_functions: set[tuple[str, str]] = set()
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    def report(self, text: str) -> None:
        line = f"{self.label}: {text}"
        if line not in self.seen:
            self.seen.add(line)
            self.problems.append(line)

    # ---- whole model
    def run(self) -> list[str]:
        lo, hi = OPSET_RANGE
        if self.opset is None:
            self.report("no default-domain opset import; TensorRT's parser needs one")
        elif not lo <= self.opset <= hi:
            self.report(f"opset {self.opset} is outside {lo}..{hi}, the range TensorRT {TABLE_VERSION}'s parser covers")
        self.check_inputs(self.model.graph)
        self.check_graph(self.model.graph, _Scope(), "")
        return self.problems

    def check_inputs(self, graph) -> None:
        initializers = {t.name for t in graph.initializer}
        for vi in graph.input:
            if vi.name in initializers:
                continue
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None or not tt.HasField("shape"):
                if tt is None:
                    self.report(f"input {vi.name!r}: not a tensor ({vi.type.WhichOneof('value')}); "
                                f"TensorRT takes tensors only")
                else:
                    self.report(f"input {vi.name!r}: no shape (unknown rank); TensorRT needs the rank")
                continue
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    continue
                if not d.HasField("dim_param") or not d.dim_param:
                    self.report(f"input {vi.name!r} axis {axis}: dynamic dimension without a name, so no "
                                f"profile range can be given; name it in the export")
                    continue
                name = d.dim_param
                r = self.dims.get(name)
                if r is None:
                    self.report(f"input {vi.name!r} axis {axis}: dimension {name!r} has no min/opt/max in "
                                f"the manifest's dims, so no optimization profile covers it")
                    continue
                try:
                    lo, opt, hi = int(r["min"]), int(r["opt"]), int(r["max"])
                except (KeyError, TypeError, ValueError):
                    self.report(f"dimension {name!r}: range {r!r} lacks integer min/opt/max")
                    continue
                if not 0 <= lo <= opt <= hi:
                    self.report(f"dimension {name!r}: range min={lo} opt={opt} max={hi} is not ordered")

    # ---- one graph (main or subgraph)
    def check_graph(self, graph, outer: _Scope, where: str) -> None:
        scope = outer.child()
        io = [("input", vi) for vi in graph.input] + [("output", vi) for vi in graph.output]
        for kind, vi in io + [("tensor", vi) for vi in graph.value_info]:
            if vi.type.HasField("tensor_type"):
                if not vi.type.tensor_type.elem_type:
                    continue   # type left undefined (subgraph outputs may be): nothing to check
                tname = _type_name(vi.type.tensor_type.elem_type)
                scope.types[vi.name] = tname
                self.check_tensor_type(f"{where}{kind} {vi.name!r}", tname)
            elif vi.type.WhichOneof("value") in ("sequence_type", "map_type", "optional_type", "sparse_tensor_type"):
                self.report(f"{where}{kind} {vi.name!r}: {vi.type.WhichOneof('value').replace('_', ' ')} values "
                            f"have no TensorRT equivalent")
        for init in graph.initializer:
            tname = _type_name(init.data_type)
            scope.types[init.name] = tname
            scope.constants[init.name] = init
            self.check_tensor_type(f"{where}initializer {init.name!r}", tname)
        for init in graph.sparse_initializer:
            self.report(f"{where}sparse initializer {init.values.name!r}: sparse tensors are unsupported")
        for i, node in enumerate(graph.node):
            self.check_node(node, i, scope, where)

    def check_tensor_type(self, what: str, tname: str) -> None:
        if tname == "float64":
            self.report(f"{what}: float64 - TensorRT has no float64, its parser narrows it to float32 "
                        f"(clamping to +-FLT_MAX); export it as float32")
        elif tname not in _TRT_TYPES:
            self.report(f"{what}: {tname} has no TensorRT data type")

    def node_label(self, node, index: int, where: str) -> str:
        if node.name:
            return f"{where}node {node.name!r} ({node.op_type})"
        produces = f" -> {node.output[0]!r}" if node.output else ""
        return f"{where}node #{index}{produces} ({node.op_type})"

    def check_node(self, node, index: int, scope: _Scope, where: str) -> None:
        label = self.node_label(node, index, where)
        op = node.op_type
        attrs = {a.name: a for a in node.attribute}

        # outputs first: Constant values and types inferred for them
        if op == "Constant":
            self.check_constant(node, label, attrs, scope)

        domain = node.domain
        if (domain, op) in self.functions:   # a model-local function: the parser expands it
            self.check_function(domain, op)
            return
        if domain not in ("", "ai.onnx"):
            self.report(f"{label}: custom-domain op {domain}::{op}; TensorRT's parser only accepts it "
                        f"through a TensorRT plugin of that name")
            return

        if op in UNSUPPORTED_OPS:
            self.report(f"{label}: {op} is not supported: {UNSUPPORTED_OPS[op]}")
            return
        entry = SUPPORTED_OPS.get(op)
        if entry is None:
            self.report(f"{label}: {op} is not in TensorRT {TABLE_VERSION}'s ONNX operator table")
            return
        since = entry
        if since and self.trt and self.trt < _version_tuple(since):
            self.report(f"{label}: {op} needs TensorRT {since} or newer (checking against {self.trt_version})")

        # types the parser refuses on the data inputs
        refused = REJECTED_TYPES.get(op, frozenset())
        if op == "Pow" and self.trt and self.trt < _version_tuple(_POW_INTS_SINCE):
            refused = refused | {"int32", "int64"}
        positions = _DATA_INPUTS.get(op, (0,))
        picked = range(len(node.input)) if positions == "all" else positions
        for k in picked:
            if k >= len(node.input) or not node.input[k]:
                continue
            tname = scope.types.get(node.input[k])
            if tname in refused:
                self.report(f"{label}: input {node.input[k]!r} is {tname}, which TensorRT's {op} does not take")
        if op == "ConstantOfShape" and "value" in attrs:
            self.check_tensor_type(f"{label} value", _type_name(attrs["value"].t.data_type))
        if op == "Cast" and "to" in attrs:
            target = _type_name(attrs["to"].i)
            if target == "float64":
                self.report(f"{label}: Cast to float64 - TensorRT has no float64 (the parser narrows it to "
                            f"float32); cast to float32")
            elif target not in _TRT_TYPES:
                self.report(f"{label}: Cast to {target}, which has no TensorRT data type")

        self.check_restrictions(node, label, attrs, scope)

        # subgraphs
        for a in node.attribute:
            if a.type == a.GRAPH:
                self.check_graph(a.g, scope, f"{where}{op} {node.name or '#' + str(index)} {a.name}: ")
            elif a.type == a.GRAPHS:
                for g in a.graphs:
                    self.check_graph(g, scope, f"{where}{op} {node.name or '#' + str(index)} {a.name}: ")

        # remember output types that shape inference did not record (e.g. Cast inside a subgraph)
        if op == "Cast" and "to" in attrs and node.output:
            scope.types.setdefault(node.output[0], _type_name(attrs["to"].i))

    def check_function(self, domain: str, name: str) -> None:
        """A local function's body, once per function (its body sees only its own formal inputs)."""
        if (domain, name) in self.checked_functions:
            return
        self.checked_functions.add((domain, name))
        scope = _Scope()
        where = f"function {domain + '::' if domain else ''}{name}: "
        for j, inner in enumerate(self.functions[(domain, name)].node):
            self.check_node(inner, j, scope, where)

    def check_constant(self, node, label: str, attrs, scope: _Scope) -> None:
        for bad in ("sparse_value", "value_string", "value_strings"):
            if bad in attrs:
                self.report(f"{label}: Constant with {bad} is unsupported")
        if "value" in attrs and node.output:
            t = attrs["value"].t
            tname = _type_name(t.data_type)
            scope.types.setdefault(node.output[0], tname)
            scope.constants[node.output[0]] = t
            self.check_tensor_type(f"{label} value", tname)
        elif node.output:
            scope.constants[node.output[0]] = None   # a scalar/list Constant: known at build time

    def is_constant(self, name: str, scope: _Scope) -> bool:
        return name in scope.constants

    def constant_ints(self, name: str, scope: _Scope) -> list[int] | None:
        t = scope.constants.get(name)
        if t is None or t.data_location == 1:   # external data: not loaded
            return None
        try:
            from onnx import numpy_helper

            return [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
        except Exception:   # odd encodings: the value is just not known here
            return None

    def check_restrictions(self, node, label: str, attrs, scope: _Scope) -> None:
        op, ins, outs = node.op_type, list(node.input), list(node.output)

        def attr_i(name: str, default: int) -> int:
            return int(attrs[name].i) if name in attrs else default

        def attr_s(name: str, default: str) -> str:
            return attrs[name].s.decode() if name in attrs else default

        def attr_ints(name: str) -> list[int]:
            return list(attrs[name].ints) if name in attrs else []

        def has(seq: list[str], k: int) -> bool:
            return len(seq) > k and bool(seq[k])

        if op == "Loop":
            n_carried = max(len(ins) - 2, 0)
            scan_outputs = len(outs) - n_carried
            if scan_outputs > 0 and not (has(ins, 0) and self.is_constant(ins[0], scope)):
                self.report(f"{label}: {scan_outputs} scan output(s) with a trip count that is not a "
                            f"build-time constant; TensorRT needs a static scan-output length")
        elif op.startswith("Reduce") and has(ins, 1) and not self.is_constant(ins[1], scope):
            self.report(f"{label}: axes {ins[1]!r} is not an initializer/Constant; TensorRT needs constant axes")
        elif op == "CumSum" and has(ins, 1) and not self.is_constant(ins[1], scope):
            self.report(f"{label}: axis {ins[1]!r} is not a build-time constant")
        elif op == "OneHot" and has(ins, 1) and not self.is_constant(ins[1], scope):
            self.report(f"{label}: depth {ins[1]!r} is not a build-time constant")
        elif op == "TopK":
            if attr_i("sorted", 1) != 1:
                self.report(f"{label}: sorted=0 is unsupported")
            k = self.constant_ints(ins[1], scope) if has(ins, 1) else None
            if k and k[0] >= 3840:
                self.report(f"{label}: K={k[0]} is too large (TensorRT needs K < 3840)")
        elif op in ("MaxPool", "AveragePool", "LpPool"):
            if any(d != 1 for d in attr_ints("dilations")):
                self.report(f"{label}: dilations {attr_ints('dilations')} unsupported (must be all ones)")
            if op != "LpPool" and "kernel_shape" in attrs and len(attr_ints("kernel_shape")) not in (2, 3):
                self.report(f"{label}: {len(attr_ints('kernel_shape'))}D pooling; TensorRT pools in 2D or 3D only")
            if op == "MaxPool" and has(outs, 1):
                self.report(f"{label}: the Indices output is unsupported")
        elif op == "LayerNormalization" and (has(outs, 1) or has(outs, 2)):
            self.report(f"{label}: only output Y is supported (Mean/InvStdDev outputs are not)")
        elif op == "Dropout" and has(ins, 2):
            v = self.constant_ints(ins[2], scope)
            if not self.is_constant(ins[2], scope) or (v is not None and any(v)):
                self.report(f"{label}: training_mode must be a constant false")
        elif op == "Resize":
            if attr_i("antialias", 0):
                self.report(f"{label}: antialias=1 is unsupported")
            mode = attr_s("mode", "nearest")
            if mode not in ("nearest", "linear"):
                self.report(f"{label}: mode {mode!r} is unsupported (nearest or linear)")
            coords = attr_s("coordinate_transformation_mode", "half_pixel")
            if coords not in _RESIZE_COORDS:
                self.report(f"{label}: coordinate_transformation_mode {coords!r} is unsupported")
            policy = attr_s("keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                self.report(f"{label}: keep_aspect_ratio_policy {policy!r} is unsupported (stretch only)")
        elif op == "ScatterND" and attr_s("reduction", "none") != "none":
            self.report(f"{label}: reduction {attr_s('reduction', 'none')!r} is unsupported")
        elif op == "LSTM" and (attr_i("input_forget", 0) or attr_i("layout", 0)):
            self.report(f"{label}: input_forget and layout must be 0")
        elif op == "Attention":
            for k, what in ((4, "past_key"), (5, "past_value"), (6, "nonpad_kv_seqlen")):
                if has(ins, k):
                    self.report(f"{label}: input {what} is unsupported")
            for k, what in ((1, "present_key"), (2, "present_value"), (3, "qk_matmul_output")):
                if has(outs, k):
                    self.report(f"{label}: output {what} is unsupported")
            for a in ("qk_matmul_output_mode", "softcap"):
                if a in attrs and (attrs[a].i or attrs[a].f):
                    self.report(f"{label}: attribute {a} is unsupported")
        elif op == "TensorScatter" and attr_i("axis", -2) != -2:
            self.report(f"{label}: axis must be -2")
        elif op == "STFT":
            for k, what in ((1, "frame_step"), (2, "window")):
                if has(ins, k) and not self.is_constant(ins[k], scope):
                    self.report(f"{label}: {what} must be an initializer")


def lint_for_tensorrt(onnx_path: str | Path, dims: Mapping[str, Any] | None,
                      trt_version: str | None = None) -> list[str]:
    """What TensorRT's ONNX parser would reject (or silently change) in this graph, one line each,
    naming the graph file and the node/tensor. Empty: nothing found. Reads the structure only.

    `trt_version`: the TensorRT to check against (ops newer than it are reported); default: the
    installed one, else the operator table's (10.15)."""
    import onnx

    path = Path(onnx_path)
    label = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:   # protobuf raises DecodeError and others
        return [f"{label}: not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:   # custom ops or odd graphs: lint what is declared
        inferred = model
    version = trt_version or tensorrt_version() or TABLE_VERSION
    return _Linter(label, inferred, dims or {}, version).run()


def lint_manifest(manifest: Mapping[str, Any], root: str | Path, graphs: Iterable[str] | None = None,
                  trt_version: str | None = None) -> list[str]:
    """`lint_for_tensorrt` over the manifest's graphs (all, or `graphs`), with the manifest's dims: what
    `tpo-export --check-tensorrt` prints. A graph file that is missing is a problem line too."""
    entries = manifest["graphs"]
    dims = manifest.get("dims", {})
    problems: list[str] = []
    for name in (list(graphs) if graphs is not None else list(entries)):
        if name not in entries:
            problems.append(f"manifest: no graph {name!r} (has {sorted(entries)})")
            continue
        path = Path(root) / entries[name]["file"]
        if not path.is_file():
            problems.append(f"{path.name}: missing (graph {name})")
            continue
        problems.extend(lint_for_tensorrt(path, dims, trt_version))
    return problems


# ============================================================================================ engines
@dataclass(frozen=True)
class BuiltEngine:
    graph: str
    key: str
    engine: Path
    metadata_path: Path
    metadata: dict[str, Any]
    reused: bool          # taken from the cache, not built now

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "engine": str(self.engine), "metadata": str(self.metadata_path),
                "reused": self.reused, "build_seconds": self.metadata.get("build_seconds")}


@dataclass(frozen=True)
class _Plan:
    graph: str
    onnx: Path
    sha256: str
    precision: str
    profile: dict
    strongly_typed: bool
    fp16_flag: bool
    fp32_islands: tuple[str, ...]
    key: str


def _carries_float16(onnx_path: Path) -> bool:
    """Whether the graph types tensors as float16 itself (fp16 export with explicit fp32-island Casts)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    f16 = onnx.TensorProto.FLOAT16
    g = model.graph
    if any(t.data_type == f16 for t in g.initializer):
        return True
    if any(vi.type.tensor_type.elem_type == f16 for vi in [*g.input, *g.output] if vi.type.HasField("tensor_type")):
        return True
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == f16:
                return True
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == f16:
                return True
    return False


def probe_tensorrt(gpu_ordinal: int = 0) -> GpuInfo:
    """Whether the tensorrt target can run here, asked before any export work: GPU first (the driver
    only), then whether TensorRT and polygraphy are installed and TensorRT's version (package metadata).
    Creates no TensorRT object and imports TensorRT only where a GPU was found and no metadata names its
    version (JetPack's apt package). Each missing piece is one TensorRTUnavailable line."""
    if not module_available("cuda.bindings"):
        from tpo.kernels.path import without_bindings

        _, why = without_bindings()     # "no GPU present: ..." never comes with an install hint
        raise TensorRTUnavailable(f"tensorrt target: {why}")
    gpu = gpu_probe(gpu_ordinal)
    if isinstance(gpu, str):
        raise TensorRTUnavailable(f"tensorrt target: no GPU ({gpu})")
    if not module_available("tensorrt"):
        raise TensorRTUnavailable(
            "tensorrt target: TensorRT is not installed (pip install tensorrt on a machine with NVIDIA's "
            "index, or JetPack's python3-libnvinfer on Jetson)"
        )
    if not module_available("polygraphy"):
        raise TensorRTUnavailable("tensorrt target: polygraphy is not installed (pip install polygraphy)")
    version = tensorrt_version()
    if version is not None and _version_tuple(version) < MIN_TENSORRT:
        raise TensorRTUnavailable(f"tensorrt target: TensorRT {version} is too old "
                                  f"(need {'.'.join(map(str, MIN_TENSORRT))} or newer)")
    return gpu


def _check_tensorrt(gpu_ordinal: int) -> tuple[GpuInfo, Any]:
    """`probe_tensorrt`, then TensorRT imported; each missing piece is one TensorRTUnavailable line."""
    gpu = probe_tensorrt(gpu_ordinal)
    try:
        import tensorrt as trt
    except Exception as e:   # a broken install: missing libnvinfer, CUDA mismatch
        raise TensorRTUnavailable(f"tensorrt target: TensorRT failed to import ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        raise TensorRTUnavailable(f"tensorrt target: TensorRT {trt.__version__} is too old "
                                  f"(need {'.'.join(map(str, MIN_TENSORRT))} or newer)")
    return gpu, trt


def _plan(manifest: Mapping[str, Any], root: Path, gpu: GpuInfo, trt_version: str,
          graphs: Iterable[str] | None) -> list[_Plan]:
    dims = manifest.get("dims", {})
    entries = manifest["graphs"]
    names = list(graphs) if graphs is not None else list(entries)
    plans = []
    for name in names:
        if name not in entries:
            raise TPOError(f"tensorrt target: the manifest has no graph {name!r} (has {sorted(entries)})")
        g = entries[name]
        path = root / g["file"]
        if not path.is_file():
            raise TPOError(f"{path}: missing (graph {name} of the manifest in {root})")
        precision = g.get("precision", manifest.get("precision", "fp32"))
        if precision not in ("fp32", "fp16"):
            raise TPOError(f"graph {name}: precision {precision!r} has no TensorRT build here (fp32, fp16)")
        profile = profile_from_dims(g["inputs"], dims, name)
        typed16 = precision == "fp16" and _carries_float16(path)
        key = engine_cache_key(g["sha256"], trt_version, gpu.compute_capability, precision, profile)
        plans.append(_Plan(name, path, g["sha256"], precision, profile, strongly_typed=typed16,
                           fp16_flag=precision == "fp16" and not typed16,
                           fp32_islands=tuple(str(i) for i in (g.get("fp32_islands") or ())), key=key))
    return plans


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _island_nodes(onnx_path: Path, islands: tuple[str, ...]) -> set[str]:
    """Names of the ONNX nodes an island selects: by op type, else by a fragment of the node name."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    wanted = set(islands)
    return {n.name for n in graph.node if n.name and (n.op_type in wanted or any(i in n.name for i in islands))}


def _pin_islands(trt, network, nodes: set[str]) -> int:
    """Pin the layers made from `nodes` (TensorRT names a node's layers after it) to float32."""
    floats = {trt.float32, trt.float16}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        origin = f"{layer.name} {getattr(layer, 'metadata', '') or ''}"
        if not any(node in origin for node in nodes):
            continue
        if not all(layer.get_output(j).dtype in floats for j in range(layer.num_outputs)):
            continue   # shape/index layers: nothing to pin
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _build_one(plan: _Plan, trt, timing_cache: Path | None, progress: Callable[[str], None]) -> tuple[bytes, dict]:
    """Parse and build one engine with polygraphy; returns (engine bytes, build facts)."""
    from polygraphy.backend.trt import (
        CreateConfig,
        Profile,
        engine_bytes_from_network,
        network_from_onnx_path,
    )
    from polygraphy.exception import PolygraphyException

    facts: dict[str, Any] = {}
    try:
        builder, network, parser = network_from_onnx_path(str(plan.onnx), strongly_typed=plan.strongly_typed)
    except PolygraphyException as e:
        raise TensorRTBuildError(f"graph {plan.graph}: TensorRT's ONNX parser rejected {plan.onnx.name}: "
                                 f"{_first_line(e)} (see tpo-export --check-tensorrt)") from None
    constraints = None
    if plan.fp16_flag and plan.fp32_islands:
        pinned = _pin_islands(trt, network, _island_nodes(plan.onnx, plan.fp32_islands))
        facts["fp32_layers_pinned"] = pinned
        if pinned:
            constraints = "obey"
        else:
            progress(f"graph {plan.graph}: no layer matched its fp32 islands {list(plan.fp32_islands)}")
    profile = Profile()
    for name, (lo, opt, hi) in plan.profile.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    load_cache = str(timing_cache) if timing_cache is not None and timing_cache.is_file() else None
    config = CreateConfig(fp16=plan.fp16_flag, tf32=False, profiles=[profile], load_timing_cache=load_cache,
                          precision_constraints=constraints)
    try:
        data = engine_bytes_from_network((builder, network, parser), config=config,
                                         save_timing_cache=str(timing_cache) if timing_cache else None)
    except PolygraphyException as e:
        raise TensorRTBuildError(f"graph {plan.graph}: TensorRT could not build an engine: {_first_line(e)}") from None
    return bytes(memoryview(data)), facts


def build_engines(manifest: Mapping[str, Any], root: str | Path, cache: EngineCache | None = None,
                  timing_cache: str | Path | None = None, progress: Callable[[str], None] | None = None,
                  graphs: Iterable[str] | None = None, device: int = 0,
                  rebuild: bool = False) -> dict[str, BuiltEngine]:
    """Build (or take from `cache`) one TensorRT engine per manifest graph; graph name -> BuiltEngine.

    `manifest` is the manifest's dict and `root` its folder. Probes the GPU first, then TensorRT:
    without them this raises `TensorRTUnavailable` before anything TensorRT is imported. `timing_cache`
    (default: one per TensorRT version and GPU architecture in the engine cache folder) is read and
    extended by every build."""
    say = progress or (lambda _msg: None)
    gpu, trt = _check_tensorrt(device)
    if device:
        from cuda.bindings import runtime as cudart

        cudart.cudaSetDevice(device)
    cache = cache or EngineCache()
    trt_version = str(trt.__version__)
    default_timing = cache.root / f"timing-trt{trt_version}-{gpu.compute_capability}.cache"
    timing = Path(timing_cache) if timing_cache is not None else default_timing
    timing.parent.mkdir(parents=True, exist_ok=True)
    plans = _plan(manifest, Path(root), gpu, trt_version, graphs)
    try:
        from importlib import metadata

        polygraphy_version = metadata.version("polygraphy")
    except Exception:
        polygraphy_version = None

    built: dict[str, BuiltEngine] = {}
    for plan in plans:
        hit: CachedEngine | None = None if rebuild else cache.lookup(plan.key)
        if hit is not None:
            say(f"graph {plan.graph}: engine {hit.engine.name} from the cache")
            built[plan.graph] = BuiltEngine(plan.graph, plan.key, hit.engine, hit.metadata_path, hit.metadata, True)
            continue
        mode = ("strongly typed" if plan.strongly_typed else "fp16 flag" if plan.fp16_flag else "fp32")
        say(f"graph {plan.graph}: building a TensorRT {trt_version} engine for {gpu.compute_capability} ({mode})")
        start = time.perf_counter()
        data, facts = _build_one(plan, trt, timing, say)
        seconds = time.perf_counter() - start
        meta = {
            "graph": plan.graph, "onnx_file": plan.onnx.name, "onnx_sha256": plan.sha256,
            "tensorrt_version": trt_version, "compute_capability": gpu.compute_capability, "gpu": gpu.name,
            "precision": plan.precision, "strongly_typed": plan.strongly_typed, "fp16_flag": plan.fp16_flag,
            "fp32_islands": list(plan.fp32_islands), "profiles": [profile_to_json(plan.profile)],
            "build_seconds": round(seconds, 3), "polygraphy_version": polygraphy_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **facts,
        }
        entry = cache.store(plan.key, data, meta)
        say(f"graph {plan.graph}: {entry.engine.name} ({len(data) / 2**20:.1f} MiB, {seconds:.1f} s)")
        built[plan.graph] = BuiltEngine(plan.graph, plan.key, entry.engine, entry.metadata_path, entry.metadata, False)
    return built


def format_problems(problems: list[str]) -> str:
    """The lint's lines as printed by `tpo-export --check-tensorrt` (one per problem)."""
    return "\n".join(problems) if problems else "tensorrt check: no problems found"

