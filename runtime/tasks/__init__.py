"""The runtime side of each task: how a routed question turns frames into objects, events and a status line.

    task_stream = open_task(session, answer, question, first_frames, fps, options)   # by answer.task
    step = task_stream.on_frame(frame)      # TaskStep(objects, events), every frame, the question's first
    task_stream.status()                    # what the annotated video's answer band says now
    task_stream.finish(last_frame)          # events when the source ends (offline answers)

One module per task, all with the interface of `TaskStream`; `stream.py` knows none of them by name.
A new task registers its class in `TASK_STREAMS` under the name the router gives it.
"""

from __future__ import annotations

from .base import StreamOptions, TaskContext, TaskStep, TaskStream
from .chat import ChatStream
from .region import RegionStream
from .temporal import TemporalStream
from .track import TrackStream

TASK_STREAMS: dict[str, type[TaskStream]] = {
    "none": ChatStream,
    "region": RegionStream,
    "temporal": TemporalStream,
    "track": TrackStream,
}


def open_task(ctx: TaskContext) -> TaskStream:
    """The task stream for the task the model routed `ctx.answer` to."""
    cls = TASK_STREAMS.get(ctx.answer.task)
    if cls is None:
        raise KeyError(f"no runtime task registered for {ctx.answer.task!r} (have {sorted(TASK_STREAMS)})")
    return cls(ctx)


__all__ = ["TASK_STREAMS", "StreamOptions", "TaskContext", "TaskStep", "TaskStream", "open_task"]
