"""runtime.preprocess and runtime.resample (banded resampling: numpy BLAS products, cv2.transpose) against the
model side (tpo.model.preprocess, torch's antialiased bicubic) and the float64 reference of the taps
(tpo.kernels.reference), over camera, small, odd and upscaling sizes, every layout of the plan; the strips
plan's structure (coverage, windows, cache-sized buffers, one-thread BLAS products) and its per-thread buffers.

Bounds (docs/runtime.md, "Preprocessing at camera sizes"): the mask input within MASK_VS_TORCH of torch's in
normalised units (measured <= 3.5e-6 over SIZES, as the previous banded path; the old dense path <= 2.9e-6;
all float32 rounding: torch's own distance to float64 is up to 2.4e-6); the vision encoder input's uint8
levels equal torch's except where the resize lands on a rounding tie (x.5 within float32 error), there one
level apart (measured up to 40 of 112896 values, 3.5e-4, on random frames, 12 at 1920x1080; the dense path 71).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tpo.kernels import reference as ref
from tpo.model import preprocess as model_pre
from tpo.runtime import preprocess, resample

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
                                                         (1, 1280, 720, 256), (1, 9, 17, 40), (2, 150, 90, 41)])
def test_every_layout_agrees_with_the_float64_reference(layout, frames, width, height, size):
    """(41 outputs: BLOCK leaves 1, so the last bands are 3 and 2 outputs.)"""
    x = frames_of(width, height, frames + 1, seed=frames + width)[:frames]
    got = preprocess.resize_frames(x, size, size, layout)
    assert got.shape == (3, frames, size, size) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.abs(got - exact(x, size)[0]).max() <= RESIZE_VS_FLOAT64


def dense(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float64: the taps as a dense matrix."""
    index, weight = ref.aa_bicubic_taps(in_size, out_size)
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.broadcast_to(np.arange(out_size)[:, None], index.shape), index), weight)
    return m


def from_runs(runs, in_size: int, out_size: int, base: int = 0) -> np.ndarray:
    """[out, in] float64 assembled from runs' band weights at their windows (+ base)."""
    m = np.zeros((out_size, in_size))
    for r in runs:
        for j in range(r.count):
            a, o = base + r.start + r.step * j, r.out0 + r.rows * j
            m[o:o + r.rows, a:a + r.taps] += r.weights[j]
    return m


@pytest.mark.parametrize("h, w, height, width", [(1080, 1920, 256, 256), (1080, 1920, 112, 112),
                                                 (720, 1280, 256, 256), (359, 641, 41, 97), (17, 9, 40, 40)])
def test_strips_plan_covers_every_output_once_in_cache_sized_one_thread_products(h, w, height, width):
    """Pass 1: each slab's runs are exactly the slab's rows of the dense matrix (float32 weights), windows in
    the frame; pass 2, sub-strip after sub-strip with the rolling buffer's carries, exactly the dense matrix,
    windows within the pixels transposed so far; every product's M * N * K below BLAS_SINGLE (one OpenBLAS
    thread whatever its setting); buffers within their budgets (unless one band alone needs more)."""
    c = 3
    p = resample.plan(1, h, w, c, height, width, "strips")
    assert p.layout == "strips" and p.slabs[0][0] == 0 and p.slabs[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(p.slabs, p.slabs[1:], strict=False))
    columns = max(b - a for a, b in p.strips)
    vertical = np.zeros((height, h))
    for (y0, y1), runs in zip(p.slabs, p.vertical, strict=True):
        part = from_runs(runs, h, height)
        assert not part[:y0].any() and not part[y1:].any()
        vertical += part
        for r in runs:
            assert r.start >= 0 and r.end <= h and r.rows * r.taps * columns < resample.BLAS_SINGLE
            assert r.end - r.start <= p.span
            assert r.rows > 1 or height == 1                    # no one-row products (gemv)
    np.testing.assert_allclose(vertical, dense(h, height), rtol=0, atol=1e-7)
    taps = max(r.taps for runs in p.vertical for r in runs)
    assert p.span * columns * 4 <= max(resample.BUFFER_BYTES, 2 * taps * columns * 4)   # or two bands' rows
    assert p.strips[0][0] == 0 and p.strips[-1][1] == w * c and all(a % c == 0 for a, _ in p.strips)
    assert all(a[1] == b[0] for a, b in zip(p.strips, p.strips[1:], strict=False))
    rows = max(y1 - y0 for y0, y1 in p.slabs)
    assert len(p.slabs) == 1 or rows * columns * 4 <= resample.SLAB_BYTES
    horizontal, base = np.zeros((width, w)), 0
    for (a, b), subs in zip(p.strips, p.narrow, strict=True):
        assert subs[0].v0 == a and subs[-1].v1 == b and all(s.v1 == t.v0 for s, t in zip(subs, subs[1:], strict=False))
        for sub in subs:
            assert sub.row == (sub.v0 // c - base) * c and sub.v1 // c - base <= p.roll
            assert (sub.v1 - sub.v0) * rows * 4 <= max(resample.NARROW_BYTES, c * rows * 4)
            for r in sub.runs:
                assert r.start >= 0 and r.end <= sub.v1 // c - base
                assert r.rows * r.taps * c * rows < resample.BLAS_SINGLE
            horizontal += from_runs(sub.runs, w, width, base)
            if sub.carry is not None:
                assert sub.carry[1] == sub.v1 // c - base
                base += sub.carry[0]
    np.testing.assert_allclose(horizontal, dense(w, width), rtol=0, atol=1e-7)


def test_layouts_by_size():
    assert resample.plan(1, 1080, 1920, 3, 112, 112).layout == "strips"
    assert resample.plan(1, 61, 97, 3, 256, 256).layout.startswith("planar")
    assert resample.plan(8, 61, 97, 3, 112, 112).layout.startswith("planar")      # a clip, batched


def test_strips_buffers_are_per_thread_and_results_fresh():
    """The strips layout keeps its buffers per thread and frame size: calls from two threads at once, on
    different frames, equal the calls one by one, and every result is a fresh array."""
    frames = frames_of(640, 360, 4, seed=11)
    alone = [preprocess.mask_frame(f, MASK, MEAN, STD) for f in frames]
    again = preprocess.mask_frame(frames[0], MASK, MEAN, STD)
    np.testing.assert_array_equal(again, alone[0])
    assert not np.shares_memory(again, alone[0])
    results: dict[int, list[np.ndarray]] = {}

    def work(k: int) -> None:
        results[k] = [preprocess.mask_frame(frames[(k + i) % 4], MASK, MEAN, STD) for i in range(8)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1]
    for k, got in results.items():
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, alone[(k + i) % 4])


@pytest.mark.parametrize("width, height", [(640, 360), (40, 30)])     # strips, planar (batched)
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
