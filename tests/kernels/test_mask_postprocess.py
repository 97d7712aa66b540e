"""Mask postprocess kernel, run over its whole grid on the CPU, against the numpy reference.

Pixels whose exact upsampled logit is within 1e-4 of the threshold may fall either way in float32;
random logits almost never produce one, and the tests say so when they do.
"""

import numpy as np
import pytest

from tpo.kernels import EmulatedDevice, MaskStats, postprocess_mask
from tpo.kernels import reference as ref


def smooth_logits(rng, h, w, bias=-0.5):
    """Blob-like logits: coarse noise upsampled, so the mask has regions rather than speckle."""
    coarse = rng.normal(bias, 2.0, (max(h // 8, 2), max(w // 8, 2)))
    return np.ascontiguousarray(ref.upsample_bilinear(coarse, h, w), np.float32)


def check(device, logits, height, width, threshold=0.0, pad=0):
    buffer = np.full((height, width + pad), 7, np.uint8)
    stats = postprocess_mask(
        device, logits, height=height, width=width, threshold=threshold, mask=buffer[:, :width]
    )
    values, expected, area, box = ref.mask_reference(logits.astype(np.float64), height, width, threshold)
    ambiguous = np.abs(values - threshold) < 1e-4
    mask = buffer[:, :width]
    assert set(np.unique(mask)) <= {0, 1}
    assert (buffer[:, width:] == 7).all(), "padding of the mask rows was written"
    assert ((mask == 1) == expected)[~ambiguous].all()
    if not ambiguous.any():
        assert stats == MaskStats(area, box)
    # whatever the ambiguous pixels did, box and area describe the mask the kernel wrote
    ys, xs = np.nonzero(mask)
    own_box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None
    assert stats == MaskStats(int(mask.sum()), own_box)
    return stats


class TestMaskPostprocess:
    @pytest.mark.parametrize(
        "h, w, height, width, pad",
        [(37, 53, 101, 67, 0), (256, 256, 333, 517, 9), (64, 64, 7, 2500, 3), (256, 256, 1080, 1920, 0)],
    )
    def test_matches_reference(self, emulated, rng, h, w, height, width, pad):
        stats = check(emulated, smooth_logits(rng, h, w), height, width, pad=pad)
        assert 0 < stats.area < height * width

    def test_float16_logits(self, emulated, rng):
        logits = smooth_logits(rng, 48, 40).astype(np.float16)
        check(emulated, logits, 95, 121)

    def test_threshold(self, emulated, rng):
        logits = smooth_logits(rng, 30, 30, bias=1.0)
        low = check(emulated, logits, 61, 59, threshold=0.0)
        high = check(emulated, logits, 61, 59, threshold=2.0)
        assert high.area < low.area

    def test_empty_mask(self, emulated):
        logits = np.full((16, 16), -3.0, np.float32)
        assert check(emulated, logits, 45, 77) == MaskStats(0, None)

    def test_full_mask(self, emulated):
        logits = np.full((16, 16), 3.0, np.float32)
        assert check(emulated, logits, 45, 77) == MaskStats(45 * 77, (0, 0, 76, 44))

    def test_single_cell_object(self, emulated):
        logits = np.full((32, 32), -10.0, np.float32)
        logits[20, 5] = 10.0
        stats = check(emulated, logits, 128, 96)  # 3x in x, 4x in y: the cell's centre lands on (16, 81.5)
        x0, y0, x1, y1 = stats.box
        assert x0 < 16 < x1 and y0 < 81 < 82 < y1 and stats.area < 20

    def test_without_mask_output(self, emulated, rng):
        logits = smooth_logits(rng, 40, 24)
        _, _, area, box = ref.mask_reference(logits, 50, 70)
        assert postprocess_mask(emulated, logits, height=50, width=70) == MaskStats(area, box)

    def test_sam2_shaped_logits(self, emulated, rng):
        logits = smooth_logits(rng, 64, 64)[None, None]  # [1, 1, h, w] as the mask decoder returns it
        _, _, area, box = ref.mask_reference(logits[0, 0], 90, 160)
        assert postprocess_mask(emulated, logits, height=90, width=160) == MaskStats(area, box)

    def test_logits_with_row_padding(self, emulated, rng):
        padded = smooth_logits(rng, 33, 50)
        logits = padded[:, :41]  # rows 50 floats apart
        _, _, area, box = ref.mask_reference(logits, 77, 99)
        assert postprocess_mask(emulated, logits, height=77, width=99) == MaskStats(area, box)

    def test_pixels_per_thread_override(self, rng):
        """Compiled with -D TPO_MASK_PIXELS_PER_THREAD=5 (as tests/gpu may time it): still every pixel."""
        device = EmulatedDevice(defines={"TPO_MASK_PIXELS_PER_THREAD": 5})
        check(device, smooth_logits(rng, 40, 40), 33, 401)
