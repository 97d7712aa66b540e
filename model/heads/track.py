"""Track: the object the question names, masked and boxed on every frame (SAM2, prompted by the track adapter)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tpo.contract.tasks import TRACK

from ..mask_tracker import track_clip
from ..preprocess import mask_pixels
from .base import Ask


@dataclass
class TrackResult:
    masks: np.ndarray              # [T, H, W] bool, source pixels
    boxes: list[list[float] | None]  # per frame [x1, y1, x2, y2] pixels, None where the mask is empty
    scores: list[float]            # per frame object score (logit of "object present")


class TrackHead:
    task = TRACK
    example_question = "track the red circle"

    def route(self, model, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> SAM2's sparse prompt [B, 3, C] (`track_embed`)."""
        return model.track_prompt(hidden)

    def answer(self, model, hidden: torch.Tensor, ask: Ask) -> TrackResult:
        cfg = model.cfg
        sparse = self.route(model, hidden[None]).to(model.dtype)           # (1, 3, C)
        pixels = mask_pixels(ask.video.frames, cfg.mask_head.image_size, cfg.pixel_mean, cfg.pixel_std)
        masks, boxes, scores = track_clip(model.sam, pixels.to(model.device, model.dtype), sparse, ask.video.size_hw)
        return TrackResult(masks=np.stack(masks), boxes=boxes, scores=scores)

    def describe(self, result: TrackResult) -> str:
        shown = [None if b is None else [round(v) for v in b] for b in result.boxes[:4]]
        return f"track: {result.masks.shape[0]} masks {result.masks.shape[2]}x{result.masks.shape[1]}, boxes[:4] {shown}"
