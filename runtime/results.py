"""What a stream yields: one `FrameResult` per frame, with every object found on it and the events of that frame.

    for result in session.stream("clip.mp4", "track the red circle"):
        result.frame            # Frame(index, time_s, rgb) -- None only on the closing result
        result.objects          # [TrackedObject(id, label, box, score, iou, present, mask)]
        result.events           # JSON-ready dicts, in order (answer, track/region/temporal, source, summary)
        result.status           # one line saying what was found so far (the annotated video's answer band)
        result.timings_ms       # stage -> milliseconds spent on this frame before it was yielded

Events keep the JSON lines format of `tpo-run --jsonl` (docs/runtime.md). Version 2 (`EVENTS_FORMAT`, also in
the answer and summary events) changed the meaning of a track event's `score` from SAM2's raw object-score
logit to the probability that the object is present, and added `present`, `iou` and `label`; a track event
of an absent object has `box: null` and no mask. Region events carry a `score`; temporal windows never
carry a null score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rle import rle_encode
from .sources import Frame

EVENTS_FORMAT = "tpo-events/2"


@dataclass
class TrackedObject:
    """One object on one frame.

    box: [x1, y1, x2, y2] in source pixels as pixel edges (x2 = one past the last column), None when the
      object is not present. score: the probability that the object is on this frame (tracking: sigmoid of
      SAM2's object-score logit; region: the probability the LLM gave its region trigger). iou: the mask
      decoder's prediction of its mask's IoU (None for a region box). present: score >= the stream's
      confidence threshold and a non-empty mask. mask: bool [H, W] in source pixels, None when absent or
      when the task has no mask.
    """

    id: int
    label: str
    box: list[float] | None
    score: float
    present: bool
    iou: float | None = None
    mask: np.ndarray | None = None
    kind: str = "track"          # "track" | "region": which event type it is reported as

    def event(self, frame: Frame, with_mask: bool = True) -> dict:
        """The JSON event of this object on `frame`."""
        event = {"type": self.kind, "frame": frame.index, "time_s": round(frame.time_s, 4), "object": self.id,
                 "label": self.label, "present": self.present,
                 "box": None if self.box is None else [round(float(v), 2) for v in self.box],
                 "score": round(float(self.score), 4)}
        if self.iou is not None:
            event["iou"] = round(float(self.iou), 4)
        if with_mask and self.mask is not None and self.present:
            event["mask_rle"] = rle_encode(self.mask)
        return event


@dataclass
class FrameResult:
    """Everything about one processed frame; `frame is None` marks the closing result of a stream (its events
    are the offline answers, the source's last events and the summary)."""

    frame: Frame | None
    objects: list[TrackedObject] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    status: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = field(default=0.0, repr=False)     # the stream's processing time of this frame

    @property
    def index(self) -> int | None:
        return None if self.frame is None else self.frame.index

    @property
    def time_s(self) -> float | None:
        return None if self.frame is None else self.frame.time_s

    @property
    def final(self) -> bool:
        return self.frame is None

    def event(self, kind: str) -> dict | None:
        """The first event of type `kind` in this result (e.g. "answer", "summary"), or None."""
        return next((e for e in self.events if e.get("type") == kind), None)
