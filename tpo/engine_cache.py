"""TensorRT engines on disk, shared by the export (which builds them) and the runtime (which loads them).

Torch-free and TensorRT-free: this module never imports tensorrt, so both sides can use it anywhere.

An engine is valid for exactly one combination of ONNX graph, TensorRT version, GPU architecture,
precision and optimization profile; `engine_cache_key` folds all five into the file name:

    <onnx sha256[:12]>-trt<version>-<sm_XY>-<precision>-<digest[:16]>.engine   the plan, byte for byte
    <same key>.json                                                          its metadata (side file)

The digest covers every component in full (and `BUILD_POLICY`), so changing any of them selects a
different file. The engine file is exactly what TensorRT serialized: metadata is never glued onto it.
The JSON side file is written last, so an engine without one is an interrupted build and is ignored.
Both are written atomically (temporary file in the same folder, then rename).

The cache folder is $TPO_ENGINE_CACHE, else $XDG_CACHE_HOME/tpo-edge/engines, else
~/.cache/tpo-edge/engines.

`gpu_probe()` lives here too because the compute capability is part of the key: it asks the CUDA
driver (through cuda-bindings) for the device and never touches TensorRT, so it is safe on a machine
without a GPU, where creating TensorRT objects can crash the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpo.contract import Dim, Precision, TensorSpec
from tpo.errors import CheckpointError, TPOError

ENGINE_FORMAT = "tpo-edge-engine/1"
# Bump when the way engines are built changes (flags, typing policy), so old engines are not reused.
BUILD_POLICY = "tpo-trt-build/1"
ENGINE_SUFFIX = ".engine"
METADATA_SUFFIX = ".json"
ENV_VAR = "TPO_ENGINE_CACHE"

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]   # input -> (min, opt, max)


# ---------------------------------------------------------------------------------------------- GPU probe
@dataclass(frozen=True)
class GpuInfo:
    ordinal: int
    name: str
    major: int
    minor: int
    driver_version: int     # CUDA driver API version, e.g. 12080
    memory_bytes: int = 0

    @property
    def compute_capability(self) -> str:
        """"sm_87" for compute capability 8.7: the form used in cache keys."""
        return f"sm_{self.major}{self.minor}"

    def __str__(self) -> str:
        return (f"{self.name} ({self.compute_capability}, driver CUDA "
                f"{self.driver_version // 1000}.{self.driver_version % 1000 // 10})")


def gpu_probe(ordinal: int = 0) -> GpuInfo | str:
    """CUDA device `ordinal` as a GpuInfo, or one line saying why there is none. Never raises."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return "cuda-bindings is not installed (pip install 'tpo-edge[gpu]')"
    return probe_with_driver(driver, ordinal)


def probe_with_driver(driver: Any, ordinal: int = 0) -> GpuInfo | str:
    """The probe proper, on a cuda-bindings `driver` module (or a stand-in with the same calls)."""
    ok = driver.CUresult.CUDA_SUCCESS
    try:
        (err,) = driver.cuInit(0)
    except (OSError, RuntimeError):   # cuda-pathfinder's DynamicLibNotFoundError is a RuntimeError
        return "no NVIDIA driver: libcuda could not be loaded"
    if err != ok:
        return f"cuInit failed: {getattr(err, 'name', err)}"
    err, count = driver.cuDeviceGetCount()
    if err != ok or count == 0:
        return "the NVIDIA driver reports no CUDA device"
    if not 0 <= ordinal < count:
        return f"CUDA device {ordinal} requested but only {count} present"
    err, dev = driver.cuDeviceGet(ordinal)
    if err != ok:
        return f"cuDeviceGet({ordinal}) failed: {getattr(err, 'name', err)}"
    attr = driver.CUdevice_attribute
    err1, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    err2, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    if err1 != ok or err2 != ok:
        return f"CUDA device {ordinal}: its compute capability could not be read"
    err, raw = driver.cuDeviceGetName(128, dev)
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if err == ok else "GPU"
    err, version = driver.cuDriverGetVersion()
    err_mem, memory = driver.cuDeviceTotalMem(dev)
    return GpuInfo(ordinal, name, int(major), int(minor), int(version) if err == ok else 0,
                   int(memory) if err_mem == ok else 0)


def module_available(name: str) -> bool:
    """Whether `import name` could work, without importing it (a None in sys.modules blocks it)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None. Reads the module's own __version__ when it is already
    imported, else the distribution metadata; imports the module (never creating TensorRT objects) only
    when no metadata names it (JetPack's apt package)."""
    module = sys.modules.get("tensorrt")
    if module is not None:
        return str(module.__version__)
    if not module_available("tensorrt"):
        return None
    from importlib import metadata

    for dist in metadata.packages_distributions().get("tensorrt", []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


# ------------------------------------------------------------------------------------------------ profiles
def dim_range(name: str, dim: Dim) -> tuple[int, int, int]:
    """(min, opt, max) of the named dimension `name`, or TPOError when the range is not ints in order."""
    try:
        lo, opt, hi = int(dim.min), int(dim.opt), int(dim.max)
    except (AttributeError, TypeError, ValueError):
        raise TPOError(f"dimension {name!r}: range {dim!r} lacks integer min/opt/max") from None
    if not 0 <= lo <= opt <= hi:
        raise TPOError(f"dimension {name!r}: range min={lo} opt={opt} max={hi} is not ordered")
    return lo, opt, hi


def profile_from_dims(inputs: Iterable[TensorSpec], dims: Mapping[str, Dim], graph: str = "") -> Profile:
    """The optimization profile of a graph: input name -> (min, opt, max) shapes.

    A shape item of an input is an int (fixed) or a named dimension whose range the manifest's `dims` gives."""
    profile: Profile = {}
    where = f"graph {graph}: " if graph else ""
    for spec in inputs:
        rows: tuple[list[int], list[int], list[int]] = ([], [], [])
        for d in spec.shape:
            if isinstance(d, int):
                bounds = (d, d, d)
            elif d not in dims:
                raise TPOError(f"{where}input {spec.name} has dimension {d!r} with no range in the manifest's dims")
            else:
                try:
                    bounds = dim_range(d, dims[d])
                except TPOError as e:
                    raise TPOError(f"{where}{e}") from None
            for row, v in zip(rows, bounds, strict=True):
                row.append(v)
        profile[spec.name] = (tuple(rows[0]), tuple(rows[1]), tuple(rows[2]))
    return profile


def _canonical_profile(profile: Mapping[str, Sequence[Sequence[int]]] | None) -> dict[str, list[list[int]]]:
    if not profile:
        return {}
    out = {}
    for name in sorted(profile):
        shapes = profile[name]
        if len(shapes) != 3:
            raise TPOError(f"profile entry {name!r} must be (min, opt, max), got {shapes!r}")
        out[name] = [[int(v) for v in s] for s in shapes]
    return out


def profile_to_json(profile: Mapping[str, Sequence[Sequence[int]]] | None) -> dict[str, dict[str, list[int]]]:
    return {n: dict(zip(("min", "opt", "max"), s, strict=True)) for n, s in _canonical_profile(profile).items()}


def normalize_compute_capability(cc: str | tuple[int, int] | GpuInfo) -> str:
    """"sm_87", "8.7", "87" or (8, 7) -> "sm_87"."""
    if isinstance(cc, GpuInfo):
        return cc.compute_capability
    if isinstance(cc, tuple):
        return f"sm_{int(cc[0])}{int(cc[1])}"
    text = str(cc).strip().lower()
    m = re.fullmatch(r"(?:sm_?)?(\d+)\.(\d+)", text) or re.fullmatch(r"(?:sm_?)?(\d+)(\d)", text)
    if not m:
        raise TPOError(f"compute capability {cc!r} is not of the form sm_87 or 8.7")
    return f"sm_{int(m.group(1))}{int(m.group(2))}"


def engine_cache_key(onnx_sha256: str, trt_version: str, compute_capability: str | tuple[int, int],
                     precision: Precision | str, profile: Mapping[str, Sequence[Sequence[int]]] | None) -> str:
    """The cache key (and file stem) of the engine for these five things; any change gives another key."""
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256 or ""):
        raise TPOError(f"engine cache key: {onnx_sha256!r} is not a sha256 hex digest")
    cc = normalize_compute_capability(compute_capability)
    parts = {
        "policy": BUILD_POLICY, "onnx_sha256": onnx_sha256, "tensorrt": str(trt_version),
        "compute_capability": cc, "precision": str(precision), "profile": _canonical_profile(profile),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    safe_version = re.sub(r"[^0-9A-Za-z.]+", "_", str(trt_version))
    safe_precision = re.sub(r"[^0-9A-Za-z]+", "_", str(precision))
    return f"{onnx_sha256[:12]}-trt{safe_version}-{cc}-{safe_precision}-{digest[:16]}"


# --------------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tpo-edge" / "engines"


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CachedEngine:
    key: str
    engine: Path
    metadata_path: Path
    metadata: dict[str, Any]

    def read(self, verify: bool = True) -> bytes:
        """The engine's bytes; with `verify`, refuse a file whose sha256 differs from the side file's."""
        try:
            data = self.engine.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{self.engine}: cannot read the TensorRT engine ({e.strerror})") from None
        expected = self.metadata.get("engine_sha256")
        if verify and expected and hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(
                f"{self.engine}: sha256 differs from its side file {self.metadata_path.name}; "
                f"the engine was changed or truncated, delete both and rebuild (tpo-export --targets tensorrt)"
            )
        return data


class EngineCache:
    """A folder of `<key>.engine` files with their `<key>.json` metadata side files."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}{ENGINE_SUFFIX}"

    def metadata_path(self, key: str) -> Path:
        return self.root / f"{key}{METADATA_SUFFIX}"

    def lookup(self, key: str) -> CachedEngine | None:
        """The complete entry under `key`, or None (missing, unreadable side file, or size mismatch)."""
        engine, meta_path = self.engine_path(key), self.metadata_path(key)
        if not engine.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != ENGINE_FORMAT or meta.get("key") != key:
            return None
        if meta.get("engine_bytes") is not None and engine.stat().st_size != meta["engine_bytes"]:
            return None
        return CachedEngine(key, engine, meta_path, meta)

    def store(self, key: str, engine_bytes: bytes | memoryview, metadata: Mapping[str, Any]) -> CachedEngine:
        """Write the engine (exactly these bytes), then its side file; both atomically."""
        view = memoryview(engine_bytes).cast("B")
        meta = dict(metadata)
        meta.update(format=ENGINE_FORMAT, key=key, engine_file=self.engine_path(key).name,
                    engine_bytes=view.nbytes, engine_sha256=hashlib.sha256(view).hexdigest())
        atomic_write(self.engine_path(key), view)
        atomic_write(self.metadata_path(key), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        return CachedEngine(key, self.engine_path(key), self.metadata_path(key), meta)

    def entries(self) -> list[CachedEngine]:
        if not self.root.is_dir():
            return []
        found = []
        for meta_path in sorted(self.root.glob(f"*{METADATA_SUFFIX}")):
            entry = self.lookup(meta_path.name[: -len(METADATA_SUFFIX)])
            if entry is not None:
                found.append(entry)
        return found

    def find(self, onnx_sha256: str, trt_version: str, compute_capability: str | tuple[int, int],
             precision: Precision | str) -> list[CachedEngine]:
        """Entries for this graph, TensorRT and GPU whatever their profile, newest first."""
        cc = normalize_compute_capability(compute_capability)
        hits = [e for e in self.entries()
                if e.metadata.get("onnx_sha256") == onnx_sha256
                and e.metadata.get("tensorrt_version") == str(trt_version)
                and e.metadata.get("compute_capability") == cc
                and e.metadata.get("precision") == str(precision)]
        return sorted(hits, key=lambda e: str(e.metadata.get("created", "")), reverse=True)
