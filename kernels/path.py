"""Which path the frame pre/post-processing takes: the GPU kernels, or the CPU, and why.

`available()` never raises and never crashes on a machine without a driver: every missing piece
(cuda-bindings, libcuda, a device, NVRTC or prebuilt kernels for the device) becomes a `cpu` result
with a one-line reason. The runtime calls it once and prints the result.

A machine without a GPU is told so plainly ("no GPU present: ..., so the CPU path runs"), never to
install GPU packages: the hint to install `tpo-edge[gpu]` appears only where the NVIDIA driver reports a
device that cuda-bindings is missing for. Without cuda-bindings the driver is asked through ctypes
(`cuInit`, `cuDeviceGetCount`: no context, no allocation).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass

CPU_RUNS = "so the CPU path runs"
NO_DRIVER = "no GPU present: no NVIDIA driver (libcuda could not be loaded)"
NO_DEVICE = "no GPU present: the NVIDIA driver reports no CUDA device"


@dataclass(frozen=True)
class KernelPath:
    """kind: "gpu" (tpo.kernels on the device) or "cpu"; reason: one line saying why."""

    kind: str
    reason: str
    device: str | None = None  # GPU name, when one was found
    arch: str | None = None  # e.g. "sm_90", when a GPU was found
    ordinal: int = 0

    @property
    def gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        return f"kernel path: {self.kind} ({self.reason})"


_LIBCUDA = {"win32": ("nvcuda.dll",), "darwin": ()}.get(sys.platform, ("libcuda.so.1", "libcuda.so"))
_CUDA_SUCCESS, _CUDA_ERROR_NO_DEVICE = 0, 100


def driver_device_count(load: Callable[[str], object] = ctypes.CDLL) -> int | str:
    """CUDA devices the NVIDIA driver reports, asked of libcuda through ctypes (for machines without
    cuda-bindings), or one line saying why there is no count."""
    for name in _LIBCUDA:
        try:
            lib = load(name)
        except OSError:
            continue
        err = lib.cuInit(0)
        if err == _CUDA_ERROR_NO_DEVICE:
            return 0
        if err != _CUDA_SUCCESS:
            return f"the NVIDIA driver did not initialise (cuInit error {err})"
        count = ctypes.c_int(0)
        err = lib.cuDeviceGetCount(ctypes.byref(count))
        return count.value if err == _CUDA_SUCCESS else f"cuDeviceGetCount error {err}"
    return NO_DRIVER


def without_bindings(count: int | str | None = None) -> tuple[bool, str]:
    """(a GPU is present, one line) for a machine without cuda-bindings: `count` is
    `driver_device_count()`'s answer (asked when None). The install hint only where a GPU is present."""
    count = driver_device_count() if count is None else count
    if isinstance(count, str):
        return False, count
    if count == 0:
        return False, NO_DEVICE
    return True, (f"{count} NVIDIA GPU(s) present but cuda-bindings is not installed "
                  "(pip install 'tpo-edge[gpu]')")


def available(ordinal: int = 0) -> KernelPath:
    """Probe CUDA device `ordinal` and say whether the GPU kernels can run there, and why (not)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        present, why = without_bindings()
        return KernelPath("cpu", why if present else f"{why}, {CPU_RUNS}")
    try:
        (err,) = driver.cuInit(0)
    except (OSError, RuntimeError):  # cuda-pathfinder's DynamicLibNotFoundError is a RuntimeError
        return KernelPath("cpu", f"{NO_DRIVER}, {CPU_RUNS}")
    if err == driver.CUresult.CUDA_ERROR_NO_DEVICE:
        return KernelPath("cpu", f"{NO_DEVICE}, {CPU_RUNS}")
    if err != driver.CUresult.CUDA_SUCCESS:
        return KernelPath("cpu", f"cuInit failed: {err.name}")
    err, count = driver.cuDeviceGetCount()
    if err != driver.CUresult.CUDA_SUCCESS or count == 0:
        return KernelPath("cpu", f"{NO_DEVICE}, {CPU_RUNS}")
    if not 0 <= ordinal < count:
        return KernelPath("cpu", f"CUDA device {ordinal} requested but only {count} present")
    err, dev = driver.cuDeviceGet(ordinal)
    err, raw_name = driver.cuDeviceGetName(128, dev)
    name = (
        raw_name.split(b"\0", 1)[0].decode(errors="replace") if err == driver.CUresult.CUDA_SUCCESS else "GPU"
    )
    attr = driver.CUdevice_attribute
    _, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
    _, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
    arch = f"sm_{major}{minor}"
    _, driver_version = driver.cuDriverGetVersion()
    found = f"{name} ({arch}, driver CUDA {driver_version // 1000}.{driver_version % 1000 // 10})"

    from tpo.kernels import nvrtc

    problem = nvrtc.why_not_loadable(arch, driver_version)
    if problem:
        return KernelPath("cpu", f"{found} found, but {problem}", name, arch, ordinal)
    return KernelPath("gpu", f"{found}; {nvrtc.describe_build(arch)}", name, arch, ordinal)
