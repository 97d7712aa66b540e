"""tpo.kernels: fused CUDA kernels for the frame path (preprocess, mask postprocess, span decode).

The runtime asks `available()` which path to take and prints it. On a GPU it makes one `GpuDevice`
(kernels compiled with NVRTC at first use, cached; see nvrtc.py) and calls the launchers on raw
device pointers (ONNX Runtime / TensorRT bindings, or arrays with __cuda_array_interface__):

    path = available()                       # KernelPath: "gpu" or "cpu", and why
    device = GpuDevice()                     # GpuUnavailableError with the reason if no GPU
    preprocess(device, Frame(...), [ImageOutput(...), ImageOutput(...)], stream=s)
    stats = postprocess_mask(device, logits, height=h, width=w, mask=mask_out, stream=s)
    spans = decode_spans(device, logits, spans, duration=d, top_k=5)

`EmulatedDevice` runs the same CUDA sources on the CPU (g++, for tests); `reference` holds the numpy
references. This package imports numpy and ctypes only; cuda-bindings is imported when first needed,
and torch never.
"""

from tpo.kernels.arrays import ArrayView, view_of
from tpo.kernels.device import Device, GpuDevice
from tpo.kernels.emulation import EmulatedDevice
from tpo.kernels.errors import GpuUnavailableError, KernelBuildError
from tpo.kernels.mask_postprocess import MaskStats, launch_mask_postprocess, postprocess_mask, read_mask_stats
from tpo.kernels.nvrtc import DEFAULT_ARCHS, build_cubins
from tpo.kernels.path import KernelPath, available
from tpo.kernels.preprocess import IMAGENET_MEAN, IMAGENET_STD, Frame, ImageOutput, preprocess
from tpo.kernels.span_decode import SpanWindows, decode_spans

__all__ = [
    "DEFAULT_ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArrayView",
    "Device",
    "EmulatedDevice",
    "Frame",
    "GpuDevice",
    "GpuUnavailableError",
    "ImageOutput",
    "KernelBuildError",
    "KernelPath",
    "MaskStats",
    "SpanWindows",
    "available",
    "build_cubins",
    "decode_spans",
    "launch_mask_postprocess",
    "postprocess_mask",
    "preprocess",
    "read_mask_stats",
    "view_of",
]
