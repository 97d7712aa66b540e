"""`Stream(session, source, question)`: one `FrameResult` per frame as frames arrive, every frame accounted for.

    stream = Stream(session, source, "track the red circle", StreamOptions(conf=0.5))
    for result in stream:                     # or session.stream(source, question)
        ...                                   # result.frame, .objects, .events, .status, .timings_ms
        stream.ask("when does it leave?")     # mid-stream, from any thread; also stop_object(id), quit()
    stream.summary                            # also the last event of the closing result

Two loops (docs/runtime.md "Two loops"): this loop is the fast path (read a frame, run every active task on
it, yield); questions go to the slow path (`runtime/slow_path.py`), a thread answering them about a snapshot
of the most recent `question_frames` frames (a ring buffer). When an answer comes back, the fast path opens
the task the model routed to (`runtime/tasks`) and runs it on every following frame, beside the earlier ones.
- Files and iterators (`wait_for_answers` None or True): a question's frames are held, unprocessed, until its
  answer arrives, then processed with it: the question the stream opens with is asked about the first frames
  and those frames get its objects, as when the stream asked in line. Nothing is lost; the file waits.
- Live sources: the fast path never waits. Frames that arrive while a question is answered are processed
  with the tasks already running (the first question's: without objects); the newest-wins queue drops and
  counts what the fast path cannot keep up with.
- A question while the slow path is busy waits in its queue (a `question`/`queued` event); past
  `max_queued` waiting, it is refused (a `question`/`refused` event). Either way the stream goes on.
When the source ends (or `quit()`), questions still waiting are asked about the last frames, answers still
coming are awaited (`"after_end": true` on a live stream's), and a closing result (`frame is None`) carries
the tasks' offline answers, the source's last events and the `summary`.

Timings live with the stream (a `Session.for_stream()` view; the slow path has its own view and thread), so
one session serves several streams at once. Per frame: `capture` (reading the frame), the stages the tasks ran,
`consumer` (what the caller did with the result before asking for the next one: in tpo-run, the sinks), and
`frame_total`, their sum: the real per-frame cost end to end. The summary shows both loops' stages, `answer`
(a question's latency, from its frames being complete to its task running) and ends with `wall_s` and `fps`.
Frames are accounted for as frames_in = processed + dropped; a file source drops nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tpo.contract.tasks import REGION, TRACK
from tpo.errors import InputError, TPOError

from .results import EVENTS_FORMAT, FrameResult
from .session import Answer, Session
from .slow_path import Done, Question, SlowPath
from .sources import Frame, Source
from .tasks import StreamOptions, TaskContext, TaskStream, open_task
from .tasks.track import TrackStream
from .timings import Timings

DEFAULT_FPS = 30.0


@dataclass
class Active:
    """A question whose answer is in force: its task runs on every frame."""

    question: Question
    task: TaskStream
    name: str                    # the routed task ("track", "region", "temporal", "none")
    answer: Answer | None = None
    reground_at: int | None = None   # `processed` when its last re-ground was asked (None: never)
    follow: bool = False         # a region answer to hand to the tracker once its box has been shown
    followed: bool = False       # a track started from a region answer's box (its re-grounds are region answers)


class Stream:
    """An iterator of `FrameResult`s for questions about one source; single pass. `ask`, `stop_object` and
    `quit` are thread-safe: they post to the loop, which applies them before its next frame."""

    def __init__(self, session: Session, source: Source, question: str | None,
                 options: StreamOptions | None = None):
        self.session = session.for_stream()
        self.source = source
        self.question = question
        self.options = options or StreamOptions()
        self.timings: Timings = self.session.timings
        self.delivered = 0          # frames the source handed to the stream
        self.processed = 0          # frames the tasks processed and the stream yielded
        self.dropped = 0            # frames the stream received but did not process (an aborted run)
        self.task = "none"
        self.status = ""
        self.summary: dict | None = None
        self.wait = self.options.wait_for_answers if self.options.wait_for_answers is not None else not source.live
        self.slow: SlowPath | None = None
        self._gen: Iterator[FrameResult] | None = None
        self._wall_start = time.perf_counter()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._asked = 0                              # questions numbered so far (ids)
        self._answered = 0
        self._waiting: list[Question] = []           # asked, their frames not yet complete
        self._flight: dict[int, Question] = {}       # with the slow path (queued or being answered)
        self._active: dict[int, Active] = {}         # by question id, in answer order
        self._stopped: set[int] = set()              # ids stopped before their answer came
        self._scheduled: list[tuple] = []            # commands waiting for their frame (kind, value, at_frame)
        self._events: list[dict] = []                # for the next result
        self._quit = False
        self._ended = False
        self._ring: deque[Frame] = deque(maxlen=1)
        self._last_track: tuple[int, float] | None = None     # (index, monotonic) of the last track result
        self._track_gap = [0, 0.0]                            # max gap: source frames, seconds
        if question is not None:
            self.ask(question, initial=True)

    # ------------------------------------------------------------------------------------------ commands
    def ask(self, question: str, at_frame: int | None = None, initial: bool = False) -> int:
        """Ask `question` about the most recent frames (once frame `at_frame` has arrived, if given: a file's
        questions are then reproducible); returns its id (the id of the object a track or region answer
        finds). Thread-safe."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("question: empty; ask something, e.g. 'track the red circle'")
        with self._lock:
            ident = self._asked
            self._asked += 1
        self._inbox.put(("ask", Question(ident, question if initial else question.strip(), initial=initial),
                         at_frame))
        return ident

    def stop_object(self, object_id: int, at_frame: int | None = None) -> None:
        """Stop the task of question `object_id` (stop tracking that object). Thread-safe."""
        self._inbox.put(("stop", object_id, at_frame))

    def follow(self, object_id: int, at_frame: int | None = None) -> None:
        """Hand the region answer of question `object_id` to the tracker: its box prompts SAM2 through SAM2's own
        prompt encoder and the object is tracked, same id, from the next frame. Thread-safe."""
        self._inbox.put(("follow", object_id, at_frame))

    def quit(self, at_frame: int | None = None) -> None:
        """End the stream as if the source ended: questions asked are still answered. Thread-safe."""
        self._inbox.put(("quit", None, at_frame))

    def control_error(self, line: str, detail: str) -> None:
        """A control line that could not be applied: one event, the stream goes on."""
        self._inbox.put(("event", {"type": "control", "event": "bad_command", "line": line[:200],
                                   "detail": detail}, None))

    def _take_commands(self) -> None:
        """Apply what was posted; a command for a frame not yet arrived waits for it (`_scheduled`)."""
        newest = self._ring[-1].index if self._ring else -1
        while True:
            try:
                self._scheduled.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        due, self._scheduled = _partition(self._scheduled, lambda c: c[2] is None or newest >= c[2] or self._ended)
        for kind, value, at_frame in due:
            if at_frame is not None and newest < at_frame:
                self._events.append({"type": "control", "event": "not_applied", "command": kind,
                                     "detail": f"frame {at_frame} never arrived (the last was {newest})"})
            elif kind == "ask":
                self._take_question(value)
            elif kind == "stop":
                self._stop(value)
            elif kind == "follow":
                self._follow(value)
            elif kind == "quit":
                self._quit = True
            else:
                self._events.append(value)

    def _take_question(self, q: Question) -> None:
        """Accept, queue (one event) or refuse (one event) a question, by the busy policy."""
        slow = self.slow
        ahead = len(self._waiting) + (slow.outstanding if slow is not None else 0)
        event = {"type": "question", "question_id": q.ident, "question": q.text}
        if ahead > self.options.max_queued:
            self._events.append({**event, "event": "refused", "detail": f"the slow path is busy with {ahead} "
                                 f"question(s) (max_queued {self.options.max_queued}); ask again later"})
            return
        if ahead:
            self._events.append({**event, "event": "queued", "ahead": ahead})
        self._waiting.append(q)

    def _stop(self, ident) -> None:
        active = self._active.pop(ident, None)
        pending = {q.ident for q in self._waiting} | self._in_flight
        if active is not None:
            self._events += active.task.finish(self._ring[-1] if self._ring else None)
        elif ident in pending:
            self._stopped.add(ident)
            self._waiting = [q for q in self._waiting if q.ident != ident]
        else:
            known = sorted(self._active)
            self._events.append({"type": "control", "event": "unknown_object", "object": ident,
                                 "detail": f"no object {ident!r} to stop (running: {known or 'none'})"})
            return
        self._events.append({"type": "control", "event": "stopped", "object": ident})

    def _follow(self, ident) -> None:
        """Mark a region answer to be followed (it is handed over once its box has been shown)."""
        active = self._active.get(ident)
        if active is None or active.name != REGION.name:
            regions = sorted(i for i, a in self._active.items() if a.name == REGION.name)
            self._events.append({"type": "control", "event": "not_followable", "object": ident,
                                 "detail": f"no region answer {ident!r} to follow (region answers: "
                                           f"{regions or 'none'})"})
            return
        active.follow = True

    def _hand_over_regions(self, frame: Frame) -> None:
        """Regions marked to follow whose box has been shown become tracks: SAM2 prompted by the box on the next
        frame, same object id; one `follow` event (or `failed` with the reason, the region stays as it was)."""
        for ident, active in list(self._active.items()):
            if not active.follow or not active.task.shown:
                continue
            active.follow = False
            event = {"type": "object", "event": "follow", "object": ident, "label": active.task.label,
                     "box": active.task.object.box, "box_frame": active.task.frame_index, "frame": frame.index}
            try:
                prompt = self.session.box_prompt(np.asarray(active.task.box_normalised)[None])
            except TPOError as e:
                self._events.append({**event, "failed": str(e)})
                continue
            ctx = TaskContext(self.session, active.answer, active.question.text, [], active.question.fps or 0.0,
                              self.options, ident=ident)
            self._active[ident] = Active(active.question, TrackStream(ctx, prompt), TRACK.name, answer=active.answer,
                                         followed=True)
            self._events.append(event)

    # ------------------------------------------------------------------------------------------ the loop
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
            self._gen.close()           # runs the loop's `finally`: the source and the slow path are closed
        self.source.close()
        self.dropped += self.delivered - self.processed - self.dropped
        self.summary = self._summary(self.status, complete=False, reason=reason)
        return FrameResult(None, [], self.source.new_events() + [self.summary], self.status, self.timings.frame())

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
        source, options = self.source, self.options
        frames = iter(source)
        captured: dict[int, float] = {}
        self._ring = deque(maxlen=options.question_frames or self.session.pre.mllm.num_frames)
        self.slow = SlowPath(self.session, options.max_queued, options.min_answer_s, options.slow_path_nice)
        held: deque[Frame] = deque()         # received, not yet processed (files wait for answers)
        last: Frame | None = None
        try:
            while True:
                self._take_commands()
                frame = None if self._quit else self._read(frames, captured)
                if frame is None:
                    self._ended = True
                    source.close()           # a quit: a live source's queued frames are counted as dropped
                else:
                    self._ring.append(frame)
                    held.append(frame)
                self._take_commands()        # a question asked now includes this frame
                self._submit_ready()
                if self.wait or self._ended:
                    if self._waiting_for_frames():
                        continue             # hold this frame: the question needs more
                    if self.slow.outstanding:
                        while self.slow.outstanding:
                            self._hand_off(self.slow.wait())
                        self.timings.frame()     # the wait is not the held frames' cost
                else:
                    self._hand_off(self.slow.poll())
                while held:
                    frame = held.popleft()
                    result = self._process(frame)
                    last = frame
                    self._glass_to_glass(result)
                    handed = time.perf_counter()
                    yield result
                    consumer = time.perf_counter() - handed
                    self.timings.add("consumer", consumer)
                    self.timings.add("frame_total", captured.pop(frame.index, 0.0) + result.seconds + consumer)
                if self._ended:
                    break
            closing: list[dict] = []
            for active in self._active.values():
                closing += active.task.finish(last)
            self.status = self._status()
        finally:
            source.close()
            self.slow.close()
        self.summary = self._summary(self.status, complete=True)
        events, self._events = self._events, []
        yield FrameResult(None, [], events + closing + source.new_events() + [self.summary], self.status,
                          self.timings.frame())

    # ------------------------------------------------------------------------------------------ questions
    @property
    def _in_flight(self) -> set[int]:
        return set(self._flight)

    def _waiting_for_frames(self) -> bool:
        """A question is still collecting its frames (the ring is not full yet)."""
        return not self._ended and bool(self._waiting)

    def _submit_ready(self) -> None:
        """Questions whose frames are complete go to the slow path with a snapshot of the ring. At the end of
        the source every waiting question goes, with the frames there are (one event if there are none)."""
        full = len(self._ring) == self._ring.maxlen
        keep: list[Question] = []
        for q in self._waiting:
            if not (self._ended or full):
                keep.append(q)
            elif not self._ring:
                self._events.append({"type": "question", "event": "unanswered", "question_id": q.ident,
                                     "question": q.text, "detail": "the source ended before any frame arrived"})
            else:
                q.frames = list(self._ring)
                q.fps = self.source.fps or _fps_from_times(q.frames)
                self._flight[q.ident] = q
                self.slow.submit(q)
        self._waiting = keep

    def _hand_off(self, done: list[Done]) -> None:
        """Finished questions: open each answer's task (it runs from the next frame processed) and say so."""
        for d in done:
            q = d.question
            self._flight.pop(q.ident, None)
            if d.error is not None and (q.initial or not isinstance(d.error, TPOError)):
                raise d.error          # the stream's own question, or a bug: the stream cannot go on
            if q.reground:
                self._regrounded(d)
            elif d.error is not None:
                self._events.append({"type": "question", "event": "failed", "question_id": q.ident,
                                     "question": q.text, "detail": str(d.error)})
            elif q.ident not in self._stopped:
                self._answered_question(d)
        self.status = self._status()

    def _answered_question(self, d: Done) -> None:
        q, answer = d.question, d.answer
        task = open_task(TaskContext(self.session, answer, q.text, q.frames, q.fps, self.options, ident=q.ident))
        latency = time.perf_counter() - q.submitted_at
        self.timings.add("answer", latency)
        self._active[q.ident] = Active(q, task, answer.task, answer=answer,
                                       follow=self.options.follow_regions and answer.task == REGION.name)
        self._answered += 1
        if self._answered == 1:
            self.task = answer.task
        event = {"type": "answer", "format": EVENTS_FORMAT, "text": task.status(), "model_text": answer.text,
                 "task": answer.task, "question": q.text, "question_id": q.ident, "frames": q.frame_range,
                 "latency_ms": round(latency * 1000, 2), "slow_path_ms": round(d.seconds * 1000, 2)}
        if answer.truncated:
            event["truncated"] = True    # the answer reached max_new_tokens before its end token
        if self._ended and not self.wait:
            event["after_end"] = True    # a live source ended while the question was answered
        self._events.append(event)

    # ------------------------------------------------------------------------------------------ re-grounding
    def _reground_lost(self) -> None:
        """A lost object's question is re-asked about the most recent frames, once when it is lost and again
        every `lost_frames` frames while it stays lost (never two at once for one object)."""
        if not self.options.reground or not self._ring:
            return
        for ident, active in self._active.items():
            if not getattr(active.task, "lost", False) or ident in self._flight:
                continue
            if active.reground_at is not None and self.processed - active.reground_at < self.options.lost_frames:
                continue
            active.reground_at = self.processed
            q = Question(ident, active.question.text, list(self._ring), reground=True)
            q.fps = self.source.fps or _fps_from_times(q.frames)
            self._flight[ident] = q
            self.slow.submit(q)

    def _regrounded(self, d: Done) -> None:
        q = d.question
        active = self._active.get(q.ident)
        if active is None:
            return                       # stopped while re-grounding
        event = {"type": "object", "event": "reground", "object": q.ident, "frames": q.frame_range,
                 "latency_ms": round((time.perf_counter() - q.submitted_at) * 1000, 2),
                 "slow_path_ms": round(d.seconds * 1000, 2)}
        if d.error is not None:
            event["failed"] = str(d.error)
        elif d.answer.task != (REGION.name if active.followed else active.name):
            event["failed"] = (f"the question was routed to {d.answer.task!r} this time; "
                               "the tracker goes on as it was")
        else:
            active.task.reseed(d.answer)
        self._events.append(event)

    def _status(self) -> str:
        lines = [a.task.status() for a in self._active.values()]
        if not lines and (self._waiting or self._flight):
            return "asking: " + next(iter([*self._waiting, *self._flight.values()])).text
        return " · ".join(lines)

    def _glass_to_glass(self, result: FrameResult) -> None:
        """Capture (the source's receipt) to the result's hand-over, per frame; and the largest gap between two
        consecutive frames with track events, in source frames (index difference: drops widen it) and seconds."""
        now = time.monotonic()
        if result.frame.received:
            self.timings.add("glass_to_glass", now - result.frame.received)
        if not any(o.kind == "track" for o in result.objects):
            return
        if self._last_track is not None:
            index, at = self._last_track
            self._track_gap = [max(self._track_gap[0], result.frame.index - index),
                               max(self._track_gap[1], now - at)]
        self._last_track = (result.frame.index, now)

    def _process(self, frame: Frame) -> FrameResult:
        started = time.perf_counter()
        objects, events = [], []
        for active in list(self._active.values()):
            step = active.task.on_frame(frame)
            objects += step.objects
            events += step.events
        self.processed += 1
        self._hand_over_regions(frame)
        self._reground_lost()
        self.status = self._status()
        pending, self._events = self._events, []
        result = FrameResult(frame, objects, pending + events + self.source.new_events(), self.status,
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
        timings = self.timings.merged(self.slow.timings) if self.slow is not None else self.timings
        graph_s = sum(timings.total_s(g) for g in graphs)
        latency = {k: {q: v[q] for q in ("p50", "p95", "p99", "mean", "max", "count")}
                   for k, v in timings.summary_ms().items()}
        dropped = stats.dropped + self.dropped
        summary = {"type": "summary", "format": EVENTS_FORMAT, "complete": complete, "task": self.task,
                   "answer": answer, "frames_in": stats.frames_in, "processed": self.processed, "dropped": dropped,
                   "source_dropped": stats.dropped, "stream_dropped": self.dropped, "corrupt": stats.corrupt,
                   "skipped_by_stride": stats.skipped, "reconnects": stats.reconnects,
                   "backend": self.session.backend.description, "precision": _ran_precision(self.session),
                   "artifacts_precision": self.session.manifest.precision.value,
                   "frame_path": self.session.frame_path.describe(), "graph_seconds": round(graph_s, 4),
                   "questions": self._asked, "answered": self._answered,
                   "track_gap": {"max_frames": self._track_gap[0], "max_s": round(self._track_gap[1], 4)},
                   "slow_path_nice": self.slow.niced if self.slow is not None else 0, "latency_ms": latency}
        if self._quit:
            summary["stopped_by"] = "quit"
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


def _partition(items: list, keep) -> tuple[list, list]:
    """(items where keep(item), the others), in order."""
    yes, no = [], []
    for item in items:
        (yes if keep(item) else no).append(item)
    return yes, no


def _fps_from_times(frames: list[Frame]) -> float:
    if len(frames) > 1 and frames[-1].time_s > frames[0].time_s:
        return (len(frames) - 1) / (frames[-1].time_s - frames[0].time_s)
    return DEFAULT_FPS


def stream(session: Session, source: Source, question: str | None, **options) -> Stream:
    """`Stream(session, source, question, StreamOptions(**options))`."""
    return Stream(session, source, question, StreamOptions(**options))


__all__ = ["Stream", "StreamOptions", "stream"]
