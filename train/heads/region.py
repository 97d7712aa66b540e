"""Region on the training side: the box target on the asked frame, 2 * L1 + GIoU / 5, RefCOCO's Acc@0.5."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tpo.contract.tasks import REGION
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query, well_visible
from tpo.model.heads import HEADS

from ..losses import region_loss
from ..sample import Sample, norm_box, resize_frames
from .base import floats


class RegionScorer:
    """Acc@0.5 (RefCOCO): predicted box vs the object's box in the asked frame, and the mean IoU.

    Blind baseline: the mean box (of the scored queries' ground truth, normalised to each frame). Query swap: the
    same frame asked about another object well visible on it; it passes when the swapped answer overlaps the
    asked object more than the first one."""

    def __init__(self) -> None:
        self.pred: list = []         # pred boxes | None
        self.gt: list = []
        self.size: list = []         # (W, H) of each query's frame
        self.swaps: list[dict] = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        pred = floats(answer.box_xyxy) if answer is not None else None
        gt = floats(q.box)
        self.pred.append(pred)
        self.gt.append(gt)
        self.size.append((clip.spec.width, clip.spec.height))
        iou = 0.0 if pred is None else float(metrics.box_iou(pred, gt))
        return {"frame": q.frame, "pred_box": pred, "gt_box": gt, "iou": iou}

    @staticmethod
    def _scores(pred: list, gt: list) -> dict[str, float]:
        ious = [0.0 if p is None else float(metrics.box_iou(p, g)) for p, g in zip(pred, gt, strict=True)]
        return {"Acc@0.5": metrics.region_accuracy(pred, gt, iou=0.5), "mIoU": float(np.mean(ious))}

    def summary(self) -> dict[str, float]:
        return self._scores(self.pred, self.gt)

    def baselines(self) -> dict[str, dict[str, float]]:
        scale = np.array([[w, h, w, h] for w, h in self.size], np.float64)
        mean = (np.array(self.gt) / scale).mean(axis=0)
        return {"mean box": self._scores([list(mean * s) for s in scale], self.gt)}

    def swap_query(self, clip: Clip, q: Query) -> Query | None:
        n = len(clip.spec.objects)
        other = next((o for o in ((q.object_id + j) % n for j in range(1, n)) if well_visible(clip, o)[q.frame]), None)
        if other is None:
            return None
        name = clip.spec.objects[other].name
        return replace(q, question=f"where is the {name}?", answer=f"The {name} is here.", object_id=other,
                       box=clip.box(q.frame, other))

    def add_swap(self, clip: Clip, q: Query, swapped: Query, answer) -> dict:
        pred = floats(answer.box_xyxy) if answer is not None else None
        asked = 0.0 if pred is None else float(metrics.box_iou(pred, swapped.box))
        first = 0.0 if pred is None else float(metrics.box_iou(pred, q.box))
        rec = {"swap_object_id": swapped.object_id, "iou_asked": asked, "iou_first": first, "pass": asked > first}
        self.swaps.append(rec)
        return rec

    def swap_summary(self) -> dict[str, float]:
        return {"clips": len(self.swaps), "pass_rate": float(np.mean([r["pass"] for r in self.swaps]))} \
            if self.swaps else {}


class RegionTraining:
    task = REGION
    parameters = ("loc_decoder.",)

    def targets(self, sample: Sample, clip: Clip, q: Query, cfg, shared: dict) -> bool:
        """The one frame asked about (an image question) and the object's box in it."""
        sample.frames = resize_frames(clip.frames[q.frame:q.frame + 1], cfg.vision.image_size)
        sample.box = norm_box(q.box, clip.spec.width, clip.spec.height)
        return True

    def loss(self, model, hidden: torch.Tensor, samples: list[Sample], rc, rng) -> torch.Tensor:
        target = torch.stack([s.box for s in samples])
        return region_loss(HEADS[self.task.name].route(model, hidden), target)

    def scorer(self) -> RegionScorer:
        return RegionScorer()
