"""The model side of each task: one module per head, all with the interface of `Head`, registered in `HEADS`
under `tpo.contract.tasks.Task.name`. `generate.py` and the demo iterate the registry and know no head by name.

    head = HEADS[name]                      # or head_for(name): one clear error for an unknown task
    prompt = head.route(model, hidden)      # hidden [B, H] -> the head's prompt (the task router's output)
    result = head.answer(model, h, ask)     # h [H] -> the answer to `ask` (Ask: tokenizer, video, question)
    head.describe(result)                   # one line for people

A new task: declare it in `tpo.contract.tasks` (`register`), write model/heads/<name>.py with a class of
this shape and `register_head` it (training's side: `tpo.train.heads`; runtime's: `tpo.runtime.tasks`).
"""

from __future__ import annotations

from .base import Ask, Head
from .region import RegionHead, RegionResult
from .temporal import TemporalGroundingHead, TemporalResult
from .track import TrackHead, TrackResult

HEADS: dict[str, Head] = {h.task.name: h for h in (RegionHead(), TemporalGroundingHead(), TrackHead())}


def register_head(head: Head) -> Head:
    """Add a head for a task registered in `tpo.contract.tasks` (tests add a toy one)."""
    if head.task.name in HEADS:
        raise ValueError(f"a head for task {head.task.name!r} is already registered")
    HEADS[head.task.name] = head
    return head


def unregister_head(name: str) -> None:
    HEADS.pop(name, None)


def head_for(name: str) -> Head:
    found = HEADS.get(name)
    if found is None:
        raise KeyError(f"no model head registered for task {name!r} (have {sorted(HEADS)})")
    return found


__all__ = ["HEADS", "Ask", "Head", "RegionHead", "RegionResult", "TemporalGroundingHead", "TemporalResult",
           "TrackHead", "TrackResult", "head_for", "register_head", "unregister_head"]
