"""Whether the tensorrt export target can run here, asked before any work, and the rest that the lint
(`tensorrt_lint`, which only needs the installed TensorRT's version) and the engine builds (`tensorrt_build`)
share: their errors, version parsing, and the check of the manifest both take (`in_folder`).

Torch-free. Nothing here creates a TensorRT object, and TensorRT itself is imported only by
`import_tensorrt`, after `gpu_probe()` (the CUDA driver through cuda-bindings) has found a GPU: on a machine
without one, creating TensorRT objects can crash the process, so each missing piece (GPU, TensorRT,
polygraphy, a TensorRT older than 10) is a `TensorRTUnavailable` with one line instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tpo import engine_cache as _cache
from tpo.contract import Manifest
from tpo.engine_cache import GpuInfo, module_available, tensorrt_version
from tpo.errors import TPOError

__all__ = ["MIN_TENSORRT", "TensorRTBuildError", "TensorRTUnavailable", "first_line", "gpu_probe",
           "import_tensorrt", "in_folder", "probe_tensorrt", "version_tuple"]

MIN_TENSORRT = (10, 0)   # INT64 bindings, execute_async_v3, strongly typed networks


class TensorRTUnavailable(TPOError):
    """The tensorrt target cannot run here: no GPU, no TensorRT or no polygraphy."""


class TensorRTBuildError(TPOError):
    """TensorRT refused a graph (parse or build failure)."""


def version_tuple(v: str) -> tuple[int, ...]:
    """"10.8.0.43" -> (10, 8, 0, 43); stops at the first part without digits ("10.15.1rc" -> (10, 15, 1))."""
    out = []
    for part in str(v).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's text (TensorRT and polygraphy errors run to pages)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def gpu_probe(ordinal: int = 0) -> GpuInfo | str:
    """CUDA device `ordinal` as a GpuInfo, or one line saying why there is none (cuda-bindings only).
    Looked up on `tpo.engine_cache` at each call, so the one probe can be replaced in tests."""
    return _cache.gpu_probe(ordinal)


def in_folder(manifest: Manifest, root: str | Path | None, caller: str) -> Manifest:
    """The manifest with its graph files looked up in `root` (None: where it was loaded from). A dict (the
    old untyped manifest) is refused with a TypeError naming the caller: a programming error, not a user's."""
    if not isinstance(manifest, Manifest):
        raise TypeError(f"{caller} takes a tpo.contract.Manifest (Manifest.load(folder)), not {type(manifest).__name__}")
    return manifest if root is None else replace(manifest, root=Path(root))


def _too_old(version: str) -> TensorRTUnavailable:
    return TensorRTUnavailable(f"tensorrt target: TensorRT {version} is too old "
                               f"(need {'.'.join(map(str, MIN_TENSORRT))} or newer)")


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
    if version is not None and version_tuple(version) < MIN_TENSORRT:
        raise _too_old(version)
    return gpu


def import_tensorrt(gpu_ordinal: int = 0) -> tuple[GpuInfo, Any]:
    """`probe_tensorrt`, then TensorRT imported: (the GPU, the tensorrt module). A broken install (missing
    libnvinfer, a CUDA mismatch) is one TensorRTUnavailable line too."""
    gpu = probe_tensorrt(gpu_ordinal)
    try:
        import tensorrt as trt
    except Exception as e:   # whatever the loader raises: one line, not a traceback
        detail = f": {first_line(e)}" if str(e).strip() else ""
        raise TensorRTUnavailable(f"tensorrt target: TensorRT failed to import ({type(e).__name__}{detail})") from None
    if version_tuple(trt.__version__) < MIN_TENSORRT:
        raise _too_old(trt.__version__)
    return gpu, trt
