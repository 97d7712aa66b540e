"""Streamed graph writing: trace with fake weights, then write each initializer from the checkpoint.

Memory is what makes this necessary: the classic path (`onnx_export.export_graph` on a loaded fp32 model)
holds the model, a LoRA-merged copy of the LLM and the traced program's copies, 3.1x the parameter bytes,
about 150 GB for videochat-tpo. Here:
1. `fake_weights` replaces every parameter and stored buffer of the graph modules by a FakeTensor (shape and
   dtype, no storage); buffers computed from the configuration (position tables, rotary frequencies) stay real.
2. `trace` runs `torch.onnx.export(dynamo=True)` without its optimiser, empties the fake initializers (value
   None: the constant folder cannot read them, so nothing is folded from a weight it has not seen), then runs
   the same optimiser `optimize=True` runs.
3. The graph is serialised with each weight as an external-data placeholder (dtype and dims, no bytes), the
   contract's names are written (`name_dims`), and under fp16 onnxruntime's converter runs on that small
   proto with the same fp32 islands as the classic path; it decides each weight's dtype.
4. `write_initializers` fills every placeholder from its `Recipe` (weights.py) in row blocks: read from the
   shards, LoRA merged, cast, appended to `<graph>.onnx.data` at a 4 KiB-aligned offset (or, for a graph with
   under `INLINE_BYTES` of weights, stored in the file itself).
Peak memory is the traced program plus one row block, whatever the model's size.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from tpo.contract import Precision
from tpo.model.graphs import GraphDef
from tpo.signals import stop_point

from .onnx_export import FP16_ISLANDS, _dynamic_shapes, _quiet_loggers, join_fp32_islands, name_dims
from .weights import BLOCK_BYTES, CheckpointTensors, Recipe, cast_block, float_blocks

INLINE_BYTES = 256 << 20         # a graph with fewer weight bytes keeps them in the .onnx file
ALIGN = 4096
PLACEHOLDER = "__tpo_pending__"


@dataclass
class WrittenGraph:
    path: Path
    islands: list[str]
    initializers: dict[str, Recipe] = field(default_factory=dict)   # checkpoint-made initializers, by name
    weight_bytes: int = 0
    constants: int = 0                                              # initializers the trace computed itself


def fake_weights(modules: list[nn.Module], recipes_by_module: list[dict[str, Recipe]]) -> None:
    """Every tensor named in the recipes (a parameter or stored buffer) becomes a fake fp32 CPU tensor."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    from .weights import set_tensor

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    for module, recipes in zip(modules, recipes_by_module, strict=True):
        state = module.state_dict(keep_vars=True)
        for fqn, recipe in recipes.items():
            if isinstance(state[fqn], FakeTensor):       # shared with a graph already done
                continue
            with mode:
                fake = torch.empty(recipe.shape, dtype=torch.float32 if state[fqn].is_floating_point()
                                   else state[fqn].dtype)
            set_tensor(module, fqn, fake)


def trace(defn: GraphDef, example: tuple[torch.Tensor, ...], opset: int):
    """The graph's ONNX IR model with every fake initializer left without a value (see the docstring)."""
    from onnxscript._framework_apis.torch_2_8 import optimize
    from torch._subclasses.fake_tensor import FakeTensor

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            defn.module, example, dynamo=True, opset_version=opset,
            input_names=[t.name for t in defn.inputs], output_names=[t.name for t in defn.outputs],
            dynamic_shapes=_dynamic_shapes(defn), optimize=False, verbose=False)
        for value in program.model.graph.initializers.values():
            if value.const_value is not None and isinstance(getattr(value.const_value, "raw", None), FakeTensor):
                value.const_value = None
        optimize(program.model)
    return program.model


def placeholder_proto(model, recipes: dict[str, Recipe], defn: GraphDef) -> tuple[onnx.ModelProto, dict[str, Recipe]]:
    """Serialise the IR model with each weight as an external placeholder; returns the proto and the recipes
    of the placeholders (by initializer name)."""
    import onnx_ir as ir

    pending: dict[str, Recipe] = {}
    for name, value in model.graph.initializers.items():
        if value.const_value is not None:
            continue
        if name not in recipes:
            raise RuntimeError(f"graph {defn.name}: initializer {name} has no value and no checkpoint source")
        pending[name] = recipes[name]
        value.const_value = ir.ExternalTensor(PLACEHOLDER, 0, 0, value.dtype, shape=value.shape, name=name)
    proto = ir.serde.serialize_model(model)
    name_dims(proto, defn)
    return proto, pending


@contextlib.contextmanager
def _value_info_from_dims():
    """onnxruntime's converter reads an initializer's shape through its values (`numpy_helper.to_array`); a
    placeholder has none, so the shape comes from its dims (the same shape)."""
    from onnx import helper
    from onnxruntime.transformers import float16

    original = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = original


def convert_fp16(proto: onnx.ModelProto, islands: tuple[str, ...] = FP16_ISLANDS) -> tuple[onnx.ModelProto, list[str]]:
    """The classic path's conversion (`to_fp16`) on a proto without weight bytes; the op types kept fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    present = sorted({n.op_type for n in proto.graph.node} & set(islands))
    with warnings.catch_warnings(), _value_info_from_dims():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(islands))
    join_fp32_islands(converted, islands)
    return converted, present


def write_initializers(proto: onnx.ModelProto, pending: dict[str, Recipe], reader: CheckpointTensors, path: Path,
                       inline_bytes: int = INLINE_BYTES, block_bytes: int = BLOCK_BYTES) -> int:
    """Fill the placeholders: values from the checkpoint, cast to the dtype each initializer has now; into
    `<path>.data` (aligned) or, for a small graph, into the proto. Returns the weight bytes written."""
    inits = [t for t in proto.graph.initializer if t.name in pending]
    sizes = {t.name: _numel(t.dims) * (2 if t.data_type == onnx.TensorProto.FLOAT16 else 4 if t.data_type ==
                                        onnx.TensorProto.FLOAT else 8) for t in inits}
    total = sum(sizes.values())
    external = total > inline_bytes
    data_path = path.parent / (path.name + ".data")
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(data_path, "wb")) if external else None
        for t in inits:
            stop_point()
            recipe = pending[t.name]
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            if fh is None:
                parts = [cast_block(b, t.data_type).tobytes() for b in float_blocks(recipe, reader, block_bytes)]
                t.raw_data = b"".join(parts)
                written = len(t.raw_data)
            else:
                fh.write(b"\0" * (-fh.tell() % ALIGN))
                offset, written = fh.tell(), 0
                for block in float_blocks(recipe, reader, block_bytes):
                    raw = cast_block(block, t.data_type)
                    fh.write(raw.tobytes())
                    written += raw.nbytes
                t.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(written))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
            if written != sizes[t.name]:
                raise RuntimeError(f"{path.name}: initializer {t.name} got {written} bytes, expected {sizes[t.name]}")
    return total


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def write_graph(defn: GraphDef, recipes: dict[str, Recipe], reader: CheckpointTensors, path: Path,
                precision: Precision, opset: int, inline_bytes: int = INLINE_BYTES) -> WrittenGraph:
    """Trace `defn` (its weights already fake), write `path` (and its data file) at `precision`."""
    from .examples import trace_example

    path.parent.mkdir(parents=True, exist_ok=True)
    model = trace(defn, trace_example(defn), opset)
    proto, pending = placeholder_proto(model, recipes, defn)
    del model
    islands: list[str] = []
    if precision == Precision.FP16:
        proto, islands = convert_fp16(proto)
    total = write_initializers(proto, pending, reader, path, inline_bytes)
    onnx.save_model(proto, str(path))
    constants = len(proto.graph.initializer) - len(pending)
    return WrittenGraph(path, islands, pending, total, constants)
