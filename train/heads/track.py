"""Track on the training side: prompt distillation against the frozen mask head's own box prompt; the
tracking benchmarks' scores (OTB success AUC and precision, DAVIS J, F, J&F)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tpo.contract.tasks import TRACK
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query, well_visible
from tpo.model.heads import HEADS

from ..losses import track_loss
from ..sample import Sample, norm_box
from .base import floats

SMALL_OBJECT_PX = 1500      # J&F is reported apart for objects whose median visible area is under / over this


def _track_scores(pred_boxes: list, pred_masks: list, gt_boxes: list, gt_masks: np.ndarray) -> dict[str, float]:
    return {"success_AUC": metrics.tracking_success_auc(pred_boxes, gt_boxes),
            "precision@20px": metrics.tracking_precision(pred_boxes, gt_boxes), **metrics.jf_score(pred_masks, gt_masks)}


def _swap_target(clip: Clip, k: int, frame: int) -> int | None:
    """Another object of the clip well visible on `frame` (the next one after k by object id), or None."""
    n = len(clip.spec.objects)
    others = [(k + j) % n for j in range(1, n)]
    return next((o for o in others if well_visible(clip, o)[frame]), None)


def _mean_box_iou(pred_boxes: list, gt_boxes: list) -> float:
    """Mean IoU of the predicted boxes with one object's boxes over the frames where either exists (a missing
    box scores 0)."""
    ious = [0.0 if p is None or g is None else float(metrics.box_iou(p, g))
            for p, g in zip(pred_boxes, gt_boxes, strict=True) if p is not None or g is not None]
    return float(np.mean(ious)) if ious else 0.0


class TrackScorer:
    """Success AUC and precision @ 20 px (OTB one-pass; frames where the object is invisible are left out),
    J, F and J&F (DAVIS; every frame, an empty mask where the object is absent scores 1); each per query,
    then averaged over queries. Also: success AUC over the queries of clips with several objects, J&F apart for
    objects under and over SMALL_OBJECT_PX (median visible area), and the absent-frame accuracy (the share of
    the frames where the object is not visible, over all queries, on which the tracker reports nothing).

    Blind baseline: the first-frame box (and mask) held on every frame. Query swap: the same clip asked to track
    another object visible on frame 0; it passes when the swapped answer's boxes overlap the asked object more
    than the first one (mean box IoU over the clip)."""

    def __init__(self) -> None:
        self.scores: list[dict[str, float]] = []
        self.held: list[dict[str, float]] = []
        self.multi: list[bool] = []
        self.small: list[bool] = []
        self.absent = {"model": [0, 0], "held": [0, 0]}     # [frames reported empty, absent frames]
        self.swaps: list[dict] = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        k, n = q.object_id, clip.num_frames
        gt_boxes = [clip.box(t, k) for t in range(n)]
        gt_masks = clip.masks(k)
        if answer is not None:
            pred_boxes = [floats(b) for b in answer.boxes]
            pred_masks = list(answer.masks)
        else:
            pred_boxes, pred_masks = [None] * n, [None] * n
        s = _track_scores(pred_boxes, pred_masks, gt_boxes, gt_masks)
        self.scores.append(s)
        self.held.append(_track_scores([gt_boxes[0]] * n, [gt_masks[0]] * n, gt_boxes, gt_masks))
        self.multi.append(len(clip.spec.objects) > 1)
        size = float(np.median(clip.areas[clip.visible[:, k], k]))
        self.small.append(size < SMALL_OBJECT_PX)
        absent = ~clip.visible[:, k]
        empty = np.array([b is None for b in pred_boxes])
        self.absent["model"][0] += int((empty & absent).sum())
        self.absent["held"][0] += int(absent.sum()) * (gt_boxes[0] is None)
        for key in self.absent:
            self.absent[key][1] += int(absent.sum())
        return {"object_id": k, "pred_boxes": pred_boxes, "size_px": size, "absent_frames": int(absent.sum()),
                "absent_reported": int((empty & absent).sum()), **s}

    def _summary(self, scores: list[dict[str, float]], absent: list[int]) -> dict[str, float]:
        out = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        multi = [s["success_AUC"] for s, m in zip(scores, self.multi, strict=True) if m]
        if multi:
            out["success_AUC_multi"] = float(np.mean(multi))
        for name, small in (("J&F_small", True), ("J&F_large", False)):
            part = [s["J&F"] for s, sm in zip(scores, self.small, strict=True) if sm == small]
            if part:
                out[name] = float(np.mean(part))
        if absent[1]:
            out["absent_accuracy"] = absent[0] / absent[1]
        return out

    def summary(self) -> dict[str, float]:
        return self._summary(self.scores, self.absent["model"])

    def baselines(self) -> dict[str, dict[str, float]]:
        return {"first-frame box held": self._summary(self.held, self.absent["held"])}

    def swap_query(self, clip: Clip, q: Query) -> Query | None:
        other = _swap_target(clip, q.object_id, 0)
        if other is None:
            return None
        name = clip.spec.objects[other].name
        return replace(q, question=f"track the {name}", answer=f"Tracking the {name}.", object_id=other)

    def add_swap(self, clip: Clip, q: Query, swapped: Query, answer) -> dict:
        n = clip.num_frames
        pred = [floats(b) for b in answer.boxes] if answer is not None else [None] * n
        asked = _mean_box_iou(pred, [clip.box(t, swapped.object_id) for t in range(n)])
        first = _mean_box_iou(pred, [clip.box(t, q.object_id) for t in range(n)])
        rec = {"swap_object_id": swapped.object_id, "iou_asked": asked, "iou_first": first, "pass": asked > first}
        self.swaps.append(rec)
        return rec

    def swap_summary(self) -> dict[str, float]:
        return {"clips": len(self.swaps), "pass_rate": float(np.mean([r["pass"] for r in self.swaps]))} \
            if self.swaps else {}


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
