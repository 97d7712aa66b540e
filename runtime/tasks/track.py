"""Track: SAM2 propagation from the router's prompt on the first frame, every frame, one object per prompt.

Per object and frame: the presence probability (sigmoid of SAM2's object-score logit), the decoder's IoU
prediction, and the mask and box when the object is present (probability >= `conf` and a non-empty mask).

Lost and found: an object not present for `lost_frames` frames in a row is `lost` (one `object` event), and
`found` (one event) on the first frame it is present again. "Present" is the probability and a non-empty mask
together: the tiny model's probability stays high while the object is gone, its mask does not. While lost, the
stream re-asks the question (`reseed`, docs/runtime.md "Two loops"): the new answer's prompt starts a new
tracker on the current frame, its memory bank empty. Why reset rather than keep: the ring of recent memories
holds `lost_frames` frames of "no object here" (what kept SAM2 from finding it), and slot 0, the conditioning
frame, is where the object was before it left; the graphs have one conditioning slot, so the re-ground frame
replaces it, and memories from before would only pull the new prompt back to the old view.

Followed regions: a region answer handed to the tracker (`Stream.follow`, `{"follow": id}`, `--follow`) starts a
TrackStream from SAM2's own encoding of the region's box (`Session.box_prompt`) instead of the router's track
prompt; its re-grounds re-ask the region question and re-seed from the new box the same way.
"""

from __future__ import annotations

import numpy as np

from tpo.contract.tasks import REGION, TRACK

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

    def __init__(self, ctx: TaskContext, prompt: np.ndarray | None = None) -> None:
        """Track the answer's object; `prompt` [1, N, C]: start from this sparse prompt instead (a followed
        region's box through `Session.box_prompt`)."""
        self.session = ctx.session
        self.options = ctx.options
        self.tracker = ctx.session.tracker(prompt if prompt is not None else self._prompt(ctx.answer))
        self.label = target_phrase(ctx.question)
        self.ident = ctx.ident          # the object's id: its question's number in the stream
        self.present: bool | None = None
        self.lost_after = ctx.options.lost_frames
        self.absent_run = 0             # frames in a row without the object
        self.lost = False

    def on_frame(self, frame: Frame) -> TaskStep:
        step = TaskStep()
        for o, r in enumerate(self.session.track_frame(self.tracker, frame.rgb)):
            present = r["score"] >= self.options.conf and r["box"] is not None
            obj = TrackedObject(self.ident + o, self.label, r["box"] if present else None, r["score"], present, iou=r["iou"],
                                mask=r["mask"] if present else None)
            step.objects.append(obj)
            step.events.append(obj.event(frame, self.options.with_masks))
        self.present = any(o.present for o in step.objects)
        step.events += self._lost_or_found(frame)
        return step

    def _lost_or_found(self, frame: Frame) -> list[dict]:
        event = {"type": "object", "object": self.ident, "label": self.label, "frame": frame.index,
                 "time_s": round(frame.time_s, 4)}
        if self.present:
            was_lost, absent, self.absent_run = self.lost, self.absent_run, 0
            self.lost = False
            return [{**event, "event": "found", "absent_frames": absent}] if was_lost else []
        self.absent_run += 1
        if self.lost or self.absent_run < self.lost_after:
            return []
        self.lost = True
        return [{**event, "event": "lost", "absent_frames": self.absent_run}]

    def _prompt(self, answer) -> np.ndarray:
        """A track answer's router prompt; a region answer's box through SAM2's prompt encoder (followed)."""
        if TRACK.name in answer.prompts:
            return self.session.head_prompt(TRACK.name, answer.prompts[TRACK.name])
        box = self.session.head_prompt(REGION.name, answer.prompts[REGION.name])     # [1, 4] in 0..1, unclamped
        return self.session.box_prompt(box)

    def reseed(self, answer) -> None:
        """Re-ground: a new tracker from a new answer's prompt, prompted on the next frame (memory bank reset,
        see the module docstring); the object stays lost until it is present again."""
        self.tracker = self.session.tracker(self._prompt(answer))

    def status(self) -> str:
        if self.present is False:
            return f"tracking {self.label} (not visible)"
        return f"tracking {self.label}"

    def finish(self, last: Frame | None) -> list[dict]:
        return []
