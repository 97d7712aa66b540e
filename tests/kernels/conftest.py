"""Fixtures of the kernel tests: one CPU-emulated device per session and test frames in every format."""

import zlib

import numpy as np
import pytest

from tpo.kernels import EmulatedDevice, Frame
from tpo.kernels import reference as ref

CHANNELS = {"bgr": 3, "rgb": 3, "bgra": 4, "nv12": 1}


@pytest.fixture(scope="session")
def emulated():
    return EmulatedDevice()


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.fixture
def frame_factory():
    return make_frame


@pytest.fixture
def check_reference():
    return assert_matches_reference


def make_frame(rng, format: str, width: int, height: int, pad: int = 0):
    """(Frame over a random buffer with `pad` extra bytes per row, the RGB image the kernel must see, buffer).

    Padding bytes are random too, so reading past a row's end shows up as a wrong result."""
    pitch = width * CHANNELS[format] + pad
    if format == "nv12":
        pitch = max(pitch, 2 * ((width + 1) // 2))
        rows = height + (height + 1) // 2
    else:
        rows = height
    buffer = rng.integers(0, 256, (rows, pitch), np.uint8)
    if format == "nv12":
        frame = Frame.from_array(buffer, "nv12", width=width)
    else:
        view = np.lib.stride_tricks.as_strided(
            buffer, (height, width, CHANNELS[format]), (pitch, CHANNELS[format], 1)
        )
        frame = Frame.from_array(view, format)
    return frame, ref.frame_to_rgb(buffer, format, width, height, pitch), buffer


def assert_matches_reference(
    out: np.ndarray, rgb: np.ndarray, dtype: str, mean=ref.IMAGENET_MEAN, std=ref.IMAGENET_STD
) -> None:
    """`out` equals the reference preprocessing of `rgb`, except where the exact resized value lies
    within 5e-3 of a rounding boundary (x.5). The kernel works in float32 like torch: source positions
    (scale x index) carry ~1e-5 relative error, moving resized values by up to a few 1e-3 (torch's
    own float32 result is off by as much, see test_torch_parity.py), so those may round the other way
    and differ by one uint8 level (1 / (255 * std) after normalisation)."""
    _, height, width = out.shape
    expected = ref.preprocess_reference(rgb, height, width, dtype, mean, std)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    exact = ref.resize_bicubic_aa(rgb, height, width).transpose(2, 0, 1)
    near_half = np.abs(exact - np.floor(exact) - 0.5) < 5e-3
    diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
    level = 1.0 if dtype == "u8" else 1.0 / (255 * min(std)) + (4e-3 if dtype == "f16" else 1e-5)
    assert diff.max() <= level, f"max difference {diff.max()} is more than one uint8 level ({level})"
    unexplained = (diff > 0) & ~near_half
    assert not unexplained.any(), f"{int(unexplained.sum())} values differ away from a rounding boundary"
