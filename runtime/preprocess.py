"""Frame sampling and pixel preprocessing on the host, numpy only: the CPU path of the runtime.

Same arithmetic as `tpo.model.preprocess` (the PyTorch reference) so that backends agree:
- MLLM frames: bicubic antialiased resize of the uint8 frame (torch's separable filter, a = -0.5, support
  widened when downscaling), rounded half to even and clamped to uint8, then /255 and mean/std.
- mask frames: /255, the same resize in float (no rounding), then mean/std.
The filter taps come from `tpo.kernels.reference` (the CUDA kernels' reference), applied as a gather and a
weighted sum per pass, in float32; taps are cached per (input size, output size).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tpo.kernels.reference import aa_bicubic_taps


@lru_cache(maxsize=32)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    index, weight = aa_bicubic_taps(in_size, out_size)
    return index, weight.astype(np.float32)


def resize_bicubic_aa(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] (uint8 or float) -> [height, width, C] float32: horizontal pass, then vertical."""
    x = frame.astype(np.float32, copy=False)
    ix, wx = _taps(frame.shape[1], width)
    rows = np.zeros((frame.shape[0], width, frame.shape[2]), dtype=np.float32)
    for t in range(ix.shape[1]):
        rows += x[:, ix[:, t]] * wx[None, :, t, None]
    iy, wy = _taps(frame.shape[0], height)
    out = np.zeros((height, width, frame.shape[2]), dtype=np.float32)
    for t in range(iy.shape[1]):
        out += rows[iy[:, t]] * wy[:, t, None, None]
    return out


def _normalise_chw(x: np.ndarray, mean, std) -> np.ndarray:
    """[h, w, 3] float32 in [0, 1] -> [3, h, w] float32 normalised."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return np.ascontiguousarray(((x - m) / s).transpose(2, 0, 1))


def mllm_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [3, size, size] float32 (the vision encoder's input per frame)."""
    resized = np.clip(np.rint(resize_bicubic_aa(frame, size, size)), 0, 255)
    return _normalise_chw(resized / np.float32(255.0), mean, std)


def mllm_pixels(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [1, 3, T, size, size] float32."""
    return np.stack([mllm_frame(f, size, mean, std) for f in frames], axis=1)[None]


def mask_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [1, 3, size, size] float32 (the mask image encoder's input)."""
    resized = resize_bicubic_aa(frame, size, size) / np.float32(255.0)
    return _normalise_chw(resized, mean, std)[None]


def middle_frame_indices(num_frames: int, total: int) -> list[int]:
    """The middle of each of `num_frames` equal segments (padded with the last index), as the release."""
    n = min(num_frames, total)
    edges = np.linspace(0, total, n + 1).astype(int)
    idx = [int((a + b - 1) // 2) for a, b in zip(edges[:-1], edges[1:])]
    return idx + [idx[-1]] * (num_frames - n)


def clip_frame_indices(num_frames_total: int, fps: float, clip_len_s: float, frames_per_clip: int) -> list[list[int]]:
    """Frames of each `clip_len_s` clip for the temporal head's video features (as the model side)."""
    duration = num_frames_total / fps
    num_clips = max(1, int(np.ceil(duration / clip_len_s - 1e-6)))
    clips = []
    for c in range(num_clips):
        ts = c * clip_len_s + (np.arange(frames_per_clip) + 0.5) * clip_len_s / frames_per_clip
        clips.append([int(i) for i in np.clip(np.floor(ts * fps).astype(int), 0, num_frames_total - 1)])
    return clips


def tef(num_clips: int) -> np.ndarray:
    """[num_clips, 2] float32: each clip's start and end as a fraction of the video."""
    st = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([st, st + np.float32(1.0 / num_clips)], axis=1)
