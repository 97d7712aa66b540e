"""The floor: FLOPs and bytes per graph, counted from the ONNX graph at the shapes actually fed, over the
machine's measured peak.

Counting (`count_graph(path, input_shapes)`): the graph's inputs are pinned to the concrete shapes, ONNX shape
inference fills every intermediate shape, then per node:
- MatMul [.., M, K] x [.., K, N]: 2*M*N*K per batch element (broadcast batch of the output);
- Gemm: 2*M*N*K; Conv: 2 * N * Cout * prod(out spatial) * Cin/group * prod(kernel); ConvTranspose likewise
  on the input side; Einsum: 2 * the product of every index's size; Attention (opset 23 / com.microsoft):
  4 * B * heads * Sq * Skv * head_dim (QK^T and PV);
- every other node: one FLOP per output element ("elementwise", a lower bound).
Bytes: weights (initializers, read once per call) + graph inputs + graph outputs: the traffic no
implementation can avoid. `activation_bytes` (every node's output written once) is reported beside it as
what an unfused implementation moves.

The floor of a call is max(FLOPs / peak FLOP/s, bytes / peak bandwidth), with the peaks measured here:
`measure_peak()` times a float32 numpy matmul (BLAS, the threads numpy was given) and a large memcpy.
A stage at 10x its floor has room to improve; one near 1x does not.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MATMUL_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "Attention", "MultiHeadAttention",
              "FusedMatMul")
ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}   # TensorProto


@dataclass
class GraphCount:
    flops: float = 0.0                 # matmul-like + elementwise
    matmul_flops: float = 0.0
    elementwise_flops: float = 0.0
    weight_bytes: int = 0
    io_bytes: int = 0
    activation_bytes: int = 0
    nodes: int = 0
    uncounted: list[str] = field(default_factory=list)   # matmul-like nodes whose shapes were not inferred

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.io_bytes

    def to_dict(self) -> dict:
        return {"flops": self.flops, "matmul_flops": self.matmul_flops, "elementwise_flops": self.elementwise_flops,
                "bytes": self.bytes, "weight_bytes": self.weight_bytes, "io_bytes": self.io_bytes,
                "activation_bytes": self.activation_bytes, "nodes": self.nodes,
                "uncounted": self.uncounted[:10], "uncounted_count": len(self.uncounted)}


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _shape(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return dims


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _external_weights_as_inputs(m) -> None:
    """Weights kept in a side file (a graph loaded without its data, as counting does) become typed graph inputs
    of their shape: shape inference needs their dims only, and both inferencers otherwise try to open the side
    file relative to the working folder and give up (every MatMul of a full-size graph was left uncounted)."""
    import onnx

    external = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for t in external:
        m.graph.initializer.remove(t)
        m.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def pin_inputs(model, input_shapes: dict[str, tuple[int, ...]]):
    """A copy of `model` with its inputs fixed to `input_shapes` and every shape inferred from them
    (onnxruntime's symbolic shape inference, which follows Reshape/Concat data; onnx's as the fallback)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for out in m.graph.output:           # outputs re-inferred too (named dims would otherwise stay symbolic)
        out.type.tensor_type.ClearField("shape")
    for inp in m.graph.input:
        if inp.name not in input_shapes:
            continue
        shape = inp.type.tensor_type.shape
        shape.ClearField("dim")
        for d in input_shapes[inp.name]:
            shape.dim.add().dim_value = int(d)
    _external_weights_as_inputs(m)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=True)
    except Exception:                     # noqa: BLE001  (any failure: onnx's own inference)
        pass
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:                     # noqa: BLE001
        return onnx.shape_inference.infer_shapes(m)


def probe_shapes(model, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """Shapes of the tensors `names`, by running `model` once in onnxruntime with them as extra outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # keep every tensor
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    np_types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                "tensor(bool)": np.bool_, "tensor(int32)": np.int32}
    feed = {k: np.asarray(v, dtype=np_types.get(types[k])) for k, v in feeds.items() if k in types}
    outs = sess.run(names, feed)
    return {n: list(np.shape(o)) for n, o in zip(names, outs, strict=True)}


def count_model(model, input_shapes: dict[str, tuple[int, ...]],
                feeds: dict[str, np.ndarray] | None = None) -> GraphCount:
    """FLOPs and bytes of an in-memory ONNX model fed inputs of `input_shapes` (see the module docstring).
    With `feeds` (arrays of those shapes), shapes inference left unknown around matmul-like nodes are
    read from one onnxruntime run instead of being left uncounted."""
    m = pin_inputs(model, input_shapes)
    g = m.graph
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _shape(vi)
        if s is not None:
            shapes[vi.name] = s
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        dtypes[init.name] = init.data_type
    if feeds is not None:
        missing = sorted({t for node in g.node if node.op_type in MATMUL_OPS
                          for t in list(node.input) + list(node.output) if t and t not in shapes})
        if missing:
            with contextlib.suppress(Exception):   # a failed probe: those nodes are counted as unknown
                shapes.update(probe_shapes(model, missing, feeds))
    c = GraphCount()
    weights = model.graph.initializer              # the original's: pinning turned side-file weights into inputs
    c.weight_bytes = sum(_prod(i.dims) * ELEM_BYTES.get(i.data_type, 4) for i in weights)
    inits = {i.name for i in weights}
    for vi in list(g.input) + list(g.output):
        if vi.name in inits:
            continue
        s = shapes.get(vi.name)
        if s is not None:
            c.io_bytes += _prod(s) * ELEM_BYTES.get(dtypes.get(vi.name, 1), 4)
    for node in g.node:
        c.nodes += 1
        named = [o for o in node.output if o]      # an optional output left out has the empty name
        outs = [shapes.get(o) for o in named]
        for o, s in zip(named, outs, strict=True):
            if s is not None:
                c.activation_bytes += _prod(s) * ELEM_BYTES.get(dtypes.get(o, 1), 4)
        if node.op_type in MATMUL_OPS:
            f = node_flops(node, [shapes.get(i) for i in node.input], outs)
            if f is None:
                c.uncounted.append(f"{node.op_type}:{node.name}")
            else:
                c.matmul_flops += f
        elif outs and outs[0] is not None:
            c.elementwise_flops += _prod(outs[0])
    c.flops = c.matmul_flops + c.elementwise_flops
    return c


def node_flops(node, ins: list[list[int] | None], outs: list[list[int] | None]) -> float | None:
    op = node.op_type
    if op in ("MatMul", "FusedMatMul"):
        a, b = ins[0], ins[1]
        if a is None or b is None:
            return None
        a2 = [1, a[0]] if len(a) == 1 else a
        b2 = [b[0], 1] if len(b) == 1 else b
        m, k, n = a2[-2], a2[-1], b2[-1]
        batch = _prod(np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))) if len(a2) > 2 or len(b2) > 2 else 1
        return 2.0 * batch * m * n * k
    if op == "Gemm":
        a, b = ins[0], ins[1]
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return 2.0 * m * n * k
    if op == "Conv":
        w, y = ins[1], outs[0] if outs else None
        if w is None or y is None:
            return None
        return 2.0 * y[0] * y[1] * _prod(y[2:]) * w[1] * _prod(w[2:])
    if op == "ConvTranspose":
        x, w = ins[0], ins[1]
        if x is None or w is None:
            return None
        return 2.0 * x[0] * x[1] * _prod(x[2:]) * w[1] * _prod(w[2:])     # w: [Cin, Cout/group, k...]
    if op == "Einsum":
        eq = _attr(node, "equation")
        if eq is None or any(s is None for s in ins):
            return None
        eq = eq.decode() if isinstance(eq, bytes) else eq
        lhs = eq.replace(" ", "").split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for term, s in zip(lhs, ins, strict=True):
            letters = term.replace("...", "")
            for ch, d in zip(letters[::-1], s[::-1], strict=False):
                sizes[ch] = max(sizes.get(ch, 1), int(d))
        return 2.0 * _prod(sizes.values())
    if op in ("Attention", "MultiHeadAttention"):
        q, k = ins[0], ins[1] if len(ins) > 1 else None
        if q is None or k is None or len(q) != 4 or len(k) != 4:
            return None
        b, h, sq, d = q
        return 4.0 * b * h * sq * k[2] * d
    return None


def count_graph(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
                feeds: dict[str, np.ndarray] | None = None) -> GraphCount:
    """Count the graph at `path` for inputs of `input_shapes` (default: the shapes of `feeds`)."""
    import onnx

    if input_shapes is None:
        if feeds is None:
            raise ValueError("count_graph needs input_shapes or feeds")
        input_shapes = {k: tuple(np.shape(v)) for k, v in feeds.items()}
    return count_model(onnx.load(str(path)), input_shapes, feeds)


# ------------------------------------------------------------------------------------------ the peaks
def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int = 1024, repeats: int = 5, dtype=np.float32) -> float:
    """FLOP/s of the best of `repeats` n x n x n matmuls (BLAS, numpy's own thread count)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    return 2.0 * n ** 3 / best_seconds(lambda: a @ b, repeats)


def copy_bandwidth(mbytes: int = 128, repeats: int = 5) -> float:
    """Bytes/s of the best of `repeats` copies of `mbytes` MiB (read + write counted)."""
    src = np.ones(mbytes * (1 << 20) // 4, np.float32)
    dst = np.empty_like(src)
    return 2.0 * src.nbytes / best_seconds(lambda: np.copyto(dst, src), repeats)


def measure_peak(quick: bool = False) -> dict[str, float]:
    """Best observed float32 matmul FLOP/s (numpy's BLAS, and PyTorch's when it is loaded: the faster of the
    two is the floor's peak) and memcpy bytes/s. Best of several repeats: a floor is what the machine can do."""
    import sys

    n, mb, reps = (1024, 64, 6) if quick else (2048, 256, 10)
    peaks = {"numpy": matmul_peak(n, reps)}
    torch = sys.modules.get("torch")
    if torch is not None:
        a, b = torch.randn(n, n), torch.randn(n, n)
        peaks["torch"] = 2.0 * n ** 3 / best_seconds(lambda: a @ b, reps)
    return {"flops_per_s": max(peaks.values()), "bytes_per_s": copy_bandwidth(mb, reps), "matmul_n": n,
            "copy_mib": mb, "matmul_by": {k: round(v / 1e9, 1) for k, v in peaks.items()}}


def floor_seconds(count: GraphCount | dict, peak: dict[str, float]) -> dict[str, float]:
    d = count.to_dict() if isinstance(count, GraphCount) else count
    compute = d["flops"] / peak["flops_per_s"]
    memory = d["bytes"] / peak["bytes_per_s"]
    return {"floor_s": max(compute, memory), "compute_s": compute, "memory_s": memory,
            "bound": "compute" if compute >= memory else "memory"}
