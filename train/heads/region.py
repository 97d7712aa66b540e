"""Region on the training side: the box target on the asked frame, 2 * L1 + GIoU / 5, RefCOCO's Acc@0.5."""

from __future__ import annotations

import torch

from tpo.contract.tasks import REGION
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query
from tpo.model.heads import HEADS

from ..losses import region_loss
from ..sample import Sample, norm_box, resize_frames
from .base import floats


class RegionScorer:
    """Acc@0.5 (RefCOCO): predicted box vs the object's box in the asked frame."""

    def __init__(self) -> None:
        self.pred: list = []         # pred boxes | None
        self.gt: list = []

    def add(self, clip: Clip, q: Query, answer) -> dict:
        pred = floats(answer.box_xyxy) if answer is not None else None
        gt = floats(q.box)
        self.pred.append(pred)
        self.gt.append(gt)
        iou = 0.0 if pred is None else float(metrics.box_iou(pred, gt))
        return {"frame": q.frame, "pred_box": pred, "gt_box": gt, "iou": iou}

    def summary(self) -> dict[str, float]:
        return {"Acc@0.5": metrics.region_accuracy(self.pred, self.gt, iou=0.5)}


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
