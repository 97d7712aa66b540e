"""A question the model answers in words (no task token): the answer is all; frames pass through."""

from __future__ import annotations

from ..sources import Frame
from .base import TaskContext, TaskStep


class ChatStream:
    offline = None      # no head: the answer is the text

    def __init__(self, ctx: TaskContext) -> None:
        self.text = ctx.answer.text

    def on_frame(self, frame: Frame) -> TaskStep:
        return TaskStep()

    def status(self) -> str:
        return self.text or "(no answer)"

    def finish(self, last: Frame | None) -> list[dict]:
        return []
