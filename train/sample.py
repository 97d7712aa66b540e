"""One training sample (`Sample`: a query ready to batch) and the frame helpers every task's targets use.

Frames are kept only at the MLLM's input size (uint8), so a pool of a few hundred clips fits in memory
and batches are cheap to assemble. `samples.py` builds the pool; `heads/` fill each task's targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tpo.model.config import TPOConfig
from tpo.model.preprocess import normalise, resize_uint8


@dataclass
class Sample:
    """One query, ready to batch. Frames are uint8 [T, S, S, 3] at the MLLM size."""

    task: str                      # the data's task: "region" | "temporal" | "track" | "conversation"
    route: str                     # the head it must trigger (a `tpo.contract.tasks` name), or "none"
    clip: str
    frames: np.ndarray             # video: the num_frames middle frames; an image task: the one frame asked about
    input_ids: torch.Tensor        # [L] prompt + answer + EOS
    labels: torch.Tensor           # [L] -100 on the prompt and the placeholder; answer ids + EOS elsewhere
    visual_mask: torch.Tensor      # [L] bool
    placeholder: int = -1          # index of the task placeholder in input_ids (-1: none)
    box: torch.Tensor | None = None           # region: target box normalised; track: frame-0 box normalised
    spans: torch.Tensor | None = None         # temporal: [n, 2] (centre, width), fractions of the duration
    saliency: torch.Tensor | None = None      # temporal: [Lv] 1 inside the moment, 0 outside
    clip_frames: np.ndarray | None = None     # temporal: [Lv, Tc, S, S, 3] uint8 frames of each clip
    question_ids: list[int] = field(default_factory=list)
    media: str = "video"                      # the prompt's media: "image" (one frame) or "video"
    category: int = -1                        # conversation: the colour-shape (CATEGORIES index) of the object the
                                              # question names, -1 for none (a count); the slot attention's target


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, size, size, 3] uint8 (the MLLM branch's resize)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return resize_uint8(t, size).permute(0, 2, 3, 1).numpy()


def frames_to_pixels(frames: np.ndarray, cfg: TPOConfig) -> torch.Tensor:
    """uint8 [T, S, S, 3] (already at size) -> normalised [3, T, S, S] float32."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
    return normalise(x, cfg.pixel_mean, cfg.pixel_std).permute(1, 0, 2, 3)


def norm_box(box, width: int, height: int) -> torch.Tensor:
    x1, y1, x2, y2 = box
    return torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height], dtype=torch.float32)
