"""Gate (a) of the streamed export: every written weight against the checkpoint tensor it came from.

The writer (`streamed.py` through `weights.py`) reads shards with `os.pread`, merges LoRA in torch float64 and
casts with torch. This check shares none of that arithmetic: it opens the shards with the `safetensors`
library (row slices), decodes bf16 itself (the high half of a float32), merges with numpy in float64, casts
fp16 with onnxruntime's own `convert_np_to_float16` (the function the classic path's converter uses), reads the
written bytes back from the ONNX file or its data file as the file's external-data entries say, and demands
byte equality. What it takes from the writer is only the provenance (which checkpoint tensors make which
initializer); a wrong provenance shows in gate (b)'s numerics (`depth_gate.py`), which use the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tpo.signals import stop_point

from .weights import BLOCK_BYTES, Recipe

NP_OF_ONNX = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
              onnx.TensorProto.INT64: np.int64}


class ShardSlices:
    """Row slices of checkpoint tensors through the safetensors library, as numpy arrays. A shard is opened
    for each read and closed after it: safetensors maps the whole file, and a mapping kept open would count
    every page read so far in the resident set (16 GB by the end of a full-size check)."""

    def __init__(self, shards: list[Path]):
        from safetensors import safe_open

        self.where: dict[str, Path] = {}
        for shard in shards:
            with safe_open(str(shard), framework="pt", device="cpu") as h:
                for k in h.keys():              # noqa: SIM118  (safe_open has no __iter__)
                    self.where[k] = shard

    def shape(self, name: str) -> list[int]:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt", device="cpu") as h:
            return list(h.get_slice(name).get_shape())

    def rows(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt", device="cpu") as h:
            s = h.get_slice(name)
            t = s[start:stop] if s.get_shape() else h.get_tensor(name)
            return _to_numpy(t).copy()


def _to_numpy(t) -> np.ndarray:
    """A torch tensor as numpy; bf16 decoded by hand (bf16 is the top 16 bits of a float32)."""
    import torch

    if t.dtype == torch.bfloat16:
        bits = t.contiguous().view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return t.numpy()


def expected_rows(recipe: Recipe, slices: ShardSlices, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the recipe's value (float32, or the stored integers)."""
    if recipe.op == "copy":
        x = slices.rows(recipe.sources[0], start, stop)
        return x.astype(np.float32) if x.dtype.kind == "f" else x
    if recipe.op == "lora":
        base = slices.rows(recipe.sources[0], start, stop).astype(np.float64)
        a = slices.rows(recipe.sources[1]).astype(np.float64)
        b = slices.rows(recipe.sources[2], start, stop).astype(np.float64)
        return (base + recipe.scale * (b @ a)).astype(np.float32)
    if recipe.op == "concat0":
        return np.concatenate([slices.rows(s) for s in recipe.sources], axis=0)[start:stop].astype(np.float32)
    raise ValueError(f"unknown recipe op {recipe.op!r}")


def cast_reference(x: np.ndarray, onnx_type: int) -> np.ndarray:
    from onnxruntime.transformers.float16 import convert_np_to_float16

    if onnx_type == onnx.TensorProto.FLOAT16:
        return np.asarray(convert_np_to_float16(x.astype(np.float32)), dtype=np.float16)
    return x.astype(NP_OF_ONNX[onnx_type])


def _written_rows(init: onnx.TensorProto, folder: Path, start: int, stop: int, row_elems: int) -> np.ndarray:
    dtype = NP_OF_ONNX[init.data_type]
    if init.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in init.external_data}
        offset = int(info.get("offset", 0)) + start * row_elems * np.dtype(dtype).itemsize
        return np.fromfile(folder / info["location"], dtype=dtype, count=(stop - start) * row_elems, offset=offset)
    from onnx import numpy_helper

    return numpy_helper.to_array(init).reshape(-1)[start * row_elems: stop * row_elems]


def check_graph(path: Path, recipes: dict[str, Recipe], slices: ShardSlices, block_bytes: int = BLOCK_BYTES) -> dict:
    """Compare every initializer of `path` named in `recipes`; the count, bytes and mismatches."""
    model = onnx.load(str(path), load_external_data=False)
    checked, nbytes, mismatches = 0, 0, []
    seen = set()
    for init in model.graph.initializer:
        stop_point()
        recipe = recipes.get(init.name)
        if recipe is None:
            continue
        seen.add(init.name)
        dims = [int(d) for d in init.dims]
        if tuple(dims) != tuple(recipe.shape):
            mismatches.append(f"{init.name}: shape {dims}, the checkpoint's {list(recipe.shape)}")
            continue
        rows = dims[0] if dims else 1
        row_elems = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        step = max(1, block_bytes // (8 * row_elems))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            want = cast_reference(expected_rows(recipe, slices, start, stop) if dims else
                                  expected_rows(recipe, slices, None, None), init.data_type).reshape(-1)
            got = _written_rows(init, path.parent, start, stop, row_elems)
            if got.shape != want.shape or not np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")):
                bad = int((got != want).sum()) if got.shape == want.shape else -1
                mismatches.append(f"{init.name}: rows {start}..{stop} differ ({bad} values)")
                break
        checked += 1
        nbytes += int(np.prod(dims or [1])) * np.dtype(NP_OF_ONNX[init.data_type]).itemsize
    missing = sorted(set(recipes) - seen)
    return {"initializers": checked, "bytes": nbytes, "mismatches": mismatches[:10],
            "mismatch_count": len(mismatches), "not_in_file": missing[:10]}


def check_embeddings(path: Path, sources: dict[str, str], slices: ShardSlices) -> dict:
    """The host-side tables (token table, task embeddings) against the checkpoint (a plain numpy cast)."""
    from safetensors import safe_open

    mismatches = []
    with safe_open(str(path), framework="np") as f:
        for name, source in sources.items():
            got = f.get_tensor(name)
            want = slices.rows(source).astype(np.float32).reshape(got.shape).astype(got.dtype)
            if not np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")):
                mismatches.append(f"{name}: differs from {source}")
    return {"tensors": len(sources), "mismatches": mismatches}
