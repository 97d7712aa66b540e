"""Frame sampling and pixel preprocessing on the host, numpy and OpenCV only: the CPU path of the runtime.

Same arithmetic as `tpo.model.preprocess` (the PyTorch reference) so that backends agree:
- MLLM frames: bicubic antialiased resize of the uint8 frame (torch's separable filter, a = -0.5, support
  widened when downscaling), rounded half to even and clamped to uint8, then /255 and mean/std.
- mask frames: the same resize in float (no rounding), then /255 and mean/std (folded: x / (255 std) - mean / std).

The resize is `runtime.resample` (banded BLAS products, camera frames in cache-sized strips): the results
agree with torch's to float32 rounding (bounds: tests/runtime/test_preprocess.py, docs/runtime.md).
"""

from __future__ import annotations

import numpy as np

from tpo.sampling import clip_frame_indices, middle_frame_indices  # noqa: F401  (the session's)

from .resample import LAYOUTS, resize  # noqa: F401  (LAYOUTS: resize_frames' choices)


def resize_frames(frames: np.ndarray, height: int, width: int, layout: str | None = None) -> np.ndarray:
    """[T, H, W, C] (uint8 or float) -> [C, T, height, width] float32 C-contiguous: torch's antialiased bicubic
    before rounding. `layout` (one of LAYOUTS) overrides the plan's choice (tests)."""
    return np.ascontiguousarray(resize(frames, height, width, layout))


def resize_chw(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] (uint8 or float) -> [3, height, width] float32, torch's antialiased bicubic (before rounding)."""
    return resize_frames(frame[None], height, width)[:, 0]


def _per_channel(values, ndim: int) -> np.ndarray:
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * (ndim - 1))


def mllm_pixels(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [1, 3, T, size, size] float32, the vision encoder's input: levels rounded half to
    even and clamped, then (x * (1 / 255) - mean) / std as the GPU kernel and torch (up to float32 ulps)."""
    resized = resize(frames, size, size)
    out = np.empty(resized.shape, np.float32)
    np.rint(resized, out=out)                          # also makes it contiguous
    np.clip(out, 0, 255, out=out)
    out *= np.float32(1.0 / 255.0)
    out -= _per_channel(mean, out.ndim)
    out /= _per_channel(std, out.ndim)
    return out[None]


def mllm_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [3, size, size] float32 (the vision encoder's input per frame)."""
    return mllm_pixels(frame[None], size, mean, std)[0, :, 0]


def mask_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [1, 3, size, size] float32 (the mask image encoder's input): x * (1 / (255 std))
    - mean / std, in place on the resize (a fresh array, contiguous for one frame); within float32 ulps of
    /255 then mean/std."""
    out = resize(frame[None], size, size).reshape(1, 3, size, size)
    std32 = _per_channel(std, 3)
    out[0] *= np.float32(1.0 / 255.0) / std32
    out[0] -= _per_channel(mean, 3) / std32
    return out


def tef(num_clips: int) -> np.ndarray:
    """[num_clips, 2] float32: each clip's start and end as a fraction of the video."""
    st = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([st, st + np.float32(1.0 / num_clips)], axis=1)
