"""Frame preprocessing on a device: one uint8 frame -> the model inputs (up to two) in one launch.

    frame = Frame.from_array(bgr, "bgr")                  # or Frame(ptr, width, height, pitch, "nv12", ...)
    video = ImageOutput.from_array(clip[0, :, t])         # [3, 224, 224] slice of a [1, 3, T, 224, 224] clip
    mask = ImageOutput(ptr, 1024, 1024, dtype="f32")      # raw device pointer, e.g. an ONNX Runtime binding
    preprocess(device, frame, [video, mask], stream=s)

What each output holds: see preprocess.cu (torchvision's antialiased bicubic resize of a uint8 image,
rounded to uint8, then /255 and ImageNet mean/std, RGB planes; with `round_u8=False` the resize is kept
in float, neither clamped nor rounded, as a resize of the /255 float image gives it). NV12 is decoded with OpenCV's BT.601
limited-range integer formula; pixel (x, y) takes chroma pair x // 2 of chroma row y // 2, so odd
widths and heights need ceil(width / 2) pairs per chroma row and ceil(height / 2) chroma rows.
Everything is checked before launch; a bad frame or output raises InputError naming the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tpo.errors import InputError
from tpo.kernels.arrays import ArrayView, view_of
from tpo.kernels.device import Device
from tpo.kernels.params import PreprocessParams
from tpo.kernels.sources import PREPROCESS, constant

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMATS = {"bgr": 3, "rgb": 3, "bgra": 4, "nv12": 1}  # bytes per pixel (of the Y plane for nv12)
DTYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "u8": np.dtype(np.uint8)}
BLOCK = 256
MAX_OUTPUTS = 2


@dataclass(frozen=True)
class Frame:
    """A uint8 frame the kernel reads. ptr: first byte (of the Y plane for nv12); pitch: bytes per row.

    nv12: uv_ptr is the interleaved U, V plane (0: right after the Y plane, at ptr + pitch * height),
    uv_pitch its bytes per row (0: pitch). nbytes/uv_nbytes: allocation sizes, checked when given.
    where: "device", "host" or "unknown" (raw pointer; not checked).
    """

    ptr: int
    width: int
    height: int
    pitch: int
    format: str
    uv_ptr: int = 0
    uv_pitch: int = 0
    nbytes: int | None = None
    uv_nbytes: int | None = None
    where: str = "unknown"

    @classmethod
    def from_array(cls, obj, format: str, width: int | None = None) -> Frame:
        """From an array: [H, W, C] uint8 for bgr/rgb/bgra (rows may be padded), or for nv12 a
        [H + ceil(H/2), P] uint8 buffer (Y rows then chroma rows). `width` overrides the nv12 width
        (needed when it is odd, as chroma rows are then one byte wider than the image)."""
        view = view_of(obj, "frame")
        _check_format(format)
        if view.dtype != np.uint8:
            raise InputError(f"frame dtype is {view.dtype}; the preprocess kernel reads uint8 frames")
        if format == "nv12":
            if view.ndim != 2 or view.strides[1] != 1:
                raise InputError(
                    f"nv12 frame array must be [H + ceil(H/2), W] with unit column stride, got {view.shape}"
                )
            rows, columns = view.shape
            height = (2 * rows) // 3
            if height + (height + 1) // 2 != rows:
                raise InputError(
                    f"nv12 frame array has {rows} rows, which is not H + ceil(H/2) for any height H"
                )
            w = columns if width is None else int(width)
            if w > columns:
                raise InputError(f"nv12 width {w} is wider than the frame array ({columns} columns)")
            pitch = view.strides[0]
            return cls(
                view.ptr,
                w,
                height,
                pitch,
                format,
                view.ptr + pitch * height,
                pitch,
                nbytes=pitch * (height - 1) + columns,
                uv_nbytes=pitch * (rows - height - 1) + columns,
                where=view.where,
            )
        channels = FORMATS[format]
        if view.ndim != 3 or view.shape[2] != channels:
            raise InputError(f"{format} frame array must be [H, W, {channels}], got shape {view.shape}")
        if view.strides[1:] != (channels, 1):
            raise InputError(
                f"{format} frame array must have packed pixels (strides [pitch, {channels}, 1]), got {view.strides}"
            )
        height, w = view.shape[:2]
        pitch = view.strides[0]
        return cls(
            view.ptr,
            w,
            height,
            pitch,
            format,
            nbytes=pitch * max(height - 1, 0) + w * channels,
            where=view.where,
        )


@dataclass(frozen=True)
class ImageOutput:
    """A [3, height, width] RGB output; channel planes channel_stride elements apart (0: height * width).

    dtype: "f32", "f16" (normalised) or "u8" (the rounded resize before normalisation, for checks).
    round_u8: True (default) clamps and rounds the resize to uint8 before normalising (torchvision's
    resize of a uint8 image: the video encoder's input); False keeps it in float, no clamp (a resize of
    the /255 float image: SAM2's mask encoder input). "u8" needs True.
    """

    ptr: int
    height: int
    width: int
    dtype: str = "f32"
    channel_stride: int = 0
    nbytes: int | None = None
    where: str = "unknown"
    round_u8: bool = True

    @classmethod
    def from_array(cls, obj, round_u8: bool = True) -> ImageOutput:
        """From a [3, H, W] array (or [1, 3, H, W]) with packed rows; any channel stride."""
        view = view_of(obj, "output")
        shape, strides = view.shape, view.strides
        if len(shape) == 4 and shape[0] == 1:
            shape, strides = shape[1:], strides[1:]
        if len(shape) != 3 or shape[0] != 3:
            raise InputError(f"output array must be [3, H, W], got shape {view.shape}")
        dtype = next((name for name, dt in DTYPES.items() if dt == view.dtype), None)
        if dtype is None:
            raise InputError(f"output dtype {view.dtype} is not one of float32, float16, uint8")
        item = view.dtype.itemsize
        if strides[1:] != (shape[2] * item, item) or strides[0] % item:
            raise InputError(
                f"output array must have packed rows (strides [*, W*{item}, {item}]), got {strides}"
            )
        return cls(
            view.ptr, shape[1], shape[2], dtype, strides[0] // item, where=view.where, round_u8=round_u8
        )

    @property
    def plane_stride(self) -> int:
        return self.channel_stride or self.height * self.width


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise InputError(f"unsupported frame format {format!r}: use one of {', '.join(FORMATS)}")


def check_frame(frame: Frame) -> None:
    """Refuse a frame the kernel would misread, with the broken limit in the message."""
    _check_format(frame.format)
    if frame.width <= 0 or frame.height <= 0:
        raise InputError(f"frame has zero size ({frame.width}x{frame.height})")
    if frame.ptr == 0:
        raise InputError("frame pointer is null")
    row_bytes = frame.width * FORMATS[frame.format]
    if frame.pitch < row_bytes:
        raise InputError(
            f"frame pitch {frame.pitch} is less than width {frame.width} x {FORMATS[frame.format]} bytes = "
            f"{row_bytes} for {frame.format}"
        )
    needed = frame.pitch * (frame.height - 1) + row_bytes
    if frame.nbytes is not None and frame.nbytes < needed:
        raise InputError(
            f"frame buffer of {frame.nbytes} bytes is smaller than {frame.height} rows of pitch {frame.pitch} ({needed} bytes)"
        )
    if frame.format == "nv12":
        uv_row = 2 * ((frame.width + 1) // 2)
        uv_pitch = frame.uv_pitch or frame.pitch
        if uv_pitch < uv_row:
            raise InputError(
                f"nv12 chroma pitch {uv_pitch} is less than {uv_row} bytes ({(frame.width + 1) // 2} U,V pairs "
                f"for width {frame.width})"
            )
        uv_needed = uv_pitch * ((frame.height + 1) // 2 - 1) + uv_row
        if frame.uv_nbytes is not None and frame.uv_nbytes < uv_needed:
            raise InputError(
                f"nv12 chroma plane of {frame.uv_nbytes} bytes is smaller than the {uv_needed} bytes needed"
            )
    if frame.width >= 2**31 // 4 or frame.height >= 2**31 // 4:
        raise InputError(f"frame {frame.width}x{frame.height} is too large for 32-bit pixel indices")


def check_output(out: ImageOutput, index: int) -> None:
    name = f"output {index} ({out.height}x{out.width} {out.dtype})"
    if out.dtype not in DTYPES:
        raise InputError(f"output {index} dtype {out.dtype!r} is not one of {', '.join(DTYPES)}")
    if out.width <= 0 or out.height <= 0:
        raise InputError(f"output {index} has zero size ({out.height}x{out.width})")
    if out.dtype == "u8" and not out.round_u8:
        raise InputError(f"{name}: a u8 output holds the rounded resize; round_u8=False needs f32 or f16")
    if out.ptr == 0:
        raise InputError(f"{name}: pointer is null")
    plane = out.height * out.width
    if out.channel_stride and out.channel_stride < plane:
        raise InputError(f"{name}: channel stride {out.channel_stride} is less than height x width = {plane}")
    needed = (2 * out.plane_stride + plane) * DTYPES[out.dtype].itemsize
    if out.nbytes is not None and out.nbytes < needed:
        raise InputError(f"{name}: buffer of {out.nbytes} bytes is smaller than the {needed} bytes needed")
    if plane >= 2**31:
        raise InputError(f"{name}: too large for 32-bit pixel indices")


def plan_preprocess(
    frame: Frame,
    outputs: Sequence[ImageOutput],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    rows_per_thread: int | None = None,
) -> tuple[PreprocessParams, tuple[int, int, int], tuple[int, int, int]]:
    """Check everything and build the launch: (params, grid, block). rows_per_thread: the kernel's
    TPO_PREPROCESS_ROWS (default: common.cuh's; pass Device.constant's for a -D override)."""
    check_frame(frame)
    if not 1 <= len(outputs) <= MAX_OUTPUTS:
        raise InputError(f"preprocess writes 1 or 2 outputs per launch, got {len(outputs)}")
    for i, out in enumerate(outputs):
        check_output(out, i)
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise InputError(
            f"mean and std need 3 values each and std > 0, got mean={tuple(mean)} std={tuple(std)}"
        )

    p = PreprocessParams()
    p.src = frame.ptr
    p.pitch = frame.pitch
    if frame.format == "nv12":
        p.src_uv = frame.uv_ptr or frame.ptr + frame.pitch * frame.height
        p.uv_pitch = frame.uv_pitch or frame.pitch
    p.width, p.height = frame.width, frame.height
    p.format = constant("FORMAT_" + frame.format.upper())
    rows = rows_per_thread or constant("PREPROCESS_ROWS")
    total_blocks = 0
    # The output with the most work per thread goes first, so its blocks start first.
    ordered = sorted(outputs, key=lambda o: -(frame.width / o.width) * (frame.height / o.height))
    for slot, out in enumerate(ordered):
        threads = out.width * -(-out.height // rows)
        blocks = -(-threads // BLOCK)
        o = p.out[slot]
        o.data = out.ptr
        o.channel_stride = out.plane_stride
        o.height, o.width = out.height, out.width
        o.dtype = constant("DTYPE_" + out.dtype.upper())
        o.blocks = blocks
        o.round_u8 = 1 if out.round_u8 else 0
        total_blocks += blocks
    for c in range(3):
        p.mean[c], p.std[c] = float(mean[c]), float(std[c])
    return p, (total_blocks, 1, 1), (BLOCK, 1, 1)


def preprocess(
    device: Device,
    frame: Frame,
    outputs: Sequence[ImageOutput],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    stream: int = 0,
) -> None:
    """Write every output from `frame` in one launch on `stream` (asynchronous on the GPU)."""
    device.check_reachable(ArrayView.raw(frame.ptr, (0,), np.uint8, where=frame.where), "frame")
    for i, out in enumerate(outputs):
        device.check_reachable(ArrayView.raw(out.ptr, (0,), np.uint8, where=out.where), f"output {i}")
    params, grid, block = plan_preprocess(frame, outputs, mean, std, device.constant("PREPROCESS_ROWS"))
    device.launch(PREPROCESS, grid, block, params, stream)
