"""Temporal: the moments of the clip the question is about (CG-DETR, prompted by the hidden state itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tpo.contract.tasks import TEMPORAL

from ..temporal_features import temporal_source
from ..temporal_head import decode_saliency, decode_windows
from .base import Ask


@dataclass
class TemporalResult:
    windows: list[list[float]]     # [[start_s, end_s, score], ...], best first
    saliency: list[float]          # one score per clip
    clip_len_s: float
    windows_raw: list[list[float]] = field(default_factory=list)   # not snapped to the clip grid


class TemporalGroundingHead:
    task = TEMPORAL
    example_question = "when does the red circle appear?"

    def route(self, model, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> CG-DETR's prompt token [B, 1, H]: the hidden state itself (no adapter)."""
        return hidden[:, None]

    def answer(self, model, hidden: torch.Tensor, ask: Ask) -> TemporalResult:
        source = ask.features or temporal_source(model, ask.tokenizer)
        feats = source(ask.video, ask.question)
        out = model.cg_model(
            text_feats=feats.text.to(model.dtype), text_mask=feats.text_mask,
            video_feats=feats.video.to(model.dtype), video_mask=feats.video_mask,
            prompt_token=self.route(model, hidden[None]).to(model.dtype),
        )
        duration = min(feats.video.shape[1] * feats.clip_len_s, ask.video.duration_s)
        return TemporalResult(
            windows=decode_windows(out, duration_s=duration, clip_len_s=feats.clip_len_s),
            saliency=decode_saliency(out), clip_len_s=feats.clip_len_s,
            windows_raw=decode_windows(out, duration_s=duration, clip_len_s=feats.clip_len_s, snap=False))

    def describe(self, result: TemporalResult) -> str:
        return f"windows [start_s, end_s, score]: {[[round(v, 2) for v in w] for w in result.windows[:3]]}"
