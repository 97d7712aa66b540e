"""The slow path on its own thread: one question at a time through the LLM, beside the per-frame fast path.

    slow = SlowPath(session)                      # its own `Session.for_stream()` view: its own Timings
    slow.submit(Question(0, "track the red circle", frames, fps))
    for done in slow.poll():                      # never blocks (a live stream's fast path)
        done.answer or done.error
    slow.wait()                                   # blocks until one finishes (a file can wait)
    slow.close()

Why a thread: the LLM answers in hundreds of milliseconds (on a Jetson, with the released model), while a
30 fps camera gives the fast path 33 ms per frame; run in line, every question would drop the frames that
arrive while it is answered. The engines release the GIL while they run a graph, so the two loops overlap.
The worker never touches the fast path's state: it gets a snapshot (a list of immutable `Frame`s, already
decoded) and hands back an `Answer`; opening the task (the router, the head's prompt) is the fast path's job,
so the tracker and its timings stay on one thread.

Policy for a question while the slow path is busy: it waits in this worker's queue (first come, first
answered), up to `max_queued` questions; the stream refuses one more with one event (`runtime/stream.py`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tpo.errors import InputError

from .session import Answer, Session
from .sources import Frame
from .timings import Timings


@dataclass
class Question:
    """One question about a snapshot of frames. `ident` is its number in the stream (also the id of the
    object a track or region answer finds); `reground` marks a re-ask after a lost object."""

    ident: int
    text: str
    frames: list[Frame] = field(default_factory=list)
    fps: float = 30.0
    asked_at: float = field(default_factory=time.perf_counter)     # when the stream received it
    submitted_at: float = 0.0                                      # when its frames went to the slow path
    initial: bool = False                                          # the question the stream was opened with
    reground: bool = False

    @property
    def frame_range(self) -> list[int]:
        return [self.frames[0].index, self.frames[-1].index] if self.frames else []


@dataclass
class Done:
    """A finished question: its answer, or the one-line error that stopped it."""

    question: Question
    answer: Answer | None
    error: BaseException | None
    seconds: float               # the slow path's own time on it (queue wait excluded)
    finished_at: float


class SlowPath:
    """A worker thread answering `Question`s in order; `poll`/`wait` hand finished ones back."""

    def __init__(self, session: Session, max_queued: int = 4, min_answer_s: float = 0.0, nice: int = 0):
        self.session = session.for_stream()
        self.timings: Timings = self.session.timings
        self.max_queued, self.min_answer_s, self.nice = max_queued, min_answer_s, nice
        self.niced = 0           # the niceness increase that took effect (the summary says it)
        self._jobs: deque[Question] = deque()
        self._done: deque[Done] = deque()
        self._running: Question | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, daemon=True, name="tpo-slow-path")
        self._thread.start()

    # ---- the fast path's side
    @property
    def outstanding(self) -> int:
        """Questions submitted and not yet handed back (queued, running or finished but not polled)."""
        with self._cond:
            return len(self._jobs) + (self._running is not None) + len(self._done)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None or bool(self._jobs)

    def submit(self, question: Question) -> None:
        with self._cond:
            question.submitted_at = time.perf_counter()
            self._jobs.append(question)
            self._cond.notify_all()

    def poll(self) -> list[Done]:
        """The questions finished since the last call; never blocks."""
        with self._cond:
            out = list(self._done)
            self._done.clear()
            return out

    def wait(self) -> list[Done]:
        """Blocks until at least one question is finished (or none is outstanding), then `poll`s."""
        with self._cond:
            while not self._done and (self._jobs or self._running is not None):
                self._cond.wait()
        return self.poll()

    def close(self) -> None:
        """Stop taking questions; the one running finishes on its own (a daemon thread, never joined long)."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
        self._thread.join(0.1)

    # ---- the worker's side
    def _lower_priority(self) -> None:
        """On Linux, this thread's niceness goes up by `nice`: where both loops share a few CPU cores (a Jetson's,
        this 2-core machine's) the scheduler then prefers the fast path, and the answer waits a little longer
        instead of the frames. Only the calling thread is changed (PRIO_PROCESS with a thread id is per thread
        on Linux; elsewhere it would renice the whole process, so it is not done). With one intra-op thread the
        engine runs each graph on this thread; an engine's own thread pool is not reniced."""
        if self.nice and sys.platform == "linux":
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
                self.niced = self.nice
            except OSError:
                self.niced = 0       # a sandbox refused: the summary's `slow_path_nice` says 0

    def _work(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                question = self._running = self._jobs.popleft()
            start = time.perf_counter()
            answer, error = None, None
            try:
                answer = self._answer(question)
            except BaseException as e:     # handed to the fast path, which reports or re-raises it
                error = e
            now = time.perf_counter()
            with self._cond:
                self._running = None
                self._done.append(Done(question, answer, error, now - start, now))
                self._cond.notify_all()

    def _answer(self, question: Question) -> Answer:
        start = time.perf_counter()
        answer = self.session.ask(question.text, question_clip(question.frames), question.fps, run_heads=False)
        left = self.min_answer_s - (time.perf_counter() - start)
        if left > 0:
            time.sleep(left)                   # a slower LLM (the released model on a Jetson), for benchmarks
        return answer


def question_clip(frames: list[Frame]) -> np.ndarray:
    """The frames a question is asked about, stacked; frames of mixed sizes are an error, not a quiet
    fallback to the first frame alone."""
    if not frames:
        raise InputError("the question has no frames to be asked about")
    shapes = {f.rgb.shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"frames {frames[0].index}..{frames[-1].index}: the question's frames have different "
                         f"sizes {sorted(s[:2] for s in shapes)}; resize the source to one size")
    return np.stack([f.rgb for f in frames])
