"""Region: one box for the object the question names, on the first frame of the question's clip.

The stream asks the LLM once per question: the region head reads the hidden state of the question as the
stream asked it (about its first frames) and its box is placed on the first of them; later frames pass
through (the answer line keeps saying where it was). The release trains region questions on single images:
to ask about one image exactly as trained, ask `Session.ask(question, frame[None], fps)`, or stream with
`question_frames=1`. The score is the probability the LLM gave the region trigger: the region head has no box
score of its own. A region answer can be handed to the tracker (`Stream.follow`: its box prompts SAM2 through
SAM2's own prompt encoder, tasks/track.py).
"""

from __future__ import annotations

import numpy as np

from tpo.contract.tasks import REGION

from ..results import TrackedObject
from ..sources import Frame
from .base import TaskContext, TaskStep, box_text, target_phrase


class RegionStream:
    @staticmethod
    def offline(session, prompt: np.ndarray, frames: np.ndarray, fps: float, question: str) -> dict:
        """The head's box for the question's image (the router's region output [1, 4], normalised x1, y1, x2, y2,
        unclamped as the release outputs it) in the frame's pixels."""
        height, width = frames.shape[1:3]
        box = prompt[0].astype(np.float32)
        scale = np.array([width, height, width, height], np.float32)
        return {"frame": 0, "box": (box * scale).tolist(), "box_normalised": box.tolist()}

    def __init__(self, ctx: TaskContext) -> None:
        session, answer, first = ctx.session, ctx.answer, ctx.first[0]
        hidden, probability = answer.prompts[REGION.name], answer.trigger_probability[REGION.name]
        h, w = first.rgb.shape[:2]
        box = self.offline(session, session.head_prompt(REGION.name, hidden), first.rgb[None], ctx.fps,
                           ctx.question)["box"]
        box = [float(np.clip(box[0], 0, w)), float(np.clip(box[1], 0, h)),
               float(np.clip(box[2], 0, w)), float(np.clip(box[3], 0, h))]
        self.frame_index = first.index
        self.box_normalised = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]    # what `Stream.follow` hands on
        self.label = target_phrase(ctx.question)
        self.object = TrackedObject(ctx.ident, self.label, box, probability, present=True, kind="region")
        self.text = f"{self.label} is at {box_text(box)} (frame {first.index})"

        self.shown = False

    def on_frame(self, frame: Frame) -> TaskStep:
        """The box on the first frame this task sees: the question's first frame when the stream held its
        frames for the answer (files), else the frame the answer arrived on (a live stream moved on; the event
        then says which frame the box was found on, `box_frame`)."""
        if self.shown:
            return TaskStep()
        self.shown = True
        event = self.object.event(frame)
        if frame.index != self.frame_index:
            event["box_frame"] = self.frame_index
        return TaskStep([self.object], [event])

    def status(self) -> str:
        return self.text

    def finish(self, last: Frame | None) -> list[dict]:
        return []
