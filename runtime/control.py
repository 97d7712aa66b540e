"""Commands to a running stream, one JSON object per line (`tpo-run --control FILE|-`):

    {"ask": "track the red circle"}              a question about the most recent frames
    {"stop": 1}                                  stop following object 1 (the id is the question's number)
    {"follow": 2}                                follow object 2, a region answer: its box seeds the tracker
    {"quit": true}                               end the stream as if the source ended (nothing lost)
    {"ask": "when does it leave?", "frame": 120}  any command with "frame": applied once that frame has arrived

A command without "frame" is applied before the next frame after it is read; on a file (which the stream
reads as fast as it can) give "frame" to make the moment reproducible.

A line that does not parse, or parses to something else, is one `control` event naming what is wrong; the
stream goes on (a typo in a control file must not end a camera's stream). Blank lines and lines starting
with `#` are ignored. The reader is a thread: a FIFO or stdin gives commands as they are typed.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tpo.errors import InputError

KINDS = ("ask", "stop", "follow", "quit")


@dataclass(frozen=True)
class Command:
    kind: str                     # "ask" | "stop" | "follow" | "quit"
    question: str = ""
    object_id: int = -1
    at_frame: int | None = None


class Commandable(Protocol):
    """What a control reader drives: `runtime.stream.Stream`."""

    def ask(self, question: str, at_frame: int | None = None) -> int: ...

    def stop_object(self, object_id: int, at_frame: int | None = None) -> None: ...

    def follow(self, object_id: int, at_frame: int | None = None) -> None: ...

    def quit(self, at_frame: int | None = None) -> None: ...

    def control_error(self, line: str, detail: str) -> None: ...


def parse_command(line: str) -> Command | str:
    """A `Command`, or a one-line reason why `line` is none."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg} at column {e.colno})"
    if not isinstance(data, dict) or len(set(KINDS) & set(data)) != 1:
        return 'expected one of {"ask": "<question>"}, {"stop": <object id>}, {"follow": <object id>}, {"quit": true}'
    at = data.get("frame")
    if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 0):
        return f'"frame": {at!r} must be a frame index >= 0'
    unknown = set(data) - {*KINDS, "frame"}
    if unknown:
        return f"unknown key(s) {sorted(unknown)}"
    if "ask" in data:
        question = data["ask"]
        if not isinstance(question, str) or not question.strip():
            return '"ask": needs a non-empty question string'
        return Command("ask", question=question.strip(), at_frame=at)
    for kind in ("stop", "follow"):
        if kind in data:
            ident = data[kind]
            if not isinstance(ident, int) or isinstance(ident, bool):
                return f'"{kind}": {ident!r} must be an object id (an integer)'
            return Command(kind, object_id=ident, at_frame=at)
    if data["quit"] is not True:
        return '"quit": must be true'
    return Command("quit", at_frame=at)


def apply(stream: Commandable, line: str) -> None:
    """One control line applied to `stream` (or reported as an error event)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return
    command = parse_command(text)
    if isinstance(command, str):
        stream.control_error(text, command)
    elif command.kind == "ask":
        stream.ask(command.question, at_frame=command.at_frame)
    elif command.kind == "stop":
        stream.stop_object(command.object_id, at_frame=command.at_frame)
    elif command.kind == "follow":
        stream.follow(command.object_id, at_frame=command.at_frame)
    else:
        stream.quit(at_frame=command.at_frame)


class ControlReader:
    """Applies control lines to a stream. A regular file is read whole by `start()`, before the first frame
    (its commands say with "frame" when they apply, so a run is reproducible); a FIFO or stdin (`-`) is read on
    a daemon thread as lines come (a FIFO is opened on that thread: opening one blocks until a writer comes).
    A path that does not exist is an error here, before anything runs."""

    def __init__(self, path: str | Path, stream: Commandable):
        self.stream = stream
        self.path = str(path)
        if self.path != "-" and not Path(self.path).exists():
            raise InputError(f"control {self.path}: no such file or FIFO")
        self._regular = self.path != "-" and Path(self.path).is_file()
        self._thread = threading.Thread(target=self._read, daemon=True, name="tpo-control")

    def start(self) -> ControlReader:
        if self._regular:
            self._read()
        else:
            self._thread.start()
        return self

    def _read(self) -> None:
        if self.path == "-":
            for line in sys.stdin:
                apply(self.stream, line)
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                apply(self.stream, line)
