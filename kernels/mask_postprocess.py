"""Mask postprocessing on a device: low-resolution logits -> frame-size mask, its box and area, one pass.

    stats = postprocess_mask(device, logits, height=1080, width=1920, mask=mask_out)   # MaskStats

`logits`: SAM2's low-resolution mask logits, [h, w] (or [1, h, w], [1, 1, h, w]), float32 or float16.
Upsampling is torch's bilinear interpolate with align_corners=False; a pixel is object when its
upsampled logit is above `threshold` (0: SAM2's rule). `mask` (optional): [height, width] uint8,
written 1 for object and 0 for background. The box is in pixel indices, both ends inclusive, as
torchvision.ops.masks_to_boxes gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpo.errors import InputError
from tpo.kernels.arrays import ArrayView, view_of
from tpo.kernels.device import Device
from tpo.kernels.params import MaskParams
from tpo.kernels.sources import MASK_POSTPROCESS, constant

BLOCK = 256
STATS_COUNT = 5  # int32 accumulators, see mask_postprocess.cu
LOGIT_DTYPES = {np.dtype(np.float32): "DTYPE_F32", np.dtype(np.float16): "DTYPE_F16"}


@dataclass(frozen=True)
class MaskStats:
    """area: object pixels at frame size; box: (x0, y0, x1, y1), inclusive, or None for an empty mask."""

    area: int
    box: tuple[int, int, int, int] | None


def decode_stats(raw: np.ndarray, height: int, width: int) -> MaskStats:
    """MaskStats from the kernel's five accumulators (see mask_postprocess.cu)."""
    raw = [int(v) for v in raw]
    if raw[4] == 0:
        return MaskStats(0, None)
    return MaskStats(raw[4], (width - raw[0], height - raw[1], raw[2] - 1, raw[3] - 1))


def plan_mask_postprocess(
    logits: ArrayView,
    height: int,
    width: int,
    threshold: float,
    mask: ArrayView | None,
    stats_ptr: int,
    pixels_per_thread: int | None = None,
) -> tuple[MaskParams, tuple[int, int, int], tuple[int, int, int]]:
    """Check everything and build the launch: (params, grid, block). pixels_per_thread: the kernel's
    TPO_MASK_PIXELS_PER_THREAD (default: common.cuh's; pass Device.constant's for a -D override)."""
    shape, strides = logits.shape, logits.strides
    while len(shape) > 2 and shape[0] == 1:
        shape, strides = shape[1:], strides[1:]
    if len(shape) != 2:
        raise InputError(f"mask logits must be [h, w] (or [1, 1, h, w]), got shape {logits.shape}")
    if logits.dtype not in LOGIT_DTYPES:
        raise InputError(f"mask logits dtype {logits.dtype} is not float32 or float16")
    item = logits.dtype.itemsize
    if 0 in shape:
        raise InputError(f"mask logits have zero size ({shape[0]}x{shape[1]})")
    if strides[1] != item or strides[0] % item or strides[0] < shape[1] * item:
        raise InputError(
            f"mask logits rows must be packed (strides [>= w*{item}, {item}]), got {logits.strides}"
        )
    if height <= 0 or width <= 0:
        raise InputError(f"frame size for the mask is zero ({width}x{height})")
    if height * width >= 2**31:
        raise InputError(f"frame {width}x{height} is too large: the mask area must fit in int32")
    if not np.isfinite(threshold):
        raise InputError(f"mask threshold must be finite, got {threshold}")

    p = MaskParams()
    p.logits = logits.ptr
    p.logits_pitch = strides[0] // item
    p.logits_height, p.logits_width = shape
    p.logits_dtype = constant(LOGIT_DTYPES[logits.dtype])
    p.height, p.width = height, width
    p.threshold = float(threshold)
    p.stats = stats_ptr
    if mask is not None:
        if mask.dtype != np.uint8 or mask.ndim != 2 or mask.shape != (height, width):
            raise InputError(
                f"mask output must be uint8 [{height}, {width}], got {mask.dtype} {list(mask.shape)}"
            )
        if mask.strides[1] != 1 or mask.strides[0] < width:
            raise InputError(
                f"mask output rows must be packed with pitch >= {width}, got strides {mask.strides}"
            )
        p.mask = mask.ptr
        p.mask_pitch = mask.strides[0]
    span = 32 * (pixels_per_thread or constant("MASK_PIXELS_PER_THREAD"))
    threads = 32 * -(-width // span) * height
    return p, (-(-threads // BLOCK), 1, 1), (BLOCK, 1, 1)


def launch_mask_postprocess(
    device: Device,
    logits,
    *,
    height: int,
    width: int,
    stats_ptr: int,
    threshold: float = 0.0,
    mask=None,
    stream: int = 0,
) -> None:
    """Zero the 5 int32 at `stats_ptr` and launch on `stream`; read them later with `read_mask_stats`."""
    logits = view_of(logits, "mask logits")
    device.check_reachable(logits, "mask logits")
    mask = None if mask is None else view_of(mask, "mask output")
    if mask is not None:
        device.check_reachable(mask, "mask output")
    per_thread = device.constant("MASK_PIXELS_PER_THREAD")
    params, grid, block = plan_mask_postprocess(logits, height, width, threshold, mask, stats_ptr, per_thread)
    device.memset_d32(stats_ptr, 0, STATS_COUNT, stream)
    device.launch(MASK_POSTPROCESS, grid, block, params, stream)


def read_mask_stats(device: Device, stats_ptr: int, height: int, width: int, stream: int = 0) -> MaskStats:
    raw = np.zeros(STATS_COUNT, np.int32)
    device.copy_to_host(raw, stats_ptr, stream)
    return decode_stats(raw, height, width)


def postprocess_mask(
    device: Device, logits, *, height: int, width: int, threshold: float = 0.0, mask=None, stream: int = 0
) -> MaskStats:
    """Upsample, threshold, box and area in one launch; waits for the result (the box is needed now)."""
    stats_ptr = device.scratch("mask_stats", 4 * STATS_COUNT)
    launch_mask_postprocess(
        device,
        logits,
        height=height,
        width=width,
        stats_ptr=stats_ptr,
        threshold=threshold,
        mask=mask,
        stream=stream,
    )
    return read_mask_stats(device, stats_ptr, height, width, stream)
