"""The training side of each task: one module per head, all with the interface of `TrainHead`, registered in
`TRAIN_HEADS` under `tpo.contract.tasks.Task.name`. samples.py, recipe.py and evaluate.py iterate the registry
and know no head by name.

    th = train_head(name)
    th.targets(sample, clip, query, cfg, shared)   # the query's ground truth -> the sample's head targets
    th.loss(model, hidden, samples, rc, rng)        # hidden [n, H] at the placeholders -> the head's loss
    th.parameters                                   # what stage 2 trains for it (with its task embedding)
    th.scorer()                                     # evaluation: add(clip, query, answer) per query, summary()

A new task: its model head first (`tpo.model.heads`), then a module here, registered with `register_train_head`.
"""

from __future__ import annotations

from tpo.errors import ConfigError

from .base import Scorer, TrainHead, floats
from .region import RegionScorer, RegionTraining
from .temporal import (
    MAX_PRED_WINDOWS,
    R1_THRESHOLDS,
    TemporalBatch,
    TemporalScorer,
    TemporalTraining,
    temporal_inputs,
)
from .track import TrackScorer, TrackTraining

TRAIN_HEADS: dict[str, TrainHead] = {h.task.name: h for h in (RegionTraining(), TemporalTraining(), TrackTraining())}


def register_train_head(head: TrainHead) -> TrainHead:
    if head.task.name in TRAIN_HEADS:
        raise ValueError(f"a training head for task {head.task.name!r} is already registered")
    TRAIN_HEADS[head.task.name] = head
    return head


def unregister_train_head(name: str) -> None:
    TRAIN_HEADS.pop(name, None)


def train_head(name: str) -> TrainHead:
    found = TRAIN_HEADS.get(name)
    if found is None:
        raise ConfigError(f"task {name!r} has no training head (have {sorted(TRAIN_HEADS)}); add one in tpo.train.heads")
    return found


__all__ = ["MAX_PRED_WINDOWS", "R1_THRESHOLDS", "TRAIN_HEADS", "RegionScorer", "RegionTraining", "Scorer",
           "TemporalBatch", "TemporalScorer", "TemporalTraining", "TrackScorer", "TrackTraining", "TrainHead", "floats",
           "register_train_head", "temporal_inputs", "train_head", "unregister_train_head"]
