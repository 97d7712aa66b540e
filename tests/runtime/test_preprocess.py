"""runtime.preprocess (banded resampling, numpy) against the model side (tpo.model.preprocess, torch's
antialiased bicubic) and the float64 reference of the taps (tpo.kernels.reference), over camera, small, odd and
upscaling sizes, every layout of the plan.

Bounds (docs/runtime.md, "Preprocessing at camera sizes"): the mask input within MASK_VS_TORCH of torch's in
normalised units (measured <= 3.5e-6; the old dense path <= 2.9e-6; both are float32 rounding: torch's own
distance to float64 is up to 2.4e-6); the vision encoder input's uint8 levels equal torch's except where the
resize lands on a rounding tie (x.5 within float32 error), there one level apart (measured up to 40 of 112896
values, 3.5e-4, on random frames; the dense path up to 71).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpo.kernels import reference as ref
from tpo.model import preprocess as model_pre
from tpo.runtime import preprocess

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MASK, MLLM = 256, 112                       # tiny's sizes (model/configs/tiny.json)
MASK_VS_TORCH = 1e-5                        # normalised units
MASK_VS_FLOAT64 = 5e-6
RESIZE_VS_FLOAT64 = 2e-4                    # 0..255 units, before normalising: float32 sums of float32 weights
TIE = 2e-3                                  # |exact - floor(exact) - 0.5| below this: a rounding tie (0..255 units)
# (width, height): camera sizes, the bench clip, odd sizes, upscaling on one or both axes, a 1-row frame
SIZES = [(1920, 1080), (1280, 720), (320, 240), (641, 359), (97, 61), (61, 97), (17, 9), (200, 150), (1000, 1)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def frames_of(width: int, height: int, count: int, seed: int) -> np.ndarray:
    """Random frames (every frequency, the worst case for resampling error) and one smooth gradient."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (count - 1, height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = (np.stack([xx / width, yy / max(height, 1), (xx + yy) / (width + height)], axis=-1) * 255).astype(np.uint8)
    return np.concatenate([noise, smooth[None]])


def exact(frames: np.ndarray, size: int) -> np.ndarray:
    """[1, 3, T, size, size] float64 resize before rounding (0..255)."""
    return np.stack([ref.resize_bicubic_aa(f, size, size).transpose(2, 0, 1) for f in frames], axis=1)[None]


@pytest.mark.parametrize("width, height", SIZES)
def test_mask_frame_matches_the_model_side(width, height):
    frames = frames_of(width, height, 2 if width * height > 500_000 else 3, seed=width * 7 + height)
    got = np.concatenate([preprocess.mask_frame(f, MASK, MEAN, STD) for f in frames])
    assert got.shape == (len(frames), 3, MASK, MASK) and got.dtype == np.float32 and got.flags.c_contiguous
    torch_side = model_pre.mask_pixels(frames, MASK, MEAN, STD).numpy()
    assert np.abs(got - torch_side).max() <= MASK_VS_TORCH
    norm = (exact(frames, MASK)[0].transpose(1, 0, 2, 3) / 255 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    assert np.abs(got - norm).max() <= MASK_VS_FLOAT64


@pytest.mark.parametrize("width, height", SIZES)
def test_mllm_pixels_match_the_model_side(width, height):
    frames = frames_of(width, height, 3, seed=width * 5 + height)
    got = preprocess.mllm_pixels(frames, MLLM, MEAN, STD)
    torch_side = model_pre.mllm_pixels(frames, MLLM, MEAN, STD).numpy()
    assert got.shape == torch_side.shape == (1, 3, len(frames), MLLM, MLLM) and got.dtype == np.float32
    std = np.asarray(STD, np.float64)[None, :, None, None, None]
    mean = np.asarray(MEAN, np.float64)[None, :, None, None, None]
    levels = [np.rint((x.astype(np.float64) * std + mean) * 255) for x in (got, torch_side)]
    differ = levels[0] != levels[1]
    assert np.abs(levels[0] - levels[1]).max() <= 1
    x = exact(frames, MLLM)
    tie = np.abs(x - np.floor(x) - 0.5) < TIE
    assert not (differ & ~tie).any(), "levels differ away from a rounding tie"
    assert differ.mean() < 1e-3, f"{int(differ.sum())} of {differ.size} levels differ"
    assert np.abs(got - torch_side)[~differ].max() <= 1e-6       # x * (1 / 255) here, x / 255 in torch: ulps


@pytest.mark.parametrize("layout", preprocess.LAYOUTS)
@pytest.mark.parametrize("frames, width, height, size", [(1, 320, 240, 112), (2, 97, 61, 256), (3, 33, 45, 20),
                                                         (1, 1280, 720, 256), (1, 9, 17, 40)])
def test_every_layout_agrees_with_the_float64_reference(layout, frames, width, height, size):
    x = frames_of(width, height, frames + 1, seed=frames + width)[:frames]
    got = preprocess.resize_frames(x, size, size, layout)
    assert got.shape == (3, frames, size, size) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.abs(got - exact(x, size)[0]).max() <= RESIZE_VS_FLOAT64


def test_camera_frames_take_cache_sized_bands_small_frames_planes():
    """The plan: at 1920x1080 both axes in bands that are a small part of the dense matrices (pass 1 in column
    strips: its band buffer stays cache-sized); a small frame goes planar."""
    plan = preprocess._plan(1, 1080, 1920, 3, 112, 112)
    assert plan.layout == "interleaved" and 0 < plan.strip < 1920 * 3
    vertical = sum(b[4].size for b in plan.vertical)
    horizontal = sum(b[4].size for b in plan.horizontal) / 9                         # kron I_3
    assert vertical < 0.2 * 1080 * 112 and horizontal < 0.2 * 1920 * 112
    assert max(b[3] - b[2] for b in plan.vertical) * plan.strip <= preprocess.BUFFER_VALUES
    covered = np.concatenate([np.arange(b[0], b[1]) for b in plan.vertical])
    np.testing.assert_array_equal(covered, np.arange(112))
    assert preprocess._plan(1, 61, 97, 3, 256, 256).layout.startswith("planar")


@pytest.mark.parametrize("width, height", [(640, 360), (40, 30)])     # interleaved, planar (batched)
def test_a_clip_is_its_frames(width, height):
    frames = frames_of(width, height, 4, seed=3)
    one_by_one = np.concatenate([preprocess.mllm_pixels(f[None], MLLM, MEAN, STD) for f in frames], axis=2)
    np.testing.assert_allclose(preprocess.mllm_pixels(frames, MLLM, MEAN, STD), one_by_one, rtol=0, atol=1e-6)


def test_inputs_float_and_noncontiguous():
    rgb = frames_of(160, 90, 2, seed=3)[0]
    bgr_view = np.ascontiguousarray(rgb[..., ::-1])[..., ::-1]                        # same pixels, negative stride
    np.testing.assert_array_equal(preprocess.mask_frame(bgr_view, MASK, MEAN, STD),
                                  preprocess.mask_frame(rgb, MASK, MEAN, STD))
    np.testing.assert_allclose(preprocess.resize_chw(rgb.astype(np.float64), 64, 48),
                               preprocess.resize_chw(rgb, 64, 48), atol=1e-4)
    assert preprocess.mllm_frame(rgb, MLLM, MEAN, STD).shape == (3, MLLM, MLLM)
