"""Frame sampling and pixel preprocessing on the host, numpy only: the CPU path of the runtime.

Same arithmetic as `tpo.model.preprocess` (the PyTorch reference) so that backends agree:
- MLLM frames: bicubic antialiased resize of the uint8 frame (torch's separable filter, a = -0.5, support
  widened when downscaling), rounded half to even and clamped to uint8, then /255 and mean/std.
- mask frames: /255, the same resize in float (no rounding), then mean/std.
The filter taps come from `tpo.kernels.reference` (the CUDA kernels' reference), laid out as one dense matrix
per axis (cached per input and output size) and applied as two matrix products in float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tpo.kernels.reference import aa_bicubic_taps
from tpo.sampling import clip_frame_indices, middle_frame_indices  # noqa: F401  (the session's)


@lru_cache(maxsize=32)
def _resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float32: the antialiased bicubic taps of one axis as a dense matrix, so a resize is two
    BLAS matrix products (3-4x faster here than gathering taps, and the same sums)."""
    index, weight = aa_bicubic_taps(in_size, out_size)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.repeat(np.arange(out_size), index.shape[1])
    np.add.at(m, (rows, index.reshape(-1)), weight.reshape(-1))
    return m.astype(np.float32)


def resize_chw(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] (uint8 or float) -> [3, height, width] float32, torch's antialiased bicubic (before rounding)."""
    h, w, c = frame.shape
    x = frame.astype(np.float32).transpose(2, 0, 1).reshape(c * h, w)
    rows = (x @ _resize_matrix(w, width).T).reshape(c, h, width)           # horizontal pass
    return np.matmul(_resize_matrix(h, height)[None], rows)                # vertical pass: (c, height, width)


def _normalise(chw: np.ndarray, mean, std, scale: float) -> np.ndarray:
    """(x * scale - mean) / std per channel, in place on a float32 [3, h, w] array."""
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    chw *= np.float32(scale)
    chw -= m
    chw /= s
    return chw


def mllm_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [3, size, size] float32 (the vision encoder's input per frame)."""
    resized = np.clip(np.rint(resize_chw(frame, size, size)), 0, 255)
    return _normalise(resized, mean, std, 1.0 / 255.0)


def mllm_pixels(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [1, 3, T, size, size] float32."""
    return np.stack([mllm_frame(f, size, mean, std) for f in frames], axis=1)[None]


def mask_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [1, 3, size, size] float32 (the mask image encoder's input)."""
    return _normalise(resize_chw(frame, size, size), mean, std, 1.0 / 255.0)[None]


def tef(num_clips: int) -> np.ndarray:
    """[num_clips, 2] float32: each clip's start and end as a fraction of the video."""
    st = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([st, st + np.float32(1.0 / num_clips)], axis=1)
