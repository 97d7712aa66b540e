"""Bad input is refused before launch with one clear line naming the broken limit."""

import numpy as np
import pytest

from tpo.errors import InputError
from tpo.kernels import ArrayView, Device, Frame, ImageOutput, decode_spans, postprocess_mask, preprocess


class RecordingDevice(Device):
    """Accepts any pointer and records launches, so a test can see that nothing was launched."""

    kind = "recording"
    memory = "host"

    def __init__(self):
        self.launches = []

    def launch(self, kernel, grid, block, params, stream=0):
        self.launches.append(kernel.name)

    def alloc(self, nbytes):
        return 4096

    def memset_d32(self, ptr, value, count, stream=0):
        pass


class CudaArray:
    """Stands in for a CuPy array: only __cuda_array_interface__."""

    __cuda_array_interface__ = {"shape": (10, 2), "typestr": "<f4", "data": (1 << 40, False), "version": 3}


FRAME = Frame(1 << 20, 100, 50, 300, "bgr")
OUT = ImageOutput(1 << 30, 224, 224, "f16")

PREPROCESS_CASES = {
    "pitch": (
        Frame(1 << 20, 100, 50, 299, "bgr"),
        [OUT],
        "frame pitch 299 is less than width 100 x 3 bytes = 300 for bgr",
    ),
    "bgra pitch": (
        Frame(1 << 20, 100, 50, 300, "bgra"),
        [OUT],
        "frame pitch 300 is less than width 100 x 4 bytes = 400",
    ),
    "zero width": (Frame(1 << 20, 0, 50, 300, "bgr"), [OUT], "frame has zero size (0x50)"),
    "zero height": (Frame(1 << 20, 100, 0, 300, "bgr"), [OUT], "frame has zero size (100x0)"),
    "format": (
        Frame(1 << 20, 100, 50, 300, "yuyv"),
        [OUT],
        "unsupported frame format 'yuyv': use one of bgr, rgb, bgra, nv12",
    ),
    "null frame": (Frame(0, 100, 50, 300, "bgr"), [OUT], "frame pointer is null"),
    "frame bytes": (
        Frame(1 << 20, 100, 50, 300, "bgr", nbytes=14_000),
        [OUT],
        "frame buffer of 14000 bytes is smaller",
    ),
    "nv12 chroma pitch": (
        Frame(1 << 20, 101, 50, 101, "nv12"),
        [OUT],
        "nv12 chroma pitch 101 is less than 102 bytes",
    ),
    "no output": (FRAME, [], "preprocess writes 1 or 2 outputs per launch, got 0"),
    "three outputs": (FRAME, [OUT, OUT, OUT], "got 3"),
    "output size": (FRAME, [ImageOutput(1 << 30, 0, 224)], "output 0 has zero size (0x224)"),
    "output dtype": (
        FRAME,
        [ImageOutput(1 << 30, 224, 224, "bf16")],
        "output 0 dtype 'bf16' is not one of f32, f16, u8",
    ),
    "channel stride": (
        FRAME,
        [OUT, ImageOutput(1 << 30, 8, 8, channel_stride=63)],
        "channel stride 63 is less than height x width = 64",
    ),
    "output bytes": (
        FRAME,
        [ImageOutput(1 << 30, 8, 8, "f32", nbytes=700)],
        "buffer of 700 bytes is smaller than the 768 bytes needed",
    ),
    "u8 without rounding": (
        FRAME,
        [ImageOutput(1 << 30, 8, 8, "u8", round_u8=False)],
        "a u8 output holds the rounded resize; round_u8=False needs f32 or f16",
    ),
}


@pytest.mark.parametrize("case", PREPROCESS_CASES)
def test_preprocess_refuses(case):
    frame, outputs, message = PREPROCESS_CASES[case]
    device = RecordingDevice()
    with pytest.raises(InputError) as e:
        preprocess(device, frame, outputs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert device.launches == []


def test_preprocess_refuses_bad_mean_std():
    with pytest.raises(InputError, match="std > 0"):
        preprocess(RecordingDevice(), FRAME, [OUT], std=(0.2, 0.0, 0.2))


@pytest.mark.parametrize(
    "array, format, message",
    [
        (np.zeros((4, 5, 3), np.float32), "bgr", "frame dtype is float32"),
        (np.zeros((4, 5, 4), np.uint8), "bgr", "bgr frame array must be [H, W, 3], got shape (4, 5, 4)"),
        (np.zeros((4, 5), np.uint8), "nv12", "nv12 frame array has 4 rows"),
        (np.zeros((6, 5, 3), np.uint8)[:, ::2], "rgb", "packed pixels"),
    ],
)
def test_frame_from_array_refuses(array, format, message):
    with pytest.raises(InputError) as e:
        Frame.from_array(array, format)
    assert message in str(e.value)


def test_output_from_array_refuses():
    with pytest.raises(InputError, match=r"output array must be \[3, H, W\]"):
        ImageOutput.from_array(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(InputError, match="not one of float32, float16, uint8"):
        ImageOutput.from_array(np.zeros((3, 8, 8), np.float64))


LOGITS = np.zeros((16, 16), np.float32)
MASK_CASES = {
    "dtype": (dict(logits=LOGITS.astype(np.int32)), "mask logits dtype int32 is not float32 or float16"),
    "shape": (dict(logits=np.zeros((2, 16, 16), np.float32)), "mask logits must be [h, w]"),
    "zero logits": (dict(logits=np.zeros((0, 16), np.float32)), "mask logits have zero size (0x16)"),
    "column major": (dict(logits=np.asfortranarray(np.zeros((16, 12), np.float32))), "rows must be packed"),
    "zero frame": (dict(height=0), "frame size for the mask is zero (40x0)"),
    "mask shape": (
        dict(height=31, mask=np.zeros((30, 40), np.uint8)),
        "mask output must be uint8 [31, 40], got uint8 [30, 40]",
    ),
    "mask dtype": (dict(mask=np.zeros((30, 40), np.float32)), "mask output must be uint8"),
    "threshold": (dict(threshold=float("nan")), "mask threshold must be finite"),
    "device memory": (
        dict(logits=CudaArray()),
        "mask logits is in device memory but the cpu-emulation kernels need host memory",
    ),
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_postprocess_refuses(case, emulated):
    kwargs, message = MASK_CASES[case]
    args = dict(logits=LOGITS, height=30, width=40) | kwargs
    with pytest.raises(InputError) as e:
        postprocess_mask(emulated, args.pop("logits"), **args)
    assert message in str(e.value) and "\n" not in str(e.value)


PAIRS = np.zeros((10, 2), np.float32)
SPAN_CASES = {
    "top_k zero": (dict(top_k=0), "top_k 0 must be between 1 and the number of queries (10)"),
    "top_k large": (dict(top_k=11), "top_k 11 must be between 1 and the number of queries (10)"),
    "duration": (dict(duration=0.0), "clip duration must be a positive number of seconds, got 0.0"),
    "round_to": (dict(round_to=-1.0), "round_to must be >= 0 seconds"),
    "shape": (dict(spans=np.zeros((9, 2), np.float32)), "one (centre, width) per query"),
    "pairs": (dict(logits=np.zeros((10, 3), np.float32)), "span logits must be [queries, 2]"),
    "dtype": (dict(logits=PAIRS.astype(np.float64)), "span logits dtype float64 is not float32"),
    "too many": (
        dict(logits=np.zeros((1025, 2), np.float32), spans=np.zeros((1025, 2), np.float32)),
        "1 to 1024 queries",
    ),
}


@pytest.mark.parametrize("case", SPAN_CASES)
def test_span_decode_refuses(case, emulated):
    kwargs, message = SPAN_CASES[case]
    args = dict(logits=PAIRS, spans=PAIRS, duration=10.0, top_k=5) | kwargs
    with pytest.raises(InputError) as e:
        decode_spans(emulated, args.pop("logits"), args.pop("spans"), **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_host_array_refused_on_device_memory():
    class DeviceOnly(RecordingDevice):
        kind, memory = "gpu", "device"

    with pytest.raises(
        InputError, match="mask logits is in host memory but the gpu kernels need device memory"
    ):
        postprocess_mask(DeviceOnly(), LOGITS, height=30, width=40)


def test_raw_pointer_views():
    view = ArrayView.raw(1234, (3, 4), np.float16)
    assert view.strides == (8, 2) and view.where == "unknown"
