"""Temporal on the training side: the moments and per-clip saliency targets, CG-DETR's set criterion, and
Charades-STA's / QVHighlights' scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tpo.contract.tasks import TEMPORAL
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query
from tpo.model.heads import HEADS
from tpo.model.temporal_features import clip_frame_indices, tef

from ..losses import temporal_targets
from ..sample import Sample, frames_to_pixels, resize_frames

R1_THRESHOLDS = (0.3, 0.5, 0.7)
MAX_PRED_WINDOWS = 10                                      # QVHighlights scores the first 10 windows


class TemporalScorer:
    """R1@{0.3, 0.5, 0.7} and mIoU (Charades-STA) of the top-1 window against the query's spans (the
    best-matching span counts); mAP (QVHighlights, IoU 0.5:0.05:0.95) of the first 10 scored windows
    against all spans.

    Blind baselines: the whole clip as the one window, and the mean window (the mean start and end of the
    queries' longest spans, as fractions of each clip)."""

    def __init__(self) -> None:
        self.top1: list = []            # [s, e, score] | None
        self.windows: list[list] = []   # scored windows (first 10)
        self.gt: list[list] = []        # spans per query
        self.duration: list[float] = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        windows = [[float(v) for v in w] for w in answer.windows[:MAX_PRED_WINDOWS]] if answer is not None else []
        spans = [list(s) for s in q.spans]
        self.top1.append(windows[0] if windows else None)
        self.windows.append(windows)
        self.gt.append(spans)
        self.duration.append(clip.duration_s)
        top1 = max((metrics.temporal_iou(windows[0][:2], s) for s in spans), default=0.0) if windows else 0.0
        return {"pred_windows": windows, "gt_spans": spans, "top1_iou": top1}

    def _scores(self, top1: list, windows: list) -> dict[str, float]:
        r1 = metrics.temporal_recall_at_iou(top1, self.gt, R1_THRESHOLDS)
        qvh = metrics.qvhighlights_map(windows, self.gt, max_pred_windows=MAX_PRED_WINDOWS)
        return {**{f"R1@{m:g}": v for m, v in r1.items()}, "mIoU": metrics.temporal_miou(top1, self.gt),
                "mAP": qvh["average"], "mAP@0.5": qvh["0.5"], "mAP@0.75": qvh["0.75"]}

    def summary(self) -> dict[str, float]:
        return self._scores(self.top1, self.windows)

    def baselines(self) -> dict[str, dict[str, float]]:
        whole = [[0.0, d, 1.0] for d in self.duration]
        longest = np.array([max(g, key=lambda s: s[1] - s[0]) for g in self.gt]) / np.array(self.duration)[:, None]
        start, end = longest.mean(axis=0)
        mean = [[start * d, end * d, 1.0] for d in self.duration]
        return {"whole clip": self._scores(whole, [[w] for w in whole]),
                "mean window": self._scores(mean, [[w] for w in mean])}


class TemporalTraining:
    task = TEMPORAL
    parameters = ("cg_model.",)

    def targets(self, sample: Sample, clip: Clip, q: Query, cfg, shared: dict) -> bool:
        """Moments as (centre, width) fractions of the clip, each temporal clip's frames (shared by every
        temporal query of the clip) and its saliency: 1 when at least half of it lies inside a span."""
        s = cfg.vision.image_size
        d = clip.duration_s
        spans = torch.tensor(q.spans, dtype=torch.float32) / d
        sample.spans = torch.stack([(spans[:, 0] + spans[:, 1]) / 2, spans[:, 1] - spans[:, 0]], dim=1)
        clips = clip_frame_indices(clip.num_frames, clip.fps, cfg.temporal_clip_s, cfg.temporal_clip_frames)
        if "clip_frames" not in shared:
            shared["clip_frames"] = resize_frames(clip.frames[np.concatenate(clips)], s).reshape(
                len(clips), cfg.temporal_clip_frames, s, s, 3)
        sample.clip_frames = shared["clip_frames"]
        starts = np.arange(len(clips)) * cfg.temporal_clip_s
        inside = [sum(max(0.0, min(e, a + cfg.temporal_clip_s) - max(b, a)) for b, e in q.spans) for a in starts]
        sample.saliency = torch.tensor([float(c >= 0.5 * cfg.temporal_clip_s) for c in inside])
        return True

    def loss(self, model, hidden: torch.Tensor, samples: list[Sample], rc, rng: torch.Generator) -> torch.Tensor:
        """CG-DETR's set criterion (weighted as the release) times the recipe's temporal_weight."""
        feats = temporal_inputs(model, samples)
        result = model.cg_model(
            text_feats=feats.text, text_mask=feats.text_mask, video_feats=feats.video,
            video_mask=feats.video_mask, prompt_token=HEADS[self.task.name].route(model, hidden),
            relevant_clips=feats.saliency, video_ids=[s.clip for s in samples],
        )
        targets = temporal_targets([s.spans for s in samples], feats.saliency,
                                   [int(m.sum()) for m in feats.video_mask], rng)
        parts = model.cg_criterion(result, targets)
        return rc.temporal_weight * model.cg_criterion.weighted_total(parts)

    def scorer(self) -> TemporalScorer:
        return TemporalScorer()


@dataclass
class TemporalBatch:
    """The temporal head's inputs for a batch, right-padded (B samples, Lv clips, Lq text tokens)."""

    video: torch.Tensor         # [B, Lv, Dv+2] clip features + TEF
    video_mask: torch.Tensor    # [B, Lv] bool
    text: torch.Tensor          # [B, Lq, H] question token embeddings
    text_mask: torch.Tensor     # [B, Lq] bool
    saliency: torch.Tensor      # [B, Lv] the samples' saliency targets (0 on padding)


def temporal_inputs(model, batch: list[Sample]) -> TemporalBatch:
    """The temporal head's inputs for temporal samples, from the model's own parts (no gradient)."""
    cfg = model.cfg
    vids, texts = [], []
    done: dict[int, torch.Tensor] = {}      # queries of one clip share its clip frames: encode them once
    with torch.no_grad():
        for s in batch:
            key = id(s.clip_frames)
            if key not in done:
                pixels = torch.stack([frames_to_pixels(f, cfg) for f in s.clip_frames])   # (Lv, 3, Tc, S, S)
                feats = model.clip_features(pixels.to(model.device, model.dtype)).float()
                done[key] = torch.cat([feats, tef(feats.shape[0])], dim=1)
            vids.append(done[key])
            ids = s.question_ids[: cfg.temporal_head.max_text_len]
            texts.append(model.token_embeddings(torch.tensor([ids]))[0].float())
    lv, lq = max(v.shape[0] for v in vids), max(t.shape[0] for t in texts)
    b = len(batch)
    video = torch.zeros(b, lv, vids[0].shape[1])
    video_mask = torch.zeros(b, lv, dtype=torch.bool)
    text = torch.zeros(b, lq, texts[0].shape[1])
    text_mask = torch.zeros(b, lq, dtype=torch.bool)
    saliency = torch.zeros(b, lv)
    for i, (v, t, s) in enumerate(zip(vids, texts, batch, strict=True)):
        video[i, : v.shape[0]], video_mask[i, : v.shape[0]] = v, True
        text[i, : t.shape[0]], text_mask[i, : t.shape[0]] = t, True
        saliency[i, : v.shape[0]] = s.saliency
    return TemporalBatch(video, video_mask, text, text_mask, saliency)
