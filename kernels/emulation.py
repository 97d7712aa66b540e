"""Run the kernels' CUDA sources on the CPU: compiled as C++ by g++ with cpu_emulation.h, over the whole grid.

This is how CI checks the kernels' index arithmetic and edge handling without a GPU: `EmulatedDevice`
offers the same operations as `GpuDevice`, its "device memory" is host memory, and a launch runs
every (block, thread) of the grid through ctypes. The shared library is cached by the hash of the
sources, the generated driver and the compiler's version.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tpo.kernels.device import Device
from tpo.kernels.errors import KernelBuildError
from tpo.kernels.nvrtc import cache_dir
from tpo.kernels.params import STRUCTS
from tpo.kernels.sources import (
    EMULATION_HEADER,
    HEADERS,
    KERNEL_DIR,
    KERNELS,
    KernelSource,
    define_options,
    read_source,
)

CXX_FLAGS = (
    "-O2",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unknown-pragmas",
)


def driver_source(kernels: Sequence[KernelSource] = KERNELS, structs: Mapping[str, type] = STRUCTS) -> str:
    """The C++ translation unit: the kernels, a launcher per kernel and the layout of every param struct."""
    files = dict.fromkeys(str(k.directory / k.file) for k in kernels)
    lines = [f'#include "{EMULATION_HEADER}"', *(f'#include "{f}"' for f in files)]
    lines.append("#include <stddef.h>")
    for k in kernels:
        lines.append(
            f'extern "C" void tpo_emu_{k.entry}(const unsigned int* grid, const unsigned int* block, '
            f"const {k.params}* p, int workers) {{ tpo_emulate_grid({k.entry}, grid, block, p, workers); }}"
        )
    lines.append(  # for tests of the half-precision conversion the GPU does with cvt.rn.f16.f32
        'extern "C" void tpo_emu_f32_to_f16(const float* x, unsigned short* y, long long n) '
        "{ for (long long i = 0; i < n; ++i) y[i] = tpo_f32_to_f16(x[i]); }"
    )
    lines.append(
        'extern "C" void tpo_emu_f16_to_f32(const unsigned short* x, float* y, long long n) '
        "{ for (long long i = 0; i < n; ++i) y[i] = tpo_f16_to_f32(x[i]); }"
    )
    for name, struct in structs.items():
        fields = ", ".join(f"(long long)offsetof({name}, {f})" for f, _ in struct._fields_)
        lines.append(
            f'extern "C" const long long tpo_layout_{name}[] = {{(long long)sizeof({name}), {fields}}};'
        )
    return "\n".join(lines) + "\n"


def build_library(
    defines: Mapping[str, int] | None = None,
    kernels: Sequence[KernelSource] = KERNELS,
    structs: Mapping[str, type] = STRUCTS,
    out_dir: Path | None = None,
) -> Path:
    """Compile the emulation library (or find it cached) and return its path."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise KernelBuildError("the CPU emulation needs a C++ compiler: g++ not found (apt-get install g++)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    source = driver_source(kernels, structs)
    flags = [*CXX_FLAGS, *define_options(defines)]
    digest = hashlib.sha256()
    texts = [read_source(name) for name in (EMULATION_HEADER, *HEADERS)] + list(
        dict.fromkeys(k.source() for k in kernels)
    )
    for part in (source, version, " ".join(flags), *texts):
        digest.update(part.encode() + b"\0")
    out = Path(out_dir) if out_dir else cache_dir() / "emulation"
    path = out / f"tpo_kernels_emu-{digest.hexdigest()[:16]}.so"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        driver = Path(tmp) / "driver.cpp"
        driver.write_text(source)
        target = Path(tmp) / path.name
        result = subprocess.run(
            [compiler, *flags, "-I", str(KERNEL_DIR), str(driver), "-o", str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            first = next(
                (line for line in result.stderr.splitlines() if "error" in line), result.stderr[:300]
            )
            raise KernelBuildError(f"g++ could not build the kernel emulation: {first.strip()}")
        os.replace(target, path)
    return path


class EmulatedDevice(Device):
    """The kernels on the CPU. Pointers are host addresses (numpy arrays' `.ctypes.data`)."""

    kind = "cpu-emulation"
    memory = "host"

    def __init__(
        self,
        workers: int | None = None,
        defines: Mapping[str, int] | None = None,
        kernels: Sequence[KernelSource] = KERNELS,
        structs: Mapping[str, type] = STRUCTS,
    ):
        """workers: host threads a launch spreads its blocks over (default: all cores). kernels/structs:
        what to build (the package's three kernels; tests/gpu adds its naive multi-launch kernels)."""
        self.workers = workers or os.cpu_count() or 1
        self.defines = dict(defines or {})
        self._structs = dict(structs)
        self._lib = ctypes.CDLL(str(build_library(self.defines, kernels, structs)))
        self._check_layouts()
        self._buffers: dict[int, np.ndarray] = {}

    def launch(self, kernel, grid, block, params, stream=0):
        fn = getattr(self._lib, f"tpo_emu_{kernel.entry}")
        grid_c = (ctypes.c_uint * 3)(*grid)
        block_c = (ctypes.c_uint * 3)(*block)
        fn(grid_c, block_c, ctypes.byref(params), ctypes.c_int(self.workers))

    def alloc(self, nbytes):
        buf = np.zeros(max(int(nbytes), 1), np.uint8)
        self._buffers[buf.ctypes.data] = buf
        return buf.ctypes.data

    def free(self, ptr):
        self._buffers.pop(ptr, None)

    def copy_to_device(self, ptr, array, stream=0):
        array = np.ascontiguousarray(array)
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def copy_to_host(self, array, ptr, stream=0):
        if not array.flags.c_contiguous:
            raise ValueError("copy_to_host needs a C-contiguous array")
        ctypes.memmove(array.ctypes.data, ptr, array.nbytes)

    def copy_device(self, dst, src, nbytes, stream=0):
        ctypes.memmove(dst, src, nbytes)

    def memset_d32(self, ptr, value, count, stream=0):
        np.ctypeslib.as_array((ctypes.c_uint32 * count).from_address(ptr))[:] = value

    def synchronize(self, stream=0):
        pass

    def f32_to_f16(self, values: np.ndarray) -> np.ndarray:
        """The emulation's float -> half conversion (stands in for cvt.rn.f16.f32), for tests."""
        x = np.ascontiguousarray(values, np.float32)
        y = np.empty(x.shape, np.uint16)
        self._lib.tpo_emu_f32_to_f16(
            ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data), ctypes.c_longlong(x.size)
        )
        return y.view(np.float16)

    def f16_to_f32(self, values: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(values, np.float16).view(np.uint16)
        y = np.empty(x.shape, np.float32)
        self._lib.tpo_emu_f16_to_f32(
            ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data), ctypes.c_longlong(x.size)
        )
        return y

    def _check_layouts(self) -> None:
        for name, struct in self._structs.items():
            n = len(struct._fields_) + 1
            c_layout = list((ctypes.c_longlong * n).in_dll(self._lib, f"tpo_layout_{name}"))
            py_layout = [ctypes.sizeof(struct), *(getattr(struct, f).offset for f, _ in struct._fields_)]
            if c_layout != py_layout:
                raise RuntimeError(
                    f"tpo.kernels.params.{name} does not match the C struct: {py_layout} != {c_layout}"
                )
