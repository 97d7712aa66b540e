"""Track on the training side: prompt distillation against the frozen mask head's own box prompt; the
tracking benchmarks' scores (OTB success AUC and precision, DAVIS J, F, J&F)."""

from __future__ import annotations

import numpy as np
import torch

from tpo.contract.tasks import TRACK
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query
from tpo.model.heads import HEADS

from ..losses import track_loss
from ..sample import Sample, norm_box
from .base import floats


class TrackScorer:
    """Success AUC and precision @ 20 px (OTB one-pass; frames where the object is invisible are left out),
    J, F and J&F (DAVIS; every frame, an empty mask where the object is absent scores 1); each per query,
    then averaged over queries."""

    def __init__(self) -> None:
        self.scores: list[dict[str, float]] = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        k, n = q.object_id, clip.num_frames
        gt_boxes = [clip.box(t, k) for t in range(n)]
        if answer is not None:
            pred_boxes = [floats(b) for b in answer.boxes]
            pred_masks = list(answer.masks)
        else:
            pred_boxes, pred_masks = [None] * n, [None] * n
        s = {"success_AUC": metrics.tracking_success_auc(pred_boxes, gt_boxes),
             "precision@20px": metrics.tracking_precision(pred_boxes, gt_boxes),
             **metrics.jf_score(pred_masks, clip.masks(k))}
        self.scores.append(s)
        return {"object_id": k, "pred_boxes": pred_boxes, **s}

    def summary(self) -> dict[str, float]:
        return {k: float(np.mean([s[k] for s in self.scores])) for k in self.scores[0]}


class TrackTraining:
    task = TRACK
    parameters = ("track_embed.", "track_embed_decode2.")

    def targets(self, sample: Sample, clip: Clip, q: Query, cfg, shared: dict) -> bool:
        """The object's frame-0 box (the tracker's prompt); a query whose object is not in frame 0 is dropped."""
        box = clip.box(0, q.object_id)
        if box is None:
            return False
        sample.box = norm_box(box, clip.spec.width, clip.spec.height)
        return True

    def loss(self, model, hidden: torch.Tensor, samples: list[Sample], rc, rng) -> torch.Tensor:
        """L1 between the track adapter's prompt and the frozen mask head's embedding of the box, plus the
        L1 of the box `track_embed_decode2` reads from the same state."""
        boxes = torch.stack([s.box for s in samples])
        with torch.no_grad():
            target = model.sam.prompt_embedding(boxes)                          # (n, 3, C)
        return track_loss(HEADS[self.task.name].route(model, hidden), target, model.track_embed_decode2(hidden), boxes)

    def scorer(self) -> TrackScorer:
        return TrackScorer()
