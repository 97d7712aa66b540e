"""Frame sampling and pixel preprocessing on the PyTorch side (the reference for the runtime's).

MLLM branch (as the release): `num_frames` frames, each from the middle of one of `num_frames`
equal segments; bicubic antialiased resize of the uint8 frames (torchvision semantics: computed in
float, rounded and clamped back to uint8), then /255 and ImageNet mean/std.
Mask branch: every frame, /255 first, then bicubic antialiased resize in float, then mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tpo.errors import InputError
from tpo.sampling import middle_frame_indices  # noqa: F401  (re-exported)


@dataclass
class Video:
    """frames [N, H, W, 3] uint8 RGB; fps > 0. Timestamps are frame_index / fps."""

    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            shape = getattr(f, "shape", None)
            raise InputError(f"video frames must be a uint8 array [N, H, W, 3] (RGB), got {shape}")
        if f.shape[0] == 0:
            raise InputError("video has no frames")
        if not (self.fps > 0):
            raise InputError(f"video fps must be > 0, got {self.fps}")

    @property
    def duration_s(self) -> float:
        return self.frames.shape[0] / self.fps

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def resize_uint8(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[N,3,H,W] uint8 -> [N,3,size,size] uint8: bicubic antialiased in float, rounded, clamped."""
    x = F.interpolate(frames.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def mllm_pixels(frames: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """[T,H,W,3] uint8 -> [1, 3, T, size, size] float32, the vision encoder's input."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    x = resize_uint8(t, size).float().div_(255.0)
    return normalise(x, mean, std).permute(1, 0, 2, 3).unsqueeze(0)


def mask_pixels(frames: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """[T,H,W,3] uint8 -> [T, 3, size, size] float32, the mask image encoder's input."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    x = F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return normalise(x, mean, std)
