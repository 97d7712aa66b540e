"""The interface every training-side head has (`TrainHead`) and its evaluation scorer's (`Scorer`)."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tpo.contract.tasks import Task
from tpo.data.synthetic import Clip, Query
from tpo.model.config import TPOConfig

from ..recipe_config import RecipeConfig
from ..sample import Sample


class Scorer(Protocol):
    """One task's predictions and ground truth, gathered query by query (`tpo.train.evaluate`)."""

    def add(self, clip: Clip, q: Query, answer: Any | None) -> dict:
        """Score one query. answer: the head's first result, or None when the first trigger was another
        task (a miss). Returns the query's record fields (predictions, ground truth, its own score)."""
        ...

    def summary(self) -> dict[str, float]:
        """The benchmark's metrics over every query added (fractions in [0, 1])."""
        ...


class TrainHead(Protocol):
    """One task's head on the training side, registered in `tpo.train.heads.TRAIN_HEADS` under `task.name`."""

    task: Task
    parameters: tuple[str, ...]   # module prefixes stage 2 trains for this head (its task embedding comes too)

    def targets(self, sample: Sample, clip: Clip, q: Query, cfg: TPOConfig, shared: dict) -> bool:
        """Fill `sample`'s head targets from the query's ground truth; False drops the sample.
        shared: a dict per clip, for what every query of the clip may reuse."""
        ...

    def loss(self, model, hidden: torch.Tensor, samples: list[Sample], rc: RecipeConfig,
             rng: torch.Generator) -> torch.Tensor:
        """hidden [n, H]: the final-norm states at the placeholders of `samples` -> this head's loss."""
        ...

    def scorer(self) -> Scorer:
        """A fresh scorer for an evaluation."""
        ...


def floats(x) -> list | None:
    return None if x is None else [float(v) for v in x]
