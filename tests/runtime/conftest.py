"""Fixtures of the runtime tests: small generated videos, image folders and fake OpenCV captures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

FPS = 12.0
H, W = 48, 64


def bgr_frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """Flat BGR frame number i: blue 200, green 20 * i (the frame's identity), red 50."""
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = (200, (20 * i) % 256, 50)
    return frame


def frame_number(rgb: np.ndarray) -> int:
    """Which `bgr_frame` an RGB frame was made from (JPEG/MPEG-4 keep flat colours within a few levels)."""
    return int(round(float(rgb[..., 1].mean()) / 20))


@pytest.fixture
def make_video(tmp_path):
    def make(name: str = "clip.avi", frames: int = 12, fps: float = FPS, size_hw=(H, W)) -> Path:
        path = tmp_path / name
        fourcc = {".avi": "MJPG", ".mp4": "mp4v"}[path.suffix]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (size_hw[1], size_hw[0]))
        assert writer.isOpened()
        for i in range(frames):
            writer.write(bgr_frame(i, *size_hw))
        writer.release()
        return path

    return make


class FakeCapture:
    """An OpenCV-like capture yielding `frames` BGR frames (numbered from `first`), then failing.

    `opened=False` makes a capture that did not open; `delay_s` paces reads like a camera; `fail_at`
    makes those reads fail (a corrupt frame) without ending the stream; `frame_count` is what
    CAP_PROP_FRAME_COUNT reports; `msec[i]` is CAP_PROP_POS_MSEC after the i-th read; `frames=None`
    never ends.
    """

    def __init__(self, frames: int | None = 10, *, first: int = 0, opened: bool = True, delay_s: float = 0.0,
                 fail_at: tuple[int, ...] = (), frame_count: float = 0.0, fps: float = 0.0,
                 msec: list[float] | None = None):
        self.frames, self.first, self.opened, self.delay_s = frames, first, opened, delay_s
        self.fail_at, self.frame_count, self.fps, self.msec = set(fail_at), frame_count, fps, msec
        self.reads = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened and not self.released.is_set()

    def read(self):
        if not self.isOpened() or (self.frames is not None and self.reads >= self.frames):
            return False, None
        if self.delay_s:
            time.sleep(self.delay_s)
        i = self.reads
        self.reads += 1
        if i in self.fail_at:
            return False, None
        return True, bgr_frame(self.first + i, 8, 8)

    def release(self) -> None:
        self.released.set()

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC and self.msec and self.reads:
            return self.msec[self.reads - 1]
        return {cv2.CAP_PROP_FRAME_COUNT: self.frame_count, cv2.CAP_PROP_FPS: self.fps}.get(prop, 0.0)


class Factory:
    """Hands out the given captures in order, then captures that do not open; counts the calls."""

    def __init__(self, *captures: FakeCapture):
        self.captures = list(captures)
        self.calls = 0

    def __call__(self) -> FakeCapture:
        self.calls += 1
        return self.captures.pop(0) if self.captures else FakeCapture(opened=False)


class Helpers:
    FakeCapture = FakeCapture
    Factory = Factory
    bgr_frame = staticmethod(bgr_frame)
    frame_number = staticmethod(frame_number)
    FPS, H, W = FPS, H, W


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers


@pytest.fixture(scope="module")
def session(fp32_artifacts):
    """The tiny fp32 export on ONNX Runtime, once per module."""
    import tpo.runtime

    return tpo.runtime.open(fp32_artifacts)


@pytest.fixture(scope="module")
def clip():
    """A held-out clip of the generator (seed 1000), with one question per task."""
    from tpo.data.synthetic import make_clip

    return make_clip(0, 1000)
