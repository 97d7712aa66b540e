"""Track: SAM2 propagation from the router's prompt on the first frame, every frame, one object per prompt.

Per object and frame: the presence probability (sigmoid of SAM2's object-score logit), the decoder's IoU
prediction, and the mask and box when the object is present (probability >= `conf` and a non-empty mask).
"""

from __future__ import annotations

import numpy as np

from tpo.contract.tasks import TRACK

from ..results import TrackedObject
from ..sources import Frame
from .base import TaskContext, TaskStep, target_phrase


class TrackStream:
    @staticmethod
    def offline(session, prompt: np.ndarray, frames: np.ndarray, fps: float, question: str) -> dict:
        """The clip tracked from the router's sparse prompt [1, N, C] (object 0): masks [T, H, W], boxes (px or
        None), presence probabilities."""
        tracker = session.tracker(prompt)
        masks, boxes, scores = [], [], []
        for frame in frames:
            r = session.track_frame(tracker, frame)[0]
            masks.append(r["mask"])
            boxes.append(r["box"])
            scores.append(r["score"])
        return {"masks": np.stack(masks), "boxes": boxes, "scores": scores}

    def __init__(self, ctx: TaskContext) -> None:
        self.session = ctx.session
        self.options = ctx.options
        self.tracker = ctx.session.tracker(ctx.session.head_prompt(TRACK.name, ctx.answer.prompts[TRACK.name]))
        self.label = target_phrase(ctx.question)
        self.present: bool | None = None

    def on_frame(self, frame: Frame) -> TaskStep:
        step = TaskStep()
        for o, r in enumerate(self.session.track_frame(self.tracker, frame.rgb)):
            present = r["score"] >= self.options.conf and r["box"] is not None
            obj = TrackedObject(o, self.label, r["box"] if present else None, r["score"], present, iou=r["iou"],
                                mask=r["mask"] if present else None)
            step.objects.append(obj)
            step.events.append(obj.event(frame, self.options.with_masks))
        self.present = any(o.present for o in step.objects)
        return step

    def status(self) -> str:
        if self.present is False:
            return f"tracking {self.label} (not visible)"
        return f"tracking {self.label}"

    def finish(self, last: Frame | None) -> list[dict]:
        return []
