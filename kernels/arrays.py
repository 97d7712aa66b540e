"""Memory the kernels read or write: a raw pointer with shape, byte strides, dtype and where it lives.

The kernels run on raw pointers, so any buffer works: ONNX Runtime I/O bindings and TensorRT bindings
give ints (`ArrayView.raw`), CuPy / Numba / torch CUDA tensors expose `__cuda_array_interface__`, and
numpy arrays (host memory, for the CPU emulation) expose `__array_interface__`. `view_of` takes all of
these. DLPack capsules: convert with the producing library first (e.g. `cupy.from_dlpack`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpo.errors import InputError


@dataclass(frozen=True)
class ArrayView:
    """ptr: address of element 0; strides in bytes; where: "device", "host" or "unknown" (a raw int)."""

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    where: str = "unknown"

    @classmethod
    def raw(cls, ptr: int, shape, dtype, strides=None, where: str = "unknown") -> ArrayView:
        """A view of memory known only by address; strides default to C-contiguous."""
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        if strides is None:
            strides, step = [], dtype.itemsize
            for n in reversed(shape):
                strides.insert(0, step)
                step *= max(n, 1)
        return cls(int(ptr), shape, tuple(int(s) for s in strides), dtype, where)

    @property
    def ndim(self) -> int:
        return len(self.shape)


def view_of(obj, name: str) -> ArrayView:
    """ArrayView of `obj` (ArrayView, numpy array or object with __cuda_array_interface__)."""
    if isinstance(obj, ArrayView):
        return obj
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_interface(obj.__cuda_array_interface__, "device", name)
    if isinstance(obj, np.ndarray):
        return _from_interface(obj.__array_interface__, "host", name)
    raise InputError(
        f"{name}: cannot read a pointer from {type(obj).__name__}; pass a numpy array, an object with "
        "__cuda_array_interface__ (CuPy, torch CUDA tensor) or tpo.kernels.ArrayView.raw(ptr, shape, dtype)"
    )


def _from_interface(interface: dict, where: str, name: str) -> ArrayView:
    shape = tuple(int(n) for n in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    strides = interface.get("strides")
    if strides is None:
        return ArrayView.raw(interface["data"][0], shape, dtype, where=where)
    if interface.get("mask") is not None:
        raise InputError(f"{name}: masked arrays are not supported")
    return ArrayView(int(interface["data"][0]), shape, tuple(int(s) for s in strides), dtype, where)
