"""A checkpoint with random weights in the release's layout, written tensor by tensor.

`tpo-model random --config videochat-tpo --out DIR` stands in for the 16.2 GB download: the same 2594 names,
shapes and dtypes (`expected_layout`), the same four shards with the same tensors in each (the release's own
index, `../shared/reference/videochat-tpo/model.safetensors.index.json`, when its names are the
configuration's; otherwise the names in order, cut into shards of about equal bytes), the index with its
`total_size`, the tokenizer files and our `tpo_config.json` (which the release does not have; it lets
`tpo-export --checkpoint DIR` run without `--config`).

Why a writer of its own: `safetensors.torch.save_file` takes a whole shard as a dict of tensors, 5 GB each at
full size. Here each shard's header is computed from the layout first, then every tensor is generated in
row blocks of at most `BLOCK_ELEMENTS` values and appended, so memory stays at a few blocks whatever the size.
Everything goes into a temporary folder beside `--out`, renamed into place when complete (Ctrl-C or a full disk
leaves nothing at `--out`); the free space is checked before the first byte.

Values (seeded per tensor from `--seed` and the tensor's name, so one tensor does not depend on the others):
uniform with standard deviation 0.02 (transformers' `initializer_range`) for every float tensor, norm weights
around 1 (1 + the same noise), integer buffers as their module builds them (BERT's `position_ids`: arange).
LoRA B is random too (peft initialises it to zero), so a merge at export changes every weight it touches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from tpo.errors import CheckpointError, ConfigError, InputError

from .checkpoint import CONFIG_NAME, INDEX_NAME, TensorInfo, build_skeleton, expected_layout
from .config import TPOConfig, load_config

BLOCK_ELEMENTS = 1 << 23          # values generated at a time (32 MB in fp32)
INIT_STD = 0.02
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ST_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}
TOKENIZER_FILES = ("tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")
FREE_MARGIN = 256 << 20           # bytes left free beyond the checkpoint (metadata, the file system)


@dataclass
class RandomCheckpoint:
    path: Path
    shards: dict[str, int]        # file name -> bytes
    total_bytes: int              # the tensors' bytes (the index's total_size)
    tensors: int
    layout: str                   # "release index" | "even split"


def reference_index() -> Path:
    """The release's own index (names -> shard), kept outside the repository beside the project."""
    from .tokenizer import REFERENCE_TOKENIZER

    return REFERENCE_TOKENIZER / INDEX_NAME


def shard_plan(layout: dict[str, TensorInfo], shards: int) -> tuple[dict[str, str], str]:
    """name -> shard file name: the release's assignment when its index has exactly these names, else the
    names in order cut into `shards` runs of about equal bytes."""
    ref = reference_index()
    if ref.is_file():
        weight_map = json.loads(ref.read_text())["weight_map"]
        if set(weight_map) == set(layout) and len(set(weight_map.values())) == shards:
            return dict(weight_map), "release index"
    names = sorted(layout)
    total = sum(layout[n].nbytes for n in names)
    out, done = {}, 0
    for n in names:
        k = min(shards - 1, done * shards // max(total, 1))
        out[n] = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        done += layout[n].nbytes
    return out, "even split"


def _release_modules(cfg: TPOConfig) -> dict[str, nn.Module]:
    """Release name -> the module that owns the tensor (to tell norm weights from the rest)."""
    from .tpo_model import TPOModel

    model = build_skeleton(cfg)
    ours = model.state_dict(keep_vars=True)
    owner = {id(t): name for name, t in ours.items()}
    proxy = SimpleNamespace(state_dict=lambda: ours)
    out = {}
    for rel, t in TPOModel.release_state_dict(proxy).items():       # type: ignore[arg-type]
        our = owner.get(id(t))
        if our is None:                     # a split tensor (SAM2's point embeddings): plain values
            out[rel] = nn.Identity()
            continue
        out[rel] = model.get_submodule(our.rpartition(".")[0]) if "." in our else model
    return out


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def tensor_blocks(name: str, info: TensorInfo, norm: bool, seed: int):
    """The tensor's values in row-major blocks of at most BLOCK_ELEMENTS, already in its stored dtype."""
    n = 1
    for s in info.shape:
        n *= s
    if not info.dtype.is_floating_point:
        if info.shape and info.shape[-1] > 0:      # position ids: arange over the last axis
            yield torch.arange(info.shape[-1], dtype=info.dtype).repeat(n // info.shape[-1])
        else:
            yield torch.zeros(n, dtype=info.dtype)
        return
    g = torch.Generator().manual_seed(tensor_seed(seed, name))
    half_width = INIT_STD * 3 ** 0.5                # uniform(-a, a) has standard deviation a / sqrt(3)
    for start in range(0, n, BLOCK_ELEMENTS):
        x = torch.rand(min(BLOCK_ELEMENTS, n - start), generator=g).mul_(2 * half_width).sub_(half_width)
        if norm:
            x.add_(1.0)
        yield x.to(info.dtype)


def _header(names: list[str], layout: dict[str, TensorInfo], metadata: dict[str, str]) -> bytes:
    """A safetensors header for `names` in this order, padded with spaces to 8 bytes (the format's rule)."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name in names:
        info = layout[name]
        header[name] = {"dtype": ST_NAMES[info.dtype], "shape": list(info.shape),
                        "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def check_free_space(folder: Path, need: int, what: str) -> None:
    """InputError (one line naming the need) unless `folder`'s file system has `need` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(f"{folder}: {what} needs {need / 1e9:.2f} GB free, the disk has {free / 1e9:.2f} GB")


def write_random_checkpoint(config: str, out: str | Path, seed: int = 0, dtype: str = "bf16", shards: int = 4,
                            force: bool = False, progress: Callable[[str, int, int], None] | None = None
                            ) -> RandomCheckpoint:
    """Write the random checkpoint; `progress(shard, bytes_done, bytes_total)` is called per tensor."""
    from .tokenizer import resolve_tokenizer_dir

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if shards < 1:
        raise ConfigError(f"--shards {shards}: must be >= 1")
    out = Path(out)
    if out.exists() and not (force and out.is_dir()):
        raise InputError(f"--out {out}: already exists" + ("" if out.is_dir() else " and is not a folder")
                         + ("; pass --force to replace it" if out.is_dir() else ""))
    cfg = load_config(config)
    tokenizer_dir = resolve_tokenizer_dir(cfg.tokenizer)
    layout = expected_layout(cfg, DTYPES[dtype])
    plan, how = shard_plan(layout, shards)
    modules = _release_modules(cfg)
    files = sorted(set(plan.values()))
    by_file = {f: sorted(n for n in layout if plan[n] == f) for f in files}
    total = sum(i.nbytes for i in layout.values())
    metadata = {"format": "pt", "tpo_random_seed": str(seed), "tpo_config": cfg.name}
    headers = {f: _header(by_file[f], layout, metadata) for f in files}
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    check_free_space(parent, total + sum(len(h) for h in headers.values()) + FREE_MARGIN,
                     f"a random {cfg.name} checkpoint")
    tmp = parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        sizes = {}
        done = 0
        for f in files:
            with open(tmp / f, "wb") as fh:
                fh.write(headers[f])
                for name in by_file[f]:
                    info = layout[name]
                    for block in tensor_blocks(name, info, _is_norm(modules[name]), seed):
                        raw = block.view(torch.int16) if block.dtype == torch.bfloat16 else block
                        fh.write(raw.numpy().tobytes())
                    done += info.nbytes
                    if progress is not None:
                        progress(f, done, total)
            sizes[f] = (tmp / f).stat().st_size
        (tmp / INDEX_NAME).write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(plan.items()))}, indent=2) + "\n")
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        for fname in TOKENIZER_FILES:
            if (tokenizer_dir / fname).is_file():
                shutil.copy2(tokenizer_dir / fname, tmp / fname)
        if not (tmp / "tokenizer.model").is_file():
            raise CheckpointError(f"{tokenizer_dir}: no tokenizer.model to copy into the checkpoint")
        if out.exists():
            trash = parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return RandomCheckpoint(out, sizes, total, len(layout), how)
