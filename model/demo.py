"""A small generated clip for demos and smoke tests (no files, no downloads)."""

from __future__ import annotations

import numpy as np

from .preprocess import Video


def demo_video(num_frames: int = 24, size_wh: tuple[int, int] = (160, 120), fps: float = 8.0) -> Video:
    """A red disc crossing a dark, lightly textured background left to right, visible throughout."""
    import cv2

    w, h = size_wh
    rng = np.random.default_rng(0)
    background = rng.integers(0, 30, size=(h, w, 3), dtype=np.uint8)
    frames = []
    for i in range(num_frames):
        frame = background.copy()
        cx = int(20 + (w - 40) * i / max(1, num_frames - 1))
        cv2.circle(frame, (cx, h // 2), 14, (230, 30, 30), thickness=-1)
        frames.append(frame)
    return Video(np.stack(frames), fps)
