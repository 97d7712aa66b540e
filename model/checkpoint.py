"""Checkpoints in the release layout: verify (headers only), load (memory-frugal), save.

Layout: a folder with `model.safetensors` or shards `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json` (`weight_map`, `metadata.total_size`), the tokenizer files, and
`tpo_config.json` (our configuration; the released folder has none, so `--config` names it).
Names are the release's: `TPOModel.release_state_dict()` is the single source of them.

Loading builds the model with parameters on the meta device (buffers real and small), checks every
file header against the expected names, shapes and dtypes BEFORE reading any weight, then assigns
memory-mapped tensors converted straight to the requested dtype: nothing is half-loaded and no
full fp32 copy of a bf16 checkpoint is ever made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tpo.errors import CheckpointError

from .config import TPOConfig, config_from_dict, load_config

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
CONFIG_NAME = "tpo_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ST_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
               "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str | None = None

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty(0, dtype=self.dtype).element_size()


@dataclass
class CheckpointFiles:
    """What a checkpoint path points at: shard files (existing or not) and the index's claims."""

    root: Path
    shards: list[Path]
    weight_map: dict[str, str] | None = None   # name -> shard file name (from the index)
    index_total_size: int | None = None


@dataclass
class VerifyReport:
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[dict] = field(default_factory=list)
    total_bytes: int = 0               # bytes of the tensors as stored (headers; or the index's total_size)
    expected_bytes: int = 0            # bytes our model's tensors take at the checkpoint's stored dtypes
    stored_float_dtype: str = ""
    headers_read: bool = False          # False when only the index was available (names, no shapes)
    missing_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.missing_files) and (
            self.total_bytes == self.expected_bytes
        )

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "matched": self.matched, "missing": self.missing, "unexpected": self.unexpected,
            "mismatched": self.mismatched, "total_bytes": self.total_bytes, "expected_bytes": self.expected_bytes,
            "stored_float_dtype": self.stored_float_dtype, "headers_read": self.headers_read,
            "missing_files": self.missing_files, "notes": self.notes,
        }


# ---- reading headers -----------------------------------------------------------------------------

def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, shapes and dtypes from a safetensors header; checks the file is complete."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", raw)
            if n <= 0 or 8 + n > size:
                raise CheckpointError(f"{path}: truncated or not a safetensors file (header length {n}, file {size} B)")
            header = json.loads(f.read(n))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the safetensors header ({e})") from e
    out: dict[str, TensorInfo] = {}
    data_len = size - 8 - n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = ST_DTYPES.get(meta.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {meta.get('dtype')}")
        begin, end = meta["data_offsets"]
        if end > data_len:
            raise CheckpointError(
                f"{path}: truncated: tensor {name} needs bytes {begin}..{end} of the data section but it has {data_len}"
            )
        out[name] = TensorInfo(tuple(meta["shape"]), dtype, path.name)
    return out


def default_checkpoint() -> Path:
    """The checkpoint shipped as package data: `model/assets/checkpoints/tiny` (with its tokenizer)."""
    path = Path(__file__).parent / "assets" / "checkpoints" / "tiny"
    if not (path / INDEX_NAME).is_file():
        raise CheckpointError(f"no embedded checkpoint at {path} (no {INDEX_NAME}): train one with tpo-train "
                              "into that folder, or pass --checkpoint DIR")
    return path


def _shard_inside(index: Path, name: object) -> Path:
    """The shard `name` of `index`, which must be a plain file name in the index's folder: a path with `..`,
    an absolute path, or a symlink leading out of the folder is refused before anything opens it."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{index}: shard {name!r} is not a file in the checkpoint's folder")
    folder = index.parent.resolve()
    target = (index.parent / name).resolve()
    if folder not in target.parents:
        raise CheckpointError(f"{index}: shard {name!r} resolves to {target}, outside {folder}")
    return index.parent / name


def resolve_checkpoint(path: str | Path, allow_pickle: bool = False) -> CheckpointFiles:
    """A folder, a `.safetensors` file or a `model.safetensors.index.json` -> the files it means."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or folder")
    if p.is_file() and p.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{p}: pickle checkpoints can run code when loaded and are refused; convert it to "
                "safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)"
            )
        return CheckpointFiles(root=p.parent, shards=[p])
    if p.is_dir():
        if (p / INDEX_NAME).is_file():
            p = p / INDEX_NAME
        elif (p / SINGLE_NAME).is_file():
            return CheckpointFiles(root=p, shards=[p / SINGLE_NAME])
        else:
            pickles = sorted(q.name for q in p.iterdir() if q.suffix in PICKLE_SUFFIXES)
            hint = f" (found pickle files {pickles}: refused unless --allow-pickle)" if pickles else ""
            raise CheckpointError(f"{p}: no {INDEX_NAME} or {SINGLE_NAME} in the folder{hint}")
    if p.name.endswith(".index.json"):
        try:
            index = json.loads(p.read_text())
            weight_map = dict(index["weight_map"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{p}: not a safetensors index ({e})") from e
        total = index.get("metadata", {}).get("total_size")
        shards = [_shard_inside(p, s) for s in sorted(set(weight_map.values()))]
        return CheckpointFiles(root=p.parent, shards=shards, weight_map=weight_map,
                               index_total_size=int(total) if total is not None else None)
    if p.suffix == ".safetensors":
        return CheckpointFiles(root=p.parent, shards=[p])
    raise CheckpointError(f"{p}: expected a folder, a .safetensors file or a {INDEX_NAME}")


# ---- the expected layout ---------------------------------------------------------------------------

@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create parameters on the meta device while buffers stay real (they are small and some,
    like rotary tables, are not stored in checkpoints)."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def build_skeleton(cfg: TPOConfig):
    """The model with every parameter on meta (no memory), buffers real."""
    from .tpo_model import TPOModel

    with parameters_on_meta():
        model = TPOModel(cfg)
    return model.eval()


def expected_layout(cfg: TPOConfig, float_dtype: torch.dtype) -> dict[str, TensorInfo]:
    """Release name -> shape and stored dtype (floats at `float_dtype`, integers as they are)."""
    model = build_skeleton(cfg)
    out = {}
    for name, t in model.release_state_dict().items():
        dtype = float_dtype if t.is_floating_point() else t.dtype
        out[name] = TensorInfo(tuple(t.shape), dtype)
    return out


def checkpoint_config(files: CheckpointFiles, config: str | None) -> TPOConfig:
    """`--config` wins; else the checkpoint's own tpo_config.json; else a clear error."""
    if config is not None:
        return load_config(config)
    own = files.root / CONFIG_NAME
    if own.is_file():
        return config_from_dict(json.loads(own.read_text()), str(own))
    raise CheckpointError(f"{files.root}: no {CONFIG_NAME}; pass --config (e.g. videochat-tpo)")


# ---- verify -------------------------------------------------------------------------------------

def verify_checkpoint(path: str | Path, config: str | None = None) -> VerifyReport:
    """Compare a checkpoint's tensors with what the configuration expects, reading headers only."""
    files = resolve_checkpoint(path)
    cfg = checkpoint_config(files, config)
    report = VerifyReport()
    present = [s for s in files.shards if s.is_file()]
    report.missing_files = [s.name for s in files.shards if not s.is_file()]
    found: dict[str, TensorInfo] = {}
    if present:
        for shard in present:
            for name, info in read_safetensors_header(shard).items():
                if name in found:
                    report.mismatched.append({"name": name, "problem": f"stored twice ({found[name].file}, {shard.name})"})
                found[name] = info
        report.headers_read = True
    if files.weight_map is not None and len(present) < len(files.shards):
        # names from the index for the shards we do not have (index-only verification)
        for name, shard in files.weight_map.items():
            if name not in found:
                found[name] = TensorInfo((), torch.float32, shard)
        if not present:
            report.notes.append("only the index was read: names checked; shapes from our model, bytes vs total_size")
            report.missing_files = []  # an index alone is a valid thing to verify
    float_dtypes = {i.dtype for i in found.values() if i.dtype.is_floating_point and i.shape != ()} if present else set()
    stored = torch.bfloat16 if not float_dtypes else max(float_dtypes, key=lambda d: sum(
        1 for i in found.values() if i.dtype == d))
    report.stored_float_dtype = str(stored).replace("torch.", "")
    expected = expected_layout(cfg, stored)
    for name, exp in expected.items():
        if name not in found:
            report.missing.append(name)
            continue
        report.matched += 1
        got = found[name]
        from_header = report.headers_read and got.file in {s.name for s in present}
        if from_header and (got.shape != exp.shape or got.dtype != exp.dtype):
            report.mismatched.append({
                "name": name, "file": got.file,
                "expected": {"shape": list(exp.shape), "dtype": str(exp.dtype).replace("torch.", "")},
                "found": {"shape": list(got.shape), "dtype": str(got.dtype).replace("torch.", "")},
            })
    report.unexpected = sorted(set(found) - set(expected))
    report.expected_bytes = sum(i.nbytes for i in expected.values())
    if present and len(present) == len(files.shards):
        report.total_bytes = sum(i.nbytes for i in found.values())
    elif files.index_total_size is not None:
        report.total_bytes = files.index_total_size
    complete = report.headers_read and len(present) == len(files.shards)
    if complete and files.index_total_size is not None and files.index_total_size != report.total_bytes:
        report.notes.append(
            f"index total_size {files.index_total_size} != bytes in the shard headers {report.total_bytes}")
    return report


# ---- load ----------------------------------------------------------------------------------------

def load_checkpoint(path: str | Path, config: str | None = None, dtype: torch.dtype | str | None = None,
                    device: str = "cpu", allow_pickle: bool = False):
    """A `TPOModel` from a release-layout checkpoint, in `dtype` (default: as stored)."""
    from .tpo_model import TPOModel

    files = resolve_checkpoint(path, allow_pickle=allow_pickle)
    cfg = checkpoint_config(files, config)
    if isinstance(dtype, str):
        if dtype not in DTYPE_NAMES:
            raise CheckpointError(f"unknown dtype {dtype!r}: choose bf16, fp16 or fp32")
        dtype = DTYPE_NAMES[dtype]
    missing_files = [s for s in files.shards if not s.is_file()]
    if missing_files:
        raise CheckpointError(f"{missing_files[0]}: shard missing ({len(missing_files)} of {len(files.shards)} absent)")
    pickled = files.shards[0].suffix in PICKLE_SUFFIXES
    if pickled:
        release = torch.load(files.shards[0], map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(release, dict) or not all(isinstance(v, torch.Tensor) for v in release.values()):
            raise CheckpointError(f"{files.shards[0]}: not a flat dict of tensors")
        found = {k: TensorInfo(tuple(v.shape), v.dtype, files.shards[0].name) for k, v in release.items()}
    else:
        found = {}
        for shard in files.shards:
            found.update(read_safetensors_header(shard))
    stored = next((i.dtype for i in found.values() if i.dtype.is_floating_point), torch.float32)
    expected = expected_layout(cfg, stored)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointError(f"{files.root}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
    if unexpected:
        raise CheckpointError(f"{files.root}: unexpected tensor {unexpected[0]} ({len(unexpected)} unexpected in all)")
    for name, exp in expected.items():
        got = found[name]
        if got.shape != exp.shape:
            raise CheckpointError(f"{got.file}: tensor {name} has shape {list(got.shape)}, expected {list(exp.shape)}")
        if got.dtype.is_floating_point != exp.dtype.is_floating_point:
            raise CheckpointError(f"{got.file}: tensor {name} is {got.dtype}, expected a {exp.dtype} tensor")
    target = dtype or stored
    model = build_skeleton(cfg)
    release: dict[str, torch.Tensor] = {}
    if pickled:
        for k, v in torch.load(files.shards[0], map_location="cpu", weights_only=True, mmap=True).items():
            release[k] = v.to(target) if v.is_floating_point() else v
    else:
        from safetensors import safe_open

        for shard in files.shards:
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    t = f.get_tensor(name)
                    release[name] = t.to(target) if t.is_floating_point() else t
    ours = TPOModel.release_to_ours(release)
    del release
    model.load_state_dict(ours, strict=True, assign=True)
    # buffers created at construction (rotary tables, ...) follow the weights' dtype where they are float
    for module in model.modules():
        for bname, buf in list(module._buffers.items()):
            if buf is not None and buf.is_floating_point() and bname not in module._non_persistent_buffers_set:
                module._buffers[bname] = buf.to(target)
    if device != "cpu":
        model = model.to(device)
    return model.eval(), cfg


# ---- save ----------------------------------------------------------------------------------------

def save_checkpoint(model, out_dir: str | Path, dtype: torch.dtype = torch.float16,
                    max_shard_bytes: int = 4 * 1024**3, tokenizer_dir: str | Path | None = None,
                    overwrite: bool = False) -> Path:
    """Write the release layout to `out_dir` atomically (a temporary folder renamed when complete)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: exists; choose another folder or overwrite explicitly")
    sd = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
          for k, v in model.release_state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(sd):
        t = sd[name]
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = SINGLE_NAME if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in sd.values())
        (tmp / INDEX_NAME).write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
        (tmp / CONFIG_NAME).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
        if tokenizer_dir is not None:
            for f in Path(tokenizer_dir).iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
