"""Region: one box for the object the question names, on the first frame (the image the question is about).

Region questions are about one image, as the release trains them: a question routed to region on the
video clip is asked again on the first frame alone, and that answer's region prompt gives the box. The box
belongs to the first frame; later frames pass through (the answer line keeps saying where it was).
Its score is the probability the LLM gave the region trigger: the region head itself has no box score.
"""

from __future__ import annotations

import numpy as np

from ..results import TrackedObject
from ..sources import Frame
from .base import TaskContext, TaskStep, box_text, target_phrase


class RegionStream:
    def __init__(self, ctx: TaskContext) -> None:
        session, answer, first = ctx.session, ctx.answer, ctx.first[0]
        hidden, probability = answer.prompts["region"], answer.trigger_probability.get("region", 1.0)
        if len(ctx.first) > 1:
            image_answer = session.ask(ctx.question, first.rgb[None], ctx.fps, run_heads=False)
            if "region" in image_answer.prompts:
                hidden = image_answer.prompts["region"]
                probability = image_answer.trigger_probability["region"]
        h, w = first.rgb.shape[:2]
        box = session.route(hidden)["region_box"][0] * np.array([w, h, w, h], np.float32)
        box = [float(np.clip(box[0], 0, w)), float(np.clip(box[1], 0, h)),
               float(np.clip(box[2], 0, w)), float(np.clip(box[3], 0, h))]
        self.frame_index = first.index
        self.label = target_phrase(ctx.question)
        self.object = TrackedObject(0, self.label, box, probability, present=True, kind="region")
        self.text = f"{self.label} is at {box_text(box)} (frame {first.index})"

    def on_frame(self, frame: Frame) -> TaskStep:
        if frame.index != self.frame_index:
            return TaskStep()
        return TaskStep([self.object], [self.object.event(frame)])

    def status(self) -> str:
        return self.text

    def finish(self, last: Frame | None) -> list[dict]:
        return []
