"""Which path the frame pre/post-processing takes: the GPU kernels, or the CPU, and why.

`available()` never raises and never crashes on a machine without a driver: every missing piece
(cuda-bindings, libcuda, a device, NVRTC or prebuilt kernels for the device) becomes a `cpu` result
with a one-line reason. The runtime calls it once and prints the result.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def available(ordinal: int = 0) -> KernelPath:
    """Probe CUDA device `ordinal` and say whether the GPU kernels can run there, and why (not)."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return KernelPath("cpu", "cuda-bindings is not installed (pip install 'tpo-edge[gpu]')")
    try:
        (err,) = driver.cuInit(0)
    except (OSError, RuntimeError):  # cuda-pathfinder's DynamicLibNotFoundError is a RuntimeError
        return KernelPath("cpu", "no NVIDIA driver: libcuda could not be loaded")
    if err == driver.CUresult.CUDA_ERROR_NO_DEVICE:
        return KernelPath("cpu", "the NVIDIA driver reports no CUDA device")
    if err != driver.CUresult.CUDA_SUCCESS:
        return KernelPath("cpu", f"cuInit failed: {err.name}")
    err, count = driver.cuDeviceGetCount()
    if err != driver.CUresult.CUDA_SUCCESS or count == 0:
        return KernelPath("cpu", "the NVIDIA driver reports no CUDA device")
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
