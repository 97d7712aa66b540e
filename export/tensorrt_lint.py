"""What TensorRT's ONNX parser would reject, checked on the ONNX graphs without TensorRT: runs anywhere
(`tpo-export --check-tensorrt`), so an export made on a laptop learns about a graph TensorRT cannot take
before anyone copies it to a Jetson.

    problems = lint_manifest(Manifest.load("artifacts"))              # every graph, the manifest's dims
    problems = lint_for_tensorrt("artifacts/llm.onnx", manifest.dims)  # one graph file

Torch-free and TensorRT-free: only onnx is read. `lint_for_tensorrt` reads the graph structure (external
weights stay on disk) and reports, one line each, what TensorRT's ONNX parser (onnx-tensorrt, the operator
table in `tensorrt_ops`) rejects or silently changes:
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpo.contract import Dim, Manifest
from tpo.engine_cache import dim_range, tensorrt_version
from tpo.errors import TPOError

from .tensorrt_ops import (
    DATA_INPUTS,
    OPSET_RANGE,
    POW_INTS_SINCE,
    REJECTED_TYPES,
    RESIZE_COORDS,
    SUPPORTED_OPS,
    TABLE_VERSION,
    TRT_TYPES,
    UNSUPPORTED_OPS,
    type_name,
)
from .tensorrt_probe import in_folder, version_tuple

__all__ = ["lint_for_tensorrt", "lint_manifest"]


@dataclass
class _Scope:
    """Names visible in one graph: tensor types and which tensors are constants."""

    types: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)   # name -> TensorProto (maybe without data)

    def child(self) -> _Scope:
        return _Scope(dict(self.types), dict(self.constants))


class _Node:
    """One ONNX node as the restriction checks read it: its inputs, outputs and attributes."""

    def __init__(self, node, label: str):
        self.op, self.label = node.op_type, label
        self.ins, self.outs = list(node.input), list(node.output)
        self.attrs = {a.name: a for a in node.attribute}

    def i(self, name: str, default: int) -> int:
        return int(self.attrs[name].i) if name in self.attrs else default

    def s(self, name: str, default: str) -> str:
        return self.attrs[name].s.decode() if name in self.attrs else default

    def ints(self, name: str) -> list[int]:
        return list(self.attrs[name].ints) if name in self.attrs else []

    def has_in(self, k: int) -> bool:
        return len(self.ins) > k and bool(self.ins[k])

    def has_out(self, k: int) -> bool:
        return len(self.outs) > k and bool(self.outs[k])


class _Linter:
    def __init__(self, label: str, model, dims: Mapping[str, Dim], trt_version: str):
        self.label = label
        self.model = model
        self.dims = dims
        self.trt_version = trt_version
        self.trt = version_tuple(trt_version)
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
            if tt is None:
                self.report(f"input {vi.name!r}: not a tensor ({vi.type.WhichOneof('value')}); "
                            f"TensorRT takes tensors only")
            elif not tt.HasField("shape"):
                self.report(f"input {vi.name!r}: no shape (unknown rank); TensorRT needs the rank")
            else:
                for axis, d in enumerate(tt.shape.dim):
                    self.check_input_dim(vi.name, axis, d)

    def check_input_dim(self, name: str, axis: int, d) -> None:
        """One axis of a graph input: fixed, or named with a min/opt/max in the manifest's dims."""
        if d.HasField("dim_value"):
            return
        if not d.HasField("dim_param") or not d.dim_param:
            self.report(f"input {name!r} axis {axis}: dynamic dimension without a name, so no "
                        f"profile range can be given; name it in the export")
            return
        dim = self.dims.get(d.dim_param)
        if dim is None:
            self.report(f"input {name!r} axis {axis}: dimension {d.dim_param!r} has no min/opt/max in "
                        f"the manifest's dims, so no optimization profile covers it")
            return
        try:
            dim_range(d.dim_param, dim)
        except TPOError as e:
            self.report(str(e))

    # ---- one graph (main or subgraph)
    def check_graph(self, graph, outer: _Scope, where: str) -> None:
        scope = outer.child()
        io = [("input", vi) for vi in graph.input] + [("output", vi) for vi in graph.output]
        for kind, vi in io + [("tensor", vi) for vi in graph.value_info]:
            if vi.type.HasField("tensor_type"):
                if not vi.type.tensor_type.elem_type:
                    continue   # type left undefined (subgraph outputs may be): nothing to check
                tname = type_name(vi.type.tensor_type.elem_type)
                scope.types[vi.name] = tname
                self.check_tensor_type(f"{where}{kind} {vi.name!r}", tname)
            elif vi.type.WhichOneof("value") in ("sequence_type", "map_type", "optional_type", "sparse_tensor_type"):
                self.report(f"{where}{kind} {vi.name!r}: {vi.type.WhichOneof('value').replace('_', ' ')} values "
                            f"have no TensorRT equivalent")
        for init in graph.initializer:
            tname = type_name(init.data_type)
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
        elif tname not in TRT_TYPES:
            self.report(f"{what}: {tname} has no TensorRT data type")

    # ---- one node
    def node_label(self, node, index: int, where: str) -> str:
        if node.name:
            return f"{where}node {node.name!r} ({node.op_type})"
        produces = f" -> {node.output[0]!r}" if node.output else ""
        return f"{where}node #{index}{produces} ({node.op_type})"

    def check_node(self, node, index: int, scope: _Scope, where: str) -> None:
        n = _Node(node, self.node_label(node, index, where))
        if n.op == "Constant":   # outputs first: Constant values and types inferred for them
            self.check_constant(n, scope)
        if (node.domain, n.op) in self.functions:   # a model-local function: the parser expands it
            self.check_function(node.domain, n.op)
            return
        if not self.check_op_known(n, node.domain):
            return
        self.check_input_types(n, scope)
        self.check_casts(n)
        check = _RESTRICTIONS.get("Reduce" if n.op.startswith("Reduce") else n.op)
        if check is not None:
            check(self, n, scope)
        for a in node.attribute:   # subgraphs
            graphs = [a.g] if a.type == a.GRAPH else list(a.graphs) if a.type == a.GRAPHS else []
            for g in graphs:
                self.check_graph(g, scope, f"{where}{n.op} {node.name or '#' + str(index)} {a.name}: ")
        # remember output types that shape inference did not record (e.g. Cast inside a subgraph)
        if n.op == "Cast" and "to" in n.attrs and n.outs:
            scope.types.setdefault(n.outs[0], type_name(n.attrs["to"].i))

    def check_op_known(self, n: _Node, domain: str) -> bool:
        """Whether the parser has the operator at all (False: reported, nothing more to check on it)."""
        if domain not in ("", "ai.onnx"):
            self.report(f"{n.label}: custom-domain op {domain}::{n.op}; TensorRT's parser only accepts it "
                        f"through a TensorRT plugin of that name")
            return False
        if n.op in UNSUPPORTED_OPS:
            self.report(f"{n.label}: {n.op} is not supported: {UNSUPPORTED_OPS[n.op]}")
            return False
        since = SUPPORTED_OPS.get(n.op)
        if since is None:
            self.report(f"{n.label}: {n.op} is not in TensorRT {TABLE_VERSION}'s ONNX operator table")
            return False
        if since and self.trt and self.trt < version_tuple(since):
            self.report(f"{n.label}: {n.op} needs TensorRT {since} or newer (checking against {self.trt_version})")
        return True

    def check_input_types(self, n: _Node, scope: _Scope) -> None:
        """Types the parser refuses on the node's data inputs."""
        refused = REJECTED_TYPES.get(n.op, frozenset())
        if n.op == "Pow" and self.trt and self.trt < version_tuple(POW_INTS_SINCE):
            refused = refused | {"int32", "int64"}
        positions = DATA_INPUTS.get(n.op, (0,))
        picked = range(len(n.ins)) if positions == "all" else positions
        for k in picked:
            if not n.has_in(k):
                continue
            tname = scope.types.get(n.ins[k])
            if tname in refused:
                self.report(f"{n.label}: input {n.ins[k]!r} is {tname}, which TensorRT's {n.op} does not take")

    def check_casts(self, n: _Node) -> None:
        if n.op == "ConstantOfShape" and "value" in n.attrs:
            self.check_tensor_type(f"{n.label} value", type_name(n.attrs["value"].t.data_type))
        if n.op == "Cast" and "to" in n.attrs:
            target = type_name(n.attrs["to"].i)
            if target == "float64":
                self.report(f"{n.label}: Cast to float64 - TensorRT has no float64 (the parser narrows it to "
                            f"float32); cast to float32")
            elif target not in TRT_TYPES:
                self.report(f"{n.label}: Cast to {target}, which has no TensorRT data type")

    def check_function(self, domain: str, name: str) -> None:
        """A local function's body, once per function (its body sees only its own formal inputs)."""
        if (domain, name) in self.checked_functions:
            return
        self.checked_functions.add((domain, name))
        scope = _Scope()
        where = f"function {domain + '::' if domain else ''}{name}: "
        for j, inner in enumerate(self.functions[(domain, name)].node):
            self.check_node(inner, j, scope, where)

    def check_constant(self, n: _Node, scope: _Scope) -> None:
        for bad in ("sparse_value", "value_string", "value_strings"):
            if bad in n.attrs:
                self.report(f"{n.label}: Constant with {bad} is unsupported")
        if "value" in n.attrs and n.outs:
            t = n.attrs["value"].t
            tname = type_name(t.data_type)
            scope.types.setdefault(n.outs[0], tname)
            scope.constants[n.outs[0]] = t
            self.check_tensor_type(f"{n.label} value", tname)
        elif n.outs:
            scope.constants[n.outs[0]] = None   # a scalar/list Constant: known at build time

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


# ---------------------------------------------------------------- restrictions the operator table states
def _loop(lint: _Linter, n: _Node, scope: _Scope) -> None:
    scan_outputs = len(n.outs) - max(len(n.ins) - 2, 0)
    if scan_outputs > 0 and not (n.has_in(0) and lint.is_constant(n.ins[0], scope)):
        lint.report(f"{n.label}: {scan_outputs} scan output(s) with a trip count that is not a "
                    f"build-time constant; TensorRT needs a static scan-output length")


def _constant_input(k: int, what: str, why: str) -> Callable[[_Linter, _Node, _Scope], None]:
    def check(lint: _Linter, n: _Node, scope: _Scope) -> None:
        if n.has_in(k) and not lint.is_constant(n.ins[k], scope):
            lint.report(f"{n.label}: {what} {n.ins[k]!r} {why}")
    return check


def _topk(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.i("sorted", 1) != 1:
        lint.report(f"{n.label}: sorted=0 is unsupported")
    k = lint.constant_ints(n.ins[1], scope) if n.has_in(1) else None
    if k and k[0] >= 3840:
        lint.report(f"{n.label}: K={k[0]} is too large (TensorRT needs K < 3840)")


def _pool(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if any(d != 1 for d in n.ints("dilations")):
        lint.report(f"{n.label}: dilations {n.ints('dilations')} unsupported (must be all ones)")
    if n.op != "LpPool" and "kernel_shape" in n.attrs and len(n.ints("kernel_shape")) not in (2, 3):
        lint.report(f"{n.label}: {len(n.ints('kernel_shape'))}D pooling; TensorRT pools in 2D or 3D only")
    if n.op == "MaxPool" and n.has_out(1):
        lint.report(f"{n.label}: the Indices output is unsupported")


def _layer_norm(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.has_out(1) or n.has_out(2):
        lint.report(f"{n.label}: only output Y is supported (Mean/InvStdDev outputs are not)")


def _dropout(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.has_in(2):
        v = lint.constant_ints(n.ins[2], scope)
        if not lint.is_constant(n.ins[2], scope) or (v is not None and any(v)):
            lint.report(f"{n.label}: training_mode must be a constant false")


def _resize(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.i("antialias", 0):
        lint.report(f"{n.label}: antialias=1 is unsupported")
    mode = n.s("mode", "nearest")
    if mode not in ("nearest", "linear"):
        lint.report(f"{n.label}: mode {mode!r} is unsupported (nearest or linear)")
    coords = n.s("coordinate_transformation_mode", "half_pixel")
    if coords not in RESIZE_COORDS:
        lint.report(f"{n.label}: coordinate_transformation_mode {coords!r} is unsupported")
    policy = n.s("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        lint.report(f"{n.label}: keep_aspect_ratio_policy {policy!r} is unsupported (stretch only)")


def _scatter_nd(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.s("reduction", "none") != "none":
        lint.report(f"{n.label}: reduction {n.s('reduction', 'none')!r} is unsupported")


def _lstm(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.i("input_forget", 0) or n.i("layout", 0):
        lint.report(f"{n.label}: input_forget and layout must be 0")


def _attention(lint: _Linter, n: _Node, scope: _Scope) -> None:
    for k, what in ((4, "past_key"), (5, "past_value"), (6, "nonpad_kv_seqlen")):
        if n.has_in(k):
            lint.report(f"{n.label}: input {what} is unsupported")
    for k, what in ((1, "present_key"), (2, "present_value"), (3, "qk_matmul_output")):
        if n.has_out(k):
            lint.report(f"{n.label}: output {what} is unsupported")
    for a in ("qk_matmul_output_mode", "softcap"):
        if a in n.attrs and (n.attrs[a].i or n.attrs[a].f):
            lint.report(f"{n.label}: attribute {a} is unsupported")


def _tensor_scatter(lint: _Linter, n: _Node, scope: _Scope) -> None:
    if n.i("axis", -2) != -2:
        lint.report(f"{n.label}: axis must be -2")


def _stft(lint: _Linter, n: _Node, scope: _Scope) -> None:
    for k, what in ((1, "frame_step"), (2, "window")):
        if n.has_in(k) and not lint.is_constant(n.ins[k], scope):
            lint.report(f"{n.label}: {what} must be an initializer")


# op (every Reduce* op as "Reduce") -> its check
_RESTRICTIONS: dict[str, Callable[[_Linter, _Node, _Scope], None]] = {
    "Loop": _loop,
    "Reduce": _constant_input(1, "axes", "is not an initializer/Constant; TensorRT needs constant axes"),
    "CumSum": _constant_input(1, "axis", "is not a build-time constant"),
    "OneHot": _constant_input(1, "depth", "is not a build-time constant"),
    "TopK": _topk, "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "LayerNormalization": _layer_norm,
    "Dropout": _dropout, "Resize": _resize, "ScatterND": _scatter_nd, "LSTM": _lstm, "Attention": _attention,
    "TensorScatter": _tensor_scatter, "STFT": _stft,
}


# ------------------------------------------------------------------------------------------------ entry points
def lint_for_tensorrt(onnx_path: str | Path, dims: Mapping[str, Dim] | None,
                      trt_version: str | None = None) -> list[str]:
    """What TensorRT's ONNX parser would reject (or silently change) in this graph, one line each,
    naming the graph file and the node/tensor. Empty: nothing found. Reads the structure only.

    `dims`: the manifest's named-dimension ranges (every named input dimension needs one).
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


def lint_manifest(manifest: Manifest, root: str | Path | None = None, *, graphs: Iterable[str] | None = None,
                  trt_version: str | None = None) -> list[str]:
    """`lint_for_tensorrt` over the manifest's graphs (all, or `graphs`), with the manifest's dims: what
    `tpo-export --check-tensorrt` prints. The graph files are read from `root` (default: the folder the
    manifest was loaded from). A graph that is missing (from the manifest or on disk) or whose path leaves
    the artifacts folder is a problem line too."""
    manifest = in_folder(manifest, root, "lint_manifest")
    problems: list[str] = []
    for name in (list(graphs) if graphs is not None else list(manifest.graphs)):
        entry = manifest.graphs.get(name)
        if entry is None:
            problems.append(f"manifest: no graph {name!r} (has {sorted(manifest.graphs)})")
            continue
        try:
            path = manifest.path_of(entry)
        except TPOError as e:
            problems.append(str(e))
            continue
        if not path.is_file():
            problems.append(f"{path.name}: missing (graph {name})")
            continue
        problems.extend(lint_for_tensorrt(path, manifest.dims, trt_version))
    return problems
