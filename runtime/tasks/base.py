"""What every runtime task gets and gives: the context of one question on one stream, and one frame's step."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tpo.errors import InputError

from ..results import TrackedObject
from ..sources import Frame

if TYPE_CHECKING:
    from ..session import Answer, Session


@dataclass(frozen=True)
class StreamOptions:
    """Settings of one stream.

    conf: tracked objects with a presence probability below this are reported absent (box null, no mask);
      0.5 is SAM2's own rule (object-score logit > 0). with_masks: put COCO RLE masks in track events.
    question_frames: frames the question is asked about (default: the vision encoder's frame count).
    window_clips / open_score: online temporal windows (see tasks/temporal.py).
    wait_for_answers: the fast path holds its frames while a question is answered (None: files and iterators
      wait, so nothing is processed without the answer; live sources never wait: docs/runtime.md "Two loops").
    max_queued: questions that may wait for the busy slow path; one more is refused with an event.
    min_answer_s: the slow path takes at least this long per answer (benchmarks: a slower LLM).
    lost_frames: a tracked object absent this many frames in a row is `lost` (a `found` event when it is back).
    reground: on `lost`, re-ask the track question about the most recent frames and re-seed the tracker.
    follow_regions: hand every region answer to the tracker once its box is shown (`Stream.follow` per answer).
    slow_path_nice: Linux: the slow path's thread runs this much nicer than the fast path (0: the same).
    """

    conf: float = 0.5
    with_masks: bool = True
    question_frames: int | None = None
    window_clips: int = 32
    open_score: float = 0.5
    wait_for_answers: bool | None = None
    max_queued: int = 4
    min_answer_s: float = 0.0
    lost_frames: int = 15
    reground: bool = True
    follow_regions: bool = False
    slow_path_nice: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.conf, int | float) and 0.0 <= self.conf <= 1.0):
            raise InputError(f"conf {self.conf!r}: must be a probability in [0, 1]")
        if self.question_frames is not None and (not isinstance(self.question_frames, int) or self.question_frames < 1):
            raise InputError(f"question_frames {self.question_frames!r}: must be an integer >= 1")
        if not isinstance(self.window_clips, int) or self.window_clips < 1:
            raise InputError(f"window_clips {self.window_clips!r}: must be an integer >= 1")
        if not (isinstance(self.open_score, int | float) and math.isfinite(self.open_score)):
            raise InputError(f"open_score {self.open_score!r}: must be a number")
        if not isinstance(self.max_queued, int) or self.max_queued < 0:
            raise InputError(f"max_queued {self.max_queued!r}: must be an integer >= 0")
        if not (isinstance(self.min_answer_s, int | float) and 0 <= self.min_answer_s < math.inf):
            raise InputError(f"min_answer_s {self.min_answer_s!r}: must be a number of seconds >= 0")
        if not isinstance(self.slow_path_nice, int) or not 0 <= self.slow_path_nice <= 19:
            raise InputError(f"slow_path_nice {self.slow_path_nice!r}: must be an integer in 0..19")
        if not isinstance(self.lost_frames, int) or self.lost_frames < 1:
            raise InputError(f"lost_frames {self.lost_frames!r}: must be an integer >= 1")


@dataclass
class TaskContext:
    """One question on one stream: the session view (its own timings), the answer the LLM gave, the frames
    the question was asked about, and the stream's settings. `ident` is the question's number in its stream:
    the id of the object it finds (track, region), what `{"stop": id}` names."""

    session: Session
    answer: Answer
    question: str
    first: list[Frame]
    fps: float
    options: StreamOptions
    ident: int = 0


@dataclass
class TaskStep:
    objects: list[TrackedObject] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


class TaskStream(Protocol):
    def __init__(self, ctx: TaskContext) -> None: ...

    def on_frame(self, frame: Frame) -> TaskStep: ...

    def status(self) -> str: ...

    def finish(self, last: Frame | None) -> list[dict]: ...


_LEADING = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+)*"
    r"(?:track|follow|segment|find|locate|detect|box|show(?: me)?|point (?:at|to)|where(?:'s| is| are)|"
    r"when (?:does|do|did|is|are))\s+", re.IGNORECASE)
_TRAILING_VERB = re.compile(r"\s+(?:appear|appears|show up|shows up|move|moves|leave|leaves|happen|happens|"
                            r"disappear|disappears|enter|enters|start|starts|stop|stops)$", re.IGNORECASE)


def target_phrase(question: str) -> str:
    """The object a question names, for labels and answer lines: "track the yellow circle" -> "the yellow
    circle", "where is the red square?" -> "the red square", "when does the blue triangle appear?" -> "the
    blue triangle". A question in no known form is returned whole (trimmed)."""
    text = " ".join(question.strip().rstrip("?.! ").split())
    target = _TRAILING_VERB.sub("", _LEADING.sub("", text, count=1))
    return target or text


def box_text(box: list[float] | None) -> str:
    return "nowhere" if box is None else "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def seconds_text(t: float) -> str:
    return f"{t:.1f} s"
