"""One graph -> one ONNX file: torch.onnx.export(dynamo=True) at an explicit opset, named dimensions, fp16.

`export_graph(graph, example, path, opset)` traces `graph.module` on `example` (tensors sized >= 2 on every
symbolic dimension: a size-1 example silently pins a dimension), then rewrites the graph's input and output
names and symbolic dimensions to the `GraphDef`'s, so the manifest and the file agree by construction.
`to_fp16(path, islands)` converts the weights and arithmetic to fp16 with fp32 islands (ops kept in fp32,
recorded in the manifest's precision map); inputs and outputs stay fp32, so the host feeds the same tensors
at either precision.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

# FP16_ISLANDS: op types kept in fp32 under --precision fp16, declared beside the measured search that replaces
# them per graph (tpo-calibrate --precision fp16); streamed.py takes it from here. See docs/export.md.
from tpo.calibration.fp16 import FP16_ISLANDS, join_fp32_islands
from tpo.model.graphs import GraphDef

from .options import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, check_opset  # noqa: F401  (re-exported)

EXTERNAL_DATA_BYTES = 1_800_000_000   # parameters above this: weights in a side file (protobuf's limit: 2 GB)

def _dynamic_shapes(graph: GraphDef) -> tuple:
    """torch.export dynamic-shape spec: AUTO on every symbolic dimension (relations such as
    total = past + sequence are inferred), static elsewhere; names are written afterwards."""
    spec = []
    for t in graph.inputs:
        spec.append({i: torch.export.Dim.AUTO for i, d in enumerate(t.shape) if isinstance(d, str)} or None)
    if graph.varargs_from is not None:
        spec = spec[: graph.varargs_from] + [tuple(spec[graph.varargs_from :])]
    return tuple(spec)


@contextlib.contextmanager
def _quiet_loggers():
    """The exporter logs a warning per graph for every torchvision op it cannot register and each constant it
    does not fold; none concerns our graphs, and a user should see the progress bar and the summary."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_graph(graph: GraphDef, example: tuple[torch.Tensor, ...], path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace `graph` on `example` and write `path` (fp32), with the GraphDef's names and dimensions."""
    check_opset(opset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph.module, example, dynamo=True, opset_version=opset,
            input_names=[t.name for t in graph.inputs], output_names=[t.name for t in graph.outputs],
            dynamic_shapes=_dynamic_shapes(graph), optimize=True, verbose=False,
        )
    # through the file, never model_proto: a graph over 2 GB cannot be one protobuf message
    large = sum(p.numel() * p.element_size() for p in graph.module.parameters()) > EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=large or None)
    model = onnx.load(str(path), load_external_data=False)
    name_dims(model, graph)
    onnx.save_model(model, str(path))          # external tensors keep pointing at the same side file


def external_files(path: Path) -> list[str]:
    """Side files holding `path`'s external tensors (relative to its folder), e.g. ["llm.onnx.data"]."""
    model = onnx.load(str(path), load_external_data=False)
    found = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            found |= {e.value for e in tensor.external_data if e.key == "location"}
    return sorted(found)


def name_dims(model: onnx.ModelProto, graph: GraphDef) -> None:
    """Set every graph input's and output's symbolic dims to the GraphDef's names (checking fixed sizes)."""
    declared = {t.name: t for t in graph.inputs + graph.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        t = declared.get(value.name)
        if t is None:
            raise RuntimeError(f"graph {graph.name}: exported tensor {value.name!r} is not declared")
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(t.shape):
            raise RuntimeError(f"graph {graph.name}: {value.name} has rank {len(dims)}, declared {len(t.shape)}")
        for dim, want in zip(dims, t.shape, strict=True):
            if isinstance(want, str):
                dim.ClearField("dim_value")
                dim.dim_param = want
            elif dim.HasField("dim_value") and dim.dim_value != want:
                raise RuntimeError(f"graph {graph.name}: {value.name} dim {dim.dim_value}, declared {want}")
            else:
                dim.ClearField("dim_param")
                dim.dim_value = want
    missing = set(declared) - {v.name for v in list(model.graph.input) + list(model.graph.output)}
    if missing:
        raise RuntimeError(f"graph {graph.name}: declared tensors missing from the export: {sorted(missing)}")


def save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    """Write `path`; with `external`, the weights go to `<file>.data` beside it (protobuf's 2 GB limit)."""
    for old in external_files(path) if path.exists() else []:
        (path.parent / old).unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def to_fp16(path: Path, islands: tuple[str, ...] = FP16_ISLANDS) -> list[str]:
    """Convert `path` in place to fp16 with `islands` op types kept in fp32; returns the islands present."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    external = bool(external_files(path))
    model = onnx.load(str(path))               # with its external tensors
    present = sorted({n.op_type for n in model.graph.node} & set(islands))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # shape inference serialises the model: impossible over 2 GB, so large graphs convert without it
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(islands),
                                             disable_shape_infer=external)
    join_fp32_islands(converted, islands)
    save(converted, path, external)
    return present
