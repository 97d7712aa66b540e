"""Which frames a clip is made of: shared by the PyTorch side and the runtime (numpy only), so both sample alike."""

from __future__ import annotations

import numpy as np


def middle_frame_indices(num_frames: int, total: int) -> list[int]:
    """The release's 'middle' sampling: the middle of each of num_frames equal segments, padded
    with the last index when the video has fewer frames than asked for."""
    n = min(num_frames, total)
    edges = np.linspace(0, total, n + 1).astype(int)
    idx = [int((a + b - 1) // 2) for a, b in zip(edges[:-1], edges[1:], strict=False)]
    return idx + [idx[-1]] * (num_frames - n)


def clip_frame_indices(num_frames_total: int, fps: float, clip_len_s: float, frames_per_clip: int) -> list[list[int]]:
    """Frames for each clip of `clip_len_s` seconds: `frames_per_clip` evenly spaced inside it,
    at the middle of equal sub-intervals (the release samples 8 fps inside 1 s clips)."""
    duration = num_frames_total / fps
    num_clips = max(1, int(np.ceil(duration / clip_len_s - 1e-6)))
    clips = []
    for c in range(num_clips):
        start = c * clip_len_s
        ts = start + (np.arange(frames_per_clip) + 0.5) * clip_len_s / frames_per_clip
        idx = np.clip(np.floor(ts * fps).astype(int), 0, num_frames_total - 1)
        clips.append([int(i) for i in idx])
    return clips
