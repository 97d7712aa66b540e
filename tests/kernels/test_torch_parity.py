"""Dev-only: the preprocessing reference and the kernel against torch itself.

torchvision cannot be installed beside our torch build, so this compares with what torchvision's
resize of a uint8 tensor runs on the GPU (and torchvision's v1 functional resize runs everywhere):
torch.nn.functional.interpolate(x.float(), size, mode="bicubic", antialias=True, align_corners=False),
then clamp(0, 255), round half to even, uint8. Skipped only where torch is not installed.
"""

import numpy as np
import pytest

from tpo.kernels import Frame, ImageOutput, preprocess
from tpo.kernels import reference as ref

torch = pytest.importorskip(
    "torch", reason="torch is not installed (the `torch` extra); the torch parity check needs it"
)

SIZES = [
    (61, 97, 37, 53),
    (1080, 1920, 224, 224),
    (1080, 1920, 1024, 1024),
    (83, 129, 1024, 1024),
    (300, 401, 300, 150),
]


def torch_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8 -> torch's float32 antialiased bicubic result [height, width, 3]."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(
        x, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
    return y[0].permute(1, 2, 0).numpy()


def rounded(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)


@pytest.mark.parametrize("in_h, in_w, out_h, out_w", SIZES)
def test_reference_is_torch_antialiased_bicubic(rng, in_h, in_w, out_h, out_w):
    rgb = rng.integers(0, 256, (in_h, in_w, 3), np.uint8)
    exact = ref.resize_bicubic_aa(rgb, out_h, out_w)
    expected = torch_resize(rgb, out_h, out_w)
    assert (
        np.abs(exact - expected).max() < 5e-3
    )  # torch's float32 error: positions carry ~1e-5 relative error
    flipped = rounded(expected) != ref.resize_uint8(rgb, out_h, out_w)
    assert (np.abs(exact - np.floor(exact) - 0.5)[flipped] < 5e-3).all(), (
        "uint8 differs away from a rounding boundary"
    )


@pytest.mark.parametrize("in_h, in_w, out_h, out_w", [SIZES[0], SIZES[1], SIZES[3]])
def test_kernel_against_torch(emulated, rng, in_h, in_w, out_h, out_w):
    rgb = rng.integers(0, 256, (in_h, in_w, 3), np.uint8)
    out = np.zeros((3, out_h, out_w), np.uint8)
    preprocess(emulated, Frame.from_array(rgb, "rgb"), [ImageOutput.from_array(out)])
    expected = rounded(torch_resize(rgb, out_h, out_w)).transpose(2, 0, 1)
    diff = np.abs(out.astype(int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
