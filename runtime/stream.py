"""`Stream(session, source, question)`: one `FrameResult` per frame as frames arrive, every frame accounted for.

    stream = Stream(session, source, "track the red circle", StreamOptions(conf=0.5))
    for result in stream:                     # or session.stream(source, question)
        ...                                   # result.frame, .objects, .events, .status, .timings_ms
    stream.summary                            # also the last event of the closing result

Flow:
1. The first `question_frames` frames (default: the vision encoder's frame count) form the clip the question
   is asked about: the slow path runs once (`Session.ask`, heads not run); its `answer` event opens the first
   frame's result.
2. The task the model routed to (`runtime/tasks`, one module each) turns every frame, the buffered ones
   first, into objects and events: track follows the object on every frame; region boxes it on the first
   frame; temporal opens and closes windows as clips complete; a chat answer is all. Every frame is yielded,
   so sinks see the whole source (the annotated video has every processed frame).
3. When the source ends, a closing result (`frame is None`) carries the task's offline answer, the source's
   last events and the `summary`.

Timings live with the stream (a `Session.for_stream()` view), so one session serves several streams at once.
Per frame: `capture` (reading the frame), the stages the task ran, `consumer` (what the caller did with the
result before asking for the next one: in tpo-run, the sinks), and `frame_total`, their sum: the real
per-frame cost end to end. The summary ends with `wall_s` and `fps` (processed frames per wall second,
the question's slow path included).
Frames are accounted for as frames_in = processed + dropped; a file source drops nothing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np

from tpo.errors import InputError

from .results import EVENTS_FORMAT, FrameResult
from .session import Session
from .sources import Frame, Source
from .tasks import StreamOptions, TaskContext, open_task
from .timings import Timings

DEFAULT_FPS = 30.0


class Stream:
    """An iterator of `FrameResult`s for one question about one source; single pass."""

    def __init__(self, session: Session, source: Source, question: str, options: StreamOptions | None = None):
        if not isinstance(question, str) or not question.strip():
            raise InputError("question: empty; ask something, e.g. 'track the red circle'")
        self.session = session.for_stream()
        self.source = source
        self.question = question
        self.options = options or StreamOptions()
        self.timings: Timings = self.session.timings
        self.delivered = 0          # frames the source handed to the stream
        self.processed = 0          # frames the task processed and the stream yielded
        self.dropped = 0            # frames the stream received but did not process (an aborted run)
        self.task = "none"
        self.status = ""
        self.summary: dict | None = None
        self._gen: Iterator[FrameResult] | None = None
        self._wall_start = time.perf_counter()

    def __iter__(self) -> Iterator[FrameResult]:
        if self._gen is not None:
            raise InputError("a Stream is single pass: make a new one to stream again")
        self._gen = self._run()
        return self._gen

    def abort(self, reason: str) -> FrameResult:
        """End the stream early (the caller was interrupted, or a sink or the engine failed): close the source,
        count the frames received but not processed as dropped, and return the closing result whose summary
        says `"complete": false` and why. Safe to call at any point, once."""
        if self._gen is not None:
            self._gen.close()           # runs the loop's `finally`: the source is closed
        self.source.close()
        self.dropped += self.delivered - self.processed - self.dropped
        self.summary = self._summary(self.status, complete=False, reason=reason)
        return FrameResult(None, [], self.source.new_events() + [self.summary], self.status, self.timings.frame())

    # ------------------------------------------------------------------------------------------ the loop
    def _read(self, frames: Iterator[Frame], captured: dict[int, float]) -> Frame | None:
        start = time.perf_counter()
        frame = next(frames, None)
        seconds = time.perf_counter() - start
        self.timings.add("capture", seconds)
        if frame is not None:
            self.delivered += 1
            captured[frame.index] = seconds
        return frame

    def _run(self) -> Iterator[FrameResult]:
        self._wall_start = time.perf_counter()
        session, source = self.session, self.source
        frames = iter(source)
        captured: dict[int, float] = {}
        try:
            n_first = self.options.question_frames or session.pre.mllm.num_frames
            first: list[Frame] = []
            while len(first) < n_first and (frame := self._read(frames, captured)) is not None:
                first.append(frame)
            pending = source.new_events()
            closing: list[dict] = []
            if first:
                task, answer_event = self._ask(first)
                pending.insert(0, answer_event)
                last = None
                for frame in itertools.chain(first, iter(lambda: self._read(frames, captured), None)):
                    result = self._process(task, frame, pending, captured)
                    pending, last = [], frame
                    handed = time.perf_counter()
                    yield result
                    consumer = time.perf_counter() - handed
                    self.timings.add("consumer", consumer)
                    self.timings.add("frame_total", captured.pop(frame.index, 0.0) + result.seconds + consumer)
                closing = task.finish(last)
                self.status = task.status()
        finally:
            source.close()
        self.summary = self._summary(self.status, complete=True)
        yield FrameResult(None, [], pending + closing + source.new_events() + [self.summary], self.status,
                          self.timings.frame())

    def _ask(self, first: list[Frame]):
        """The question about the first frames: the LLM once, the routed task's stream, the answer event."""
        fps = self.source.fps or _fps_from_times(first)
        start = time.perf_counter()
        with self.timings.timed("answer"):
            answer = self.session.ask(self.question, _question_clip(first), fps, run_heads=False)
            self.task = answer.task
            task = open_task(TaskContext(self.session, answer, self.question, first, fps, self.options))
        self.status = task.status()
        self.timings.frame()             # the answer is not any one frame's cost
        event = {"type": "answer", "format": EVENTS_FORMAT, "text": self.status, "model_text": answer.text,
                 "task": answer.task, "question": self.question, "frames": [first[0].index, first[-1].index],
                 "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
        if answer.truncated:
            event["truncated"] = True    # the answer reached max_new_tokens before its end token
        return task, event

    def _process(self, task, frame: Frame, pending: list[dict], captured: dict[int, float]) -> FrameResult:
        started = time.perf_counter()
        step = task.on_frame(frame)
        self.processed += 1
        self.status = task.status()
        result = FrameResult(frame, step.objects, pending + step.events + self.source.new_events(), self.status,
                             self.timings.frame())
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------------------------------------ summary
    def _summary(self, answer: str, complete: bool, reason: str | None = None) -> dict:
        """The closing summary. Drops are counted where they happen (the source's, the stream's own) and the
        identity frames_in = processed + dropped is checked, not derived: a mismatch is reported."""
        wall_s = time.perf_counter() - self._wall_start
        stats = self.source.stats
        graphs = set(self.session.runners)
        graph_s = sum(self.timings.total_s(g) for g in graphs)
        latency = {k: {q: v[q] for q in ("p50", "p95", "p99", "mean", "max", "count")}
                   for k, v in self.timings.summary_ms().items()}
        dropped = stats.dropped + self.dropped
        summary = {"type": "summary", "format": EVENTS_FORMAT, "complete": complete, "task": self.task,
                   "answer": answer, "frames_in": stats.frames_in, "processed": self.processed, "dropped": dropped,
                   "source_dropped": stats.dropped, "stream_dropped": self.dropped, "corrupt": stats.corrupt,
                   "skipped_by_stride": stats.skipped, "reconnects": stats.reconnects,
                   "backend": self.session.backend.description, "precision": _ran_precision(self.session),
                   "artifacts_precision": self.session.manifest.precision.value,
                   "frame_path": self.session.frame_path.describe(), "graph_seconds": round(graph_s, 4),
                   "latency_ms": latency}
        if reason is not None:
            summary["reason"] = reason
        unaccounted = stats.frames_in - self.processed - dropped
        if unaccounted:
            summary["accounting_error"] = unaccounted     # a bug: every frame must be processed or dropped
        summary["wall_s"] = round(wall_s, 3)
        summary["fps"] = round(self.processed / wall_s, 2) if wall_s > 0 else None
        return summary


def _ran_precision(session: Session) -> str:
    """What ran: the backend's own precision where it has one (the torch backend runs its own, not the
    artifacts'), else the artifacts'."""
    return str(getattr(session.backend, "precision", None) or session.manifest.precision.value)


def _question_clip(first: list[Frame]) -> np.ndarray:
    """The frames the question is asked about, stacked; frames of mixed sizes are an error, not a quiet
    fallback to the first frame alone."""
    shapes = {f.rgb.shape for f in first}
    if len(shapes) > 1:
        raise InputError(f"frames {first[0].index}..{first[-1].index}: the question's frames have different "
                         f"sizes {sorted(s[:2] for s in shapes)}; resize the source to one size")
    return np.stack([f.rgb for f in first])


def _fps_from_times(frames: list[Frame]) -> float:
    if len(frames) > 1 and frames[-1].time_s > frames[0].time_s:
        return (len(frames) - 1) / (frames[-1].time_s - frames[0].time_s)
    return DEFAULT_FPS


def stream(session: Session, source: Source, question: str, **options) -> Stream:
    """`Stream(session, source, question, StreamOptions(**options))`."""
    return Stream(session, source, question, StreamOptions(**options))


__all__ = ["Stream", "StreamOptions", "stream"]
