"""Where every exported weight comes from, and how it is made, one tensor (one row block) at a time.

The streamed export (`streamed.py`) never builds the model with its weights: it traces graphs whose parameters
are fake, then writes each initializer from the checkpoint. This module is that second half:
- `CheckpointTensors`: the safetensors shards' headers, and reads of a tensor's rows with `os.pread` (a bounded
  copy per block; a long-lived mmap of a 5 GB shard would count every page it touched in the resident set);
- `Recipe`: how one of our tensors is made from release tensors: "copy" (a plain rename), "lora" (the base
  weight plus scale * B @ A, peft's merge), "concat0" (SAM2's four point embeddings stacked into one table);
- `Provenance`: the recipe of every tensor a graph module holds, found by identity (the module's tensor IS the
  model's tensor, and `release_state_dict` passes tensors through by identity while renaming) and, for the
  LLM graph's merged copy, by peft's naming rule;
- `float_blocks` and `cast_block`: the recipe's values in fp32 row blocks, then the ONNX dtype the graph chose
  (fp32, or fp16 clamped exactly as onnxruntime's converter clamps, so a streamed graph holds the values the
  classic export would).

The LoRA merge is computed in float64 and rounded once: with bf16 factors and r = 16 the float64 result is
the exact real sum (products of 8-bit mantissas, a short sum), so the value does not depend on the order a
matmul library sums in, and the initializer check (`weight_check.py`) can recompute it with numpy and demand
equality.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

from tpo.errors import CheckpointError

ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "I64": torch.int64,
             "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8}
FP16_MIN_POSITIVE = 5.96e-08     # onnxruntime.transformers.float16's defaults
FP16_MAX_FINITE = 65504.0
BLOCK_BYTES = 64 << 20           # fp32 bytes per row block of a recipe's values
ONNX_FLOAT, ONNX_FLOAT16, ONNX_INT64 = 1, 10, 7


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Stored:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int                   # absolute byte offset of the tensor in `file`
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // max(self.rows, 1)


class CheckpointTensors:
    """The tensors of safetensors shards by name, read block by block (see the module docstring)."""

    def __init__(self, shards: list[Path]):
        self.index: dict[str, Stored] = {}
        for shard in shards:
            for name, stored in _header(shard).items():
                if name in self.index:
                    raise CheckpointError(f"{shard}: tensor {name} is also in {self.index[name].file.name}")
                self.index[name] = stored
        self._fds: dict[Path, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def info(self, name: str) -> Stored:
        try:
            return self.index[name]
        except KeyError:
            raise CheckpointError(f"tensor {name} is not in the checkpoint") from None

    def rows(self, name: str, start: int, stop: int) -> Tensor:
        """Rows start..stop (dimension 0) of `name`, in its stored dtype (a copy owned by the caller)."""
        s = self.info(name)
        if not s.shape:
            return self.read(name)
        count = stop - start
        raw = self._pread(s.file, s.offset + start * s.row_bytes, count * s.row_bytes)
        return torch.frombuffer(raw, dtype=s.dtype).reshape(count, *s.shape[1:]) if count else \
            torch.empty(0, *s.shape[1:], dtype=s.dtype)

    def read(self, name: str) -> Tensor:
        s = self.info(name)
        if not s.shape:
            raw = self._pread(s.file, s.offset, s.nbytes)
            return torch.frombuffer(raw, dtype=s.dtype).reshape(())
        return self.rows(name, 0, s.rows)

    def _pread(self, path: Path, offset: int, length: int) -> np.ndarray:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        buf = np.empty(length, np.uint8)              # no zero-fill: every byte is read over
        view, done = memoryview(buf), 0
        while done < length:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise CheckpointError(f"{path}: ends before byte {offset + length} (truncated shard)")
            done += n
        return buf

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _header(path: Path) -> dict[str, Stored]:
    """A shard's tensors with absolute offsets; a file shorter than its header says is refused here."""
    from tpo.model.checkpoint import read_safetensors_header  # checks completeness, names the tensor

    read_safetensors_header(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        out[name] = Stored(path, ST_DTYPES[meta["dtype"]], tuple(meta["shape"]), 8 + n + begin, end - begin)
    return out


# ------------------------------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class Recipe:
    """How one tensor is made from release tensors (names in the checkpoint)."""

    op: str                                  # "copy" | "lora" | "concat0"
    sources: tuple[str, ...]                 # copy: (name,); lora: (base, A, B); concat0: the parts in order
    shape: tuple[int, ...]
    scale: float = 0.0                       # lora: alpha / r
    target: str = ""                         # concat0: our name (what release_to_ours builds)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (0.0, "")}


def _proxy(sd: dict[str, Tensor]) -> SimpleNamespace:
    return SimpleNamespace(state_dict=lambda: sd)


class Provenance:
    """The recipe of every tensor of a model (built on the meta skeleton: names and shapes only)."""

    def __init__(self, model):
        from tpo.model.tpo_model import TPOModel

        self.model = model
        self.ours = model.state_dict(keep_vars=True)
        self.our_of = {id(t): name for name, t in self.ours.items()}
        release = TPOModel.release_state_dict(_proxy(self.ours))
        self.recipes: dict[str, Recipe] = {}
        for rel, t in release.items():
            our = self.our_of.get(id(t))
            if our is not None:
                self.recipes[our] = Recipe("copy", (rel,), tuple(t.shape))
        for our in set(self.ours) - set(self.recipes):      # tensors the release stores split (SAM2's points)
            parts = TPOModel.release_state_dict(_proxy({our: self.ours[our]}))
            rows = sum(p.shape[0] for p in parts.values())
            if rows != self.ours[our].shape[0]:
                raise CheckpointError(f"{our}: built from {list(parts)} in a way the streamed export cannot write")
            self.recipes[our] = Recipe("concat0", tuple(parts), tuple(self.ours[our].shape), target=our)

    def make_real(self, prefixes: tuple[str, ...], reader: CheckpointTensors) -> None:
        """Give the model's tensors under `prefixes` their real fp32 values (for what a graph module computes
        from weights when it is built, e.g. the tracked decoder's empty prompt), keeping their provenance."""
        chosen = {our: r for our, r in self.recipes.items() if our.startswith(prefixes)}
        materialise(self.model, chosen, reader)
        state = self.model.state_dict(keep_vars=True)
        for our in chosen:
            self.our_of[id(state[our])] = our

    def release_names(self) -> set[str]:
        return {s for r in self.recipes.values() for s in r.sources}

    def recipe(self, our: str) -> Recipe:
        return self.recipes[our]

    def llm_recipe(self, merged_name: str) -> Recipe:
        """A tensor of the LoRA-merged LLM copy (`merged_llm`), by name: peft keeps the base weight at
        `base_model.model.<module>.base_layer.<p>` and the factors at `.lora_A/B.default.weight`."""
        module, _, p = merged_name.rpartition(".")
        base = f"lm.base_model.model.{module}"
        if f"{base}.base_layer.{p}" in self.ours:
            recipe = self.recipes[f"{base}.base_layer.{p}"]
            if p != "weight":
                return recipe
            layer = self.model.get_submodule(base[:])
            scale = float(layer.scaling["default"])
            a, b = f"{base}.lora_A.default.weight", f"{base}.lora_B.default.weight"
            return Recipe("lora", (recipe.sources[0], self.recipes[a].sources[0], self.recipes[b].sources[0]),
                          recipe.shape, scale=scale)
        if f"{base}.{p}" in self.ours:
            return self.recipes[f"{base}.{p}"]
        raise CheckpointError(f"LLM tensor {merged_name}: no base weight in the model")

    def graph_recipes(self, defn) -> dict[str, Recipe]:
        """fqn in the graph module -> recipe, for every parameter and stored buffer the module holds (what the
        exporter names the graph's initializers)."""
        from tpo.model.graphs import LLMGraph

        out = {}
        for fqn, t in defn.module.state_dict(keep_vars=True).items():
            our = self.our_of.get(id(t))
            if our is not None:
                out[fqn] = self.recipes[our]
            elif isinstance(defn.module, LLMGraph) and fqn.startswith("lm."):
                out[fqn] = self.llm_recipe(fqn[len("lm."):])
            else:
                raise CheckpointError(f"graph {defn.name}: tensor {fqn} has no source in the checkpoint")
        return out


# ------------------------------------------------------------------------------------------ values
def float_blocks(recipe: Recipe, reader: CheckpointTensors, block_bytes: int = BLOCK_BYTES) -> Iterator[Tensor]:
    """The recipe's values as fp32 (integers as stored), in row blocks of about `block_bytes`."""
    if recipe.op == "concat0":
        from tpo.model.tpo_model import TPOModel

        parts = {s: reader.read(s).float() for s in recipe.sources}
        yield TPOModel.release_to_ours(parts)[recipe.target].contiguous()
        return
    name = recipe.sources[0]
    s = reader.info(name)
    if not s.shape:
        t = reader.read(name)
        yield t.float() if t.is_floating_point() else t
        return
    row_elems = max(1, s.nbytes // s.dtype.itemsize // max(s.rows, 1))
    step = max(1, block_bytes // (4 * row_elems))
    a = reader.read(recipe.sources[1]).double() if recipe.op == "lora" else None
    for start in range(0, s.rows, step):
        stop = min(s.rows, start + step)
        rows = reader.rows(name, start, stop)
        if recipe.op == "lora":      # base + scale * (B @ A), every product and sum exact in float64
            b = reader.rows(recipe.sources[2], start, stop).double()
            yield torch.addmm(rows.double(), b, a, alpha=recipe.scale).float()
        elif rows.is_floating_point():
            yield rows.float()
        else:
            yield rows


def cast_block(block: Tensor, onnx_type: int) -> np.ndarray:
    """A block in the initializer's ONNX dtype: fp32 as is; fp16 clamped like onnxruntime's converter
    (|x| below 5.96e-8 to +-5.96e-8, finite |x| over 65504 to +-65504, zeros, NaN and inf kept)."""
    if onnx_type == ONNX_FLOAT:
        return block.float().numpy()
    if onnx_type == ONNX_FLOAT16:
        # a plain cast agrees with the clamp everywhere but where it gives 0 for a non-zero value or inf for a
        # finite one (values between the thresholds and the fp16 limits round to the same fp16 either way)
        x = block.float()
        y = x.half()
        fix = ((y == 0) & (x != 0)) | (torch.isinf(y) & torch.isfinite(x))
        if bool(fix.any()):
            v = x[fix]
            a = v.abs()
            v = torch.where(a < FP16_MIN_POSITIVE, torch.copysign(torch.full_like(v, FP16_MIN_POSITIVE), v), v)
            v = torch.where(a > FP16_MAX_FINITE, torch.copysign(torch.full_like(v, FP16_MAX_FINITE), v), v)
            y[fix] = v.half()
        return y.numpy()
    if onnx_type == ONNX_INT64:
        return block.long().numpy()
    raise CheckpointError(f"initializer of ONNX type {onnx_type}: the streamed export writes fp32, fp16, int64")


# ------------------------------------------------------------------------------------------ module surgery
def set_tensor(root: nn.Module, fqn: str, value: Tensor) -> None:
    """Replace the parameter or buffer `fqn` of `root` by `value` (a parameter stays a parameter)."""
    owner_name, _, leaf = fqn.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        raise KeyError(f"{fqn}: no parameter or buffer of that name")


def materialise(root: nn.Module, recipes: dict[str, Recipe], reader: CheckpointTensors, prefix: str = "") -> None:
    """Give `root`'s tensors named in `recipes` (under `prefix`) their real fp32 values from the checkpoint."""
    for fqn, recipe in recipes.items():
        if fqn.startswith(prefix):
            blocks = list(float_blocks(recipe, reader))
            value = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
            set_tensor(root, fqn, value.reshape(recipe.shape))
