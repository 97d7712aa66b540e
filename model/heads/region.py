"""Region: one box for the object the question names, on the one image the question is about."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo.contract.tasks import REGION

from .base import Ask


@dataclass
class RegionResult:
    box_xyxy: list[float]          # pixels of the frame the question was about
    box_normalised: list[float]    # x1, y1, x2, y2 in [0, 1] (as the head outputs them, unclamped)
    frame: int


class RegionHead:
    task = REGION
    example_question = "where is the red circle?"

    def route(self, model, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> box [B, 4], normalised x1, y1, x2, y2 (`loc_decoder`, no sigmoid)."""
        return model.region_box(hidden)

    def answer(self, model, hidden: torch.Tensor, ask: Ask) -> RegionResult:
        height, width = ask.video.size_hw
        box = self.route(model, hidden[None])[0].float()
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return RegionResult(box_xyxy=(box * scale).tolist(), box_normalised=box.tolist(), frame=0)

    def describe(self, result: RegionResult) -> str:
        return f"region box (px): {[round(v, 1) for v in result.box_xyxy]}"
