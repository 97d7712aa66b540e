"""Where the kernels run: `GpuDevice` (CUDA driver API through cuda-bindings) and the common interface.

Both devices offer the same few operations, so the launch code in preprocess.py, mask_postprocess.py
and span_decode.py is one piece of Python whichever runs it; `EmulatedDevice` (emulation.py) runs the
same kernels on the CPU. Pointers are plain ints. `stream` is a CUstream handle as an int (0: the
legacy default stream), e.g. from ONNX Runtime or a CUDA runtime stream, in the primary context.
"""

from __future__ import annotations

import ctypes

import numpy as np

from tpo.errors import InputError
from tpo.kernels.arrays import ArrayView
from tpo.kernels.errors import GpuUnavailableError
from tpo.kernels.sources import KernelSource, constant


class Device:
    """The operations the launchers need. `kind` is "gpu" or "cpu-emulation"."""

    kind = ""
    memory = ""  # where its pointers point: "device" or "host"
    defines: dict[str, int] = {}  # -D overrides the kernels were compiled with (tuning experiments)

    def constant(self, name: str) -> int:
        """A TPO_<name> constant as this device's kernels were compiled (a -D override, else common.cuh)."""
        return self.defines.get("TPO_" + name, constant(name))

    def launch(self, kernel: KernelSource, grid, block, params: ctypes.Structure, stream: int = 0) -> None:
        raise NotImplementedError

    def alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def copy_to_device(self, ptr: int, array: np.ndarray, stream: int = 0) -> None:
        raise NotImplementedError

    def copy_to_host(self, array: np.ndarray, ptr: int, stream: int = 0) -> None:
        """Copy into `array` (C-contiguous) and wait for it."""
        raise NotImplementedError

    def copy_device(self, dst: int, src: int, nbytes: int, stream: int = 0) -> None:
        """Device-to-device copy, asynchronous on the GPU."""
        raise NotImplementedError

    def memset_d32(self, ptr: int, value: int, count: int, stream: int = 0) -> None:
        raise NotImplementedError

    def synchronize(self, stream: int = 0) -> None:
        raise NotImplementedError

    def scratch(self, name: str, nbytes: int) -> int:
        """A small buffer this device keeps for one purpose (e.g. mask statistics), reused across calls."""
        buffers = self.__dict__.setdefault("_scratch", {})
        ptr, size = buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.free(ptr)
            ptr, size = self.alloc(nbytes), nbytes
            buffers[name] = (ptr, size)
        return ptr

    def check_reachable(self, view: ArrayView, name: str) -> None:
        """Refuse host arrays on the GPU and device arrays in the emulation (raw ints are trusted)."""
        if view.where not in ("unknown", self.memory):
            raise InputError(
                f"{name} is in {view.where} memory but the {self.kind} kernels need {self.memory} memory: "
                f"copy it there first"
            )


class GpuDevice(Device):
    """A CUDA device through the driver API, in its primary context (the one the CUDA runtime, ONNX
    Runtime and TensorRT use), so their device pointers and streams work here unchanged."""

    kind = "gpu"
    memory = "device"

    def __init__(self, ordinal: int = 0, defines: dict[str, int] | None = None):
        from tpo.kernels.path import available

        path = available(ordinal)
        if not path.gpu:
            raise GpuUnavailableError(f"no GPU for tpo.kernels: {path.reason}")
        from cuda.bindings import driver

        self._driver = driver
        self.path = path
        self.arch = path.arch
        self.name = path.device
        self.defines = dict(defines or {})
        self._device = self._call(driver.cuDeviceGet, ordinal)
        self._context = self._call(driver.cuDevicePrimaryCtxRetain, self._device)
        self._call(driver.cuCtxSetCurrent, self._context)
        self._functions: dict[str, object] = {}  # by entry point
        self._modules: dict[str, object] = {}  # by kernel (source) name

    def function(self, kernel: KernelSource):
        """The loaded CUfunction of `kernel`; its module is compiled (or taken from the cache) on first use."""
        if kernel.entry not in self._functions:
            if kernel.name not in self._modules:
                from tpo.kernels.nvrtc import load_cubin

                cubin = load_cubin(kernel, self.arch, self.defines)
                self._make_current()
                self._modules[kernel.name] = self._call(self._driver.cuModuleLoadData, cubin)
            module = self._modules[kernel.name]
            self._functions[kernel.entry] = self._call(
                self._driver.cuModuleGetFunction, module, kernel.entry.encode()
            )
        return self._functions[kernel.entry]

    def launch(self, kernel, grid, block, params, stream=0):
        function = self.function(kernel)
        self._make_current()
        args = (ctypes.c_void_p * 1)(ctypes.addressof(params))
        self._call(self._driver.cuLaunchKernel, function, *grid, *block, 0, stream, ctypes.addressof(args), 0)

    def alloc(self, nbytes):
        self._make_current()
        return int(self._call(self._driver.cuMemAlloc, max(int(nbytes), 1)))

    def free(self, ptr):
        self._make_current()
        self._call(self._driver.cuMemFree, ptr)

    def copy_to_device(self, ptr, array, stream=0):
        array = np.ascontiguousarray(array)
        self._make_current()
        self._call(self._driver.cuMemcpyHtoDAsync, ptr, array.ctypes.data, array.nbytes, stream)
        self.synchronize(stream)  # `array` may be a temporary: finish before it goes

    def copy_to_host(self, array, ptr, stream=0):
        if not array.flags.c_contiguous:
            raise ValueError("copy_to_host needs a C-contiguous array")
        self._make_current()
        self._call(self._driver.cuMemcpyDtoHAsync, array.ctypes.data, ptr, array.nbytes, stream)
        self.synchronize(stream)

    def copy_device(self, dst, src, nbytes, stream=0):
        self._make_current()
        self._call(self._driver.cuMemcpyDtoDAsync, dst, src, nbytes, stream)

    def memset_d32(self, ptr, value, count, stream=0):
        self._make_current()
        self._call(self._driver.cuMemsetD32Async, ptr, value, count, stream)

    def synchronize(self, stream=0):
        self._make_current()
        if stream:
            self._call(self._driver.cuStreamSynchronize, stream)
        else:
            self._call(self._driver.cuCtxSynchronize)

    def _make_current(self) -> None:
        current = self._call(self._driver.cuCtxGetCurrent)
        if int(current) != int(self._context):
            self._call(self._driver.cuCtxSetCurrent, self._context)

    def _call(self, fn, *args):
        result = fn(*args)
        err, values = result[0], result[1:]
        if err != self._driver.CUresult.CUDA_SUCCESS:
            raise RuntimeError(
                f"CUDA driver call {fn.__name__} failed: {err.name} on {self.name} ({self.arch})"
            )
        return values[0] if len(values) == 1 else (values or None)
