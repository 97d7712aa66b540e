"""Where the temporal head's input features come from: one interface, two sources.

The temporal head (CG-DETR) reads per-clip video features [1, Lv, Dv] (the last 2 channels are the
start/end "TEF" of each clip, as a fraction of the video) and per-token text features [1, Lq, Dt].

- `ExternalEncoders` (`videochat-tpo`): the release computes them with two encoders that are NOT in
  its checkpoint: InternVideo2-1B's CLIP vision tower (8 frames per ~1 s clip at 8 fps -> 768-d, +2
  TEF = 770) and InternVL-C's LLaMA-7B text tower (4096-d per token, at most 80 tokens). Until their
  weights are given, asking for them fails with one line naming what is missing.
- `InternalFeatures` (`tiny`): features from this model's own parts, so the temporal path runs end
  to end: each clip's frames through the vision encoder (+ `vision_layernorm`), mean-pooled, + TEF;
  the question's tokens through the LLM's input embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from tpo.errors import CheckpointError, InputError
from tpo.sampling import clip_frame_indices

from .preprocess import Video, mllm_pixels


@dataclass
class TemporalFeatures:
    """video [1, Lv, Dv] float, video_mask [1, Lv] bool, text [1, Lq, Dt] float, text_mask [1, Lq] bool,
    clip_len_s: seconds each video position stands for."""

    video: torch.Tensor
    video_mask: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    clip_len_s: float


class TemporalFeatureSource(Protocol):
    def __call__(self, video: Video, question: str) -> TemporalFeatures: ...


def tef(num_clips: int) -> torch.Tensor:
    """[num_clips, 2]: each clip's start and end as a fraction of the video (CG-DETR's TEF)."""
    st = torch.arange(num_clips, dtype=torch.float32) / num_clips
    return torch.stack([st, st + 1.0 / num_clips], dim=1)


class ExternalEncoders:
    """The release's two feature encoders; their weights are not part of the VideoChat-TPO checkpoint."""

    VIDEO_ENCODER = "InternVideo2-CLIP-1B vision encoder (768-d per 1 s clip of 8 frames at 8 fps)"
    TEXT_ENCODER = "InternVL-C LLaMA-7B text encoder (4096-d per token, <= 80 tokens)"

    def __init__(self, video_encoder_path: str | None = None, text_encoder_path: str | None = None):
        self.video_encoder_path = video_encoder_path
        self.text_encoder_path = text_encoder_path

    def __call__(self, video: Video, question: str) -> TemporalFeatures:
        missing = []
        if not self.video_encoder_path:
            missing.append(self.VIDEO_ENCODER)
        if not self.text_encoder_path:
            missing.append(self.TEXT_ENCODER)
        if missing:
            raise CheckpointError(
                "temporal head needs features from encoders that are not in the VideoChat-TPO checkpoint: "
                + "; ".join(missing) + " -- their weights are not available here"
            )
        raise CheckpointError(
            f"loading {self.VIDEO_ENCODER} / {self.TEXT_ENCODER} weights is not implemented yet "
            f"(given {self.video_encoder_path!r}, {self.text_encoder_path!r})"
        )


class InternalFeatures:
    """Temporal features from the model's own vision encoder and token embeddings (`tiny`)."""

    def __init__(self, model, tokenizer, clip_len_s: float, frames_per_clip: int, max_text_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.clip_len_s = clip_len_s
        self.frames_per_clip = frames_per_clip
        self.max_text_tokens = max_text_tokens

    @torch.no_grad()
    def __call__(self, video: Video, question: str) -> TemporalFeatures:
        cfg = self.model.cfg
        clips = clip_frame_indices(video.frames.shape[0], video.fps, self.clip_len_s, self.frames_per_clip)
        pixels = torch.cat([
            mllm_pixels(video.frames[idx], cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std) for idx in clips
        ])                                                            # (Lv, 3, Tc, S, S)
        feats = self.model.clip_features(pixels.to(self.model.dtype))  # (Lv, Dvis)
        v = torch.cat([feats.float(), tef(len(clips))], dim=1)[None]  # (1, Lv, Dvis+2)
        ids = self.tokenizer(question, add_special_tokens=False).input_ids[: self.max_text_tokens]
        if not ids:
            raise InputError("question: no tokens to ground in time")
        text = self.model.token_embeddings(torch.tensor([ids])).float()  # (1, Lq, H)
        return TemporalFeatures(
            video=v, video_mask=torch.ones(v.shape[:2], dtype=torch.bool),
            text=text, text_mask=torch.ones(text.shape[:2], dtype=torch.bool),
            clip_len_s=self.clip_len_s,
        )


def temporal_source(model, tokenizer) -> TemporalFeatureSource:
    """The feature source the model's configuration names: its own parts (`internal`) or the release's encoders."""
    cfg = model.cfg
    if cfg.temporal_features == "internal":
        return InternalFeatures(model, tokenizer, cfg.temporal_clip_s, cfg.temporal_clip_frames,
                                cfg.temporal_head.max_text_len)
    return ExternalEncoders()
