"""The interface every model-side head has (`Head`), and what it may read besides the router's state (`Ask`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from tpo.contract.tasks import Task

from ..preprocess import Video
from ..temporal_features import TemporalFeatureSource


@dataclass
class Ask:
    """The question a head answers: the media it was asked about and the words (some heads read them)."""

    tokenizer: Any
    video: Video                                   # the frames the question was asked about (one for images)
    question: str
    features: TemporalFeatureSource | None = None  # where the temporal head's features come from (None: the model's own)


class Head(Protocol):
    """One task's head on the model side, registered in `tpo.model.heads.HEADS` under `task.name`."""

    task: Task
    example_question: str   # what `tpo-model demo` asks to show this head

    def route(self, model, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, H] (the final-norm state at the task embedding) -> this head's prompt, the task
        router's output `task.router_output` (what training's losses and the exported router compute)."""
        ...

    def answer(self, model, hidden: torch.Tensor, ask: Ask) -> Any:
        """hidden [H] -> the head's answer to `ask` (a result dataclass in source pixels / seconds)."""
        ...

    def describe(self, result: Any) -> str:
        """One line about `result` for people (the demo)."""
        ...
