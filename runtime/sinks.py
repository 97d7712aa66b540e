"""Where a stream's results go: JSON lines, QVHighlights predictions, an annotated video, a Python callback, or
several of these at once (`Sinks`).

Every sink takes the stream's `FrameResult`s, in order, through `write(result)`, and is closed once with
`close()`; the closing result (`result.frame is None`) carries the offline answers and the summary. The JSON
events inside a result are the lines of `tpo-run --jsonl` (docs/runtime.md).

Files go through `runtime.outputs.OutputFile`: written under a unique temporary name, claimed against a second
writer, renamed into place by `close()` after a flushed and fsynced write; `close(partial=True)` (an
interrupted or failed run) keeps them under a name that says so (`events.partial.jsonl`). Special files (a
FIFO, /dev/null, "-" for stdout) are written directly. Every write error is one line naming the file.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from tpo.errors import InputError, TPOError

from .drawing import Layout, compose, timeline_span
from .outputs import OutputError, OutputFile, describe_os_error, open_text, sync_close
from .results import FrameResult

__all__ = ["AnnotatedVideoSink", "CallbackSink", "JsonlSink", "QVHighlightsSink", "Sink", "Sinks",
           "check_video_path", "json_safe", "normalise_temporal_event"]

VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}   # OpenCV's wheels cannot write H.264


class Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def close(self, partial: bool = False) -> None: ...


def json_safe(value: Any, where: str = "event") -> Any:
    """`value` with numpy scalars and arrays as Python values, tuples as lists, and non-finite floats
    as None (JSON has no NaN; `null` keeps the line readable by every parser). TPOError for anything
    JSON cannot hold, naming where it was."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), where)
    if isinstance(value, dict):
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    raise TPOError(f"{where}: a {type(value).__name__} cannot be written as JSON")


def _dumps(event: dict) -> str:
    return json.dumps(json_safe(event, f"event {event.get('type', '?')}"), allow_nan=False,
                      ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ JSONL
class JsonlSink:
    """One JSON object per line, flushed per line: every event of every result (`write`), or one event at a
    time (`write_event`). A path goes through an `OutputFile` (see the module docstring); a stream (anything
    with write/flush) is written to and left open."""

    def __init__(self, path_or_stream: str | os.PathLike | io.TextIOBase, *, force: bool = False):
        self.output: OutputFile | None = None
        if isinstance(path_or_stream, str | os.PathLike):
            self.output = OutputFile(path_or_stream, force=force)
            self.path: Path | None = self.output.path
            self._stream: Any = open_text(self.output)
        else:
            self.path = None
            self._stream = path_or_stream
        self.lines = 0
        self._closed = False

    def write(self, result: FrameResult) -> None:
        for event in result.events:
            self.write_event(event)

    def write_event(self, event: dict) -> None:
        if self._closed:
            raise TPOError(f"JSONL sink {self.path or '<stream>'}: written after close")
        line = _dumps(event) + "\n"
        try:
            self._stream.write(line)
            self._stream.flush()
        except OSError as e:
            raise describe_os_error(self.path or "<stream>", e) from None
        self.lines += 1

    def discard(self) -> None:
        """Drop what was written and the claim on the path (a run that never started)."""
        self._closed = True
        if self.output is not None:
            self._stream.close()
            self.output.discard()

    def close(self, partial: bool = False) -> Path | None:
        """Finish the file: into place, or (partial) under the partial name. Returns where it is."""
        if self._closed:
            return None
        self._closed = True
        if self.output is None:
            return None
        try:
            sync_close(self._stream)
        except OSError as e:
            self.output.abandon()
            raise describe_os_error(self.path, e) from None
        return self.output.abandon() if partial else self.output.commit()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(partial=exc_type is not None)


# ------------------------------------------------------------------------------------ QVHighlights
def _windows(value: Any, where: str) -> list[list[float]]:
    if value is None:
        return []
    try:
        rows = [list(w) for w in value]
    except TypeError:
        raise InputError(f"{where}: windows must be a list of [start_s, end_s, score]") from None
    out = []
    for row in rows:
        if len(row) != 3:
            raise InputError(f"{where}: window {row} is not [start_s, end_s, score]")
        try:
            start, end, score = (float(v) for v in row)
        except (TypeError, ValueError):
            raise InputError(f"{where}: window {row} holds a non-number") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise InputError(f"{where}: window {row} needs finite start_s <= end_s")
        out.append([start, end, score])
    return out


def normalise_temporal_event(event: dict) -> dict:
    """A copy of a temporal event with `windows` ([[start_s, end_s, score], ...] as floats) and
    `saliency` (floats); `pred_relevant_windows` / `pred_saliency_scores` (the QVHighlights names) are
    taken as aliases. Other keys (qid, query, vid, event, time_s, ...) are kept. InputError if an alias
    contradicts its twin or a window is malformed."""
    where = f"temporal event {str(event)[:60]}"
    out = {k: v for k, v in event.items() if k not in ("pred_relevant_windows", "pred_saliency_scores")}
    out["type"] = "temporal"
    for name, alias in (("windows", "pred_relevant_windows"), ("saliency", "pred_saliency_scores")):
        if alias in event:
            if name in event and json_safe(event[name]) != json_safe(event[alias]):
                raise InputError(f"{where}: {name} and {alias} differ")
            out[name] = event[alias]
    out["windows"] = _windows(out.get("windows"), where)
    saliency = out.get("saliency")
    try:
        out["saliency"] = [float(s) for s in (saliency if saliency is not None else [])]
    except (TypeError, ValueError):
        raise InputError(f"{where}: saliency must be a list of numbers") from None
    return out


class QVHighlightsSink:
    """QVHighlights prediction lines, one per query: {"qid", "query", "vid", "pred_relevant_windows",
    "pred_saliency_scores"}, windows sorted by score, best first (the benchmark's R1 reads the first).

    The line is the stream's offline temporal answer (the event without "event"). A stream that ends
    without one (stopped early) writes the windows its online "close" events gave instead, so a query is
    never lost and never written twice. qid / query / vid come from the event, else from the constructor."""

    def __init__(self, path: str | os.PathLike, *, qid: Any = 0, query: str = "", vid: str = "",
                 force: bool = False):
        self.defaults = {"qid": qid, "query": query, "vid": vid}
        self._out = JsonlSink(path, force=force)
        self._online: dict | None = None
        self._written = False

    def _line(self, event: dict) -> dict:
        windows = sorted(event["windows"], key=lambda w: -w[2] if math.isfinite(w[2]) else math.inf)
        return {**{k: event.get(k, d) for k, d in self.defaults.items()},
                "pred_relevant_windows": windows, "pred_saliency_scores": event["saliency"]}

    def write(self, result: FrameResult) -> None:
        for event in result.events:
            self.write_event(event)

    def write_event(self, event: dict) -> None:
        if event.get("type") != "temporal":
            return
        event = normalise_temporal_event(event)
        phase = event.get("event")
        if phase is None:
            self._out.write_event(self._line(event))
            self._online, self._written = None, True
        elif phase == "close":
            if self._online is None:
                self._online = {**event, "windows": [], "saliency": []}
            self._online["windows"] += event["windows"]

    def discard(self) -> None:
        self._out.discard()

    def close(self, partial: bool = False) -> Path | None:
        if self._online is not None and not self._written:
            self._out.write_event(self._line(self._online))
        return self._out.close(partial)

    def __enter__(self) -> QVHighlightsSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(partial=exc_type is not None)


# ------------------------------------------------------------------------------------------ video
def check_video_path(path: str | os.PathLike) -> Path:
    """`path` if OpenCV can write its container here, else InputError (checked before any model loads)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_FOURCC:
        raise InputError(f"{path}: video suffix must be one of {', '.join(VIDEO_FOURCC)} "
                         "(this OpenCV writes mp4v and MJPG, not H.264)")
    return path


class AnnotatedVideoSink:
    """Every processed frame, annotated (`runtime.drawing`): masks and boxes on the picture, the stream's status
    line in a band above it, the timeline with the temporal windows found so far in a strip below it.

    The video plays at the source's pace: it is written at `fps` (the source's rate divided by the stride) and
    each frame goes to the slot its timestamp falls in, so a live source that dropped frames repeats the last
    frame until the next one instead of playing faster (at most `max_gap_s` of repeats, for clock jumps).
    `duration_s` (files) fixes the timeline's span; without it the timeline scrolls. .mp4 (mp4v) or .avi
    (MJPG); the size is the first frame's plus the bands, and a frame of another size is resized into it."""

    def __init__(self, path: str | os.PathLike, fps: float, *, duration_s: float | None = None,
                 max_gap_s: float = 2.0, force: bool = False):
        self.path = check_video_path(path)
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise InputError(f"{self.path}: fps {fps!r} must be a positive number")
        self.fps, self.duration_s, self.max_gap_s = float(fps), duration_s, max_gap_s
        self.output = OutputFile(self.path, force=force, keep_suffix=True)
        if self.output.special:
            raise OutputError(f"{self.path}: a video needs a regular file (OpenCV cannot write to a pipe or device)")
        self.path = self.output.path
        self._part = self.output.write_path
        self._writer: cv2.VideoWriter | None = None
        self.layout: Layout | None = None
        self.frames = 0                 # processed frames written
        self.written = 0                # video frames written, repeats included
        self.windows: list[list[float]] = []
        self._open_start: float | None = None
        self._first_time: float | None = None
        self._last: np.ndarray | None = None
        self._closed = False

    def _open(self, h: int, w: int) -> None:
        if h < 2 or w < 2:
            raise InputError(f"{self.path}: frame size {h}x{w} too small to write")
        self.layout = Layout.for_frame(h, w)
        out_h, out_w = self.layout.size_hw
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = VIDEO_FOURCC[self.path.suffix.lower()]
        self._writer = cv2.VideoWriter(str(self._part), cv2.VideoWriter_fourcc(*fourcc), self.fps, (out_w, out_h))
        if not self._writer.isOpened():
            raise InputError(f"{self.path}: OpenCV cannot write {fourcc} video here")

    def _track_windows(self, events: Iterable[dict]) -> None:
        for event in events:
            if event.get("type") != "temporal":
                continue
            event = normalise_temporal_event(event)
            phase = event.get("event")
            if phase is None:
                self.windows = list(event["windows"])
            elif phase == "open":
                self._open_start = float(event["time_s"])
            elif phase == "close":
                self.windows += event["windows"]
                self._open_start = None

    def write(self, result: FrameResult) -> None:
        if self._closed:
            raise TPOError(f"video sink {self.path}: written after close")
        self._track_windows(result.events)
        frame = result.frame
        if frame is None:
            return
        if self._writer is None:
            self._open(*frame.size_hw)
        windows = list(self.windows)
        if self._open_start is not None and frame.time_s >= self._open_start:
            windows.append([self._open_start, frame.time_s, 1.0])
        canvas = compose(self.layout, frame.rgb, result.objects, status=result.status, windows=windows,
                         time_s=frame.time_s, span_s=timeline_span(frame.time_s, self.duration_s))
        bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        if self._first_time is None:
            self._first_time = frame.time_s
        slot = round((frame.time_s - self._first_time) * self.fps)
        repeats = min(slot - self.written, round(self.max_gap_s * self.fps)) if self._last is not None else 0
        for _ in range(max(0, repeats)):
            self._writer.write(self._last)
            self.written += 1
        self._writer.write(bgr)
        self._last = bgr
        self.written += 1
        self.frames += 1

    def discard(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.release()
        self.output.discard()

    def close(self, partial: bool = False) -> Path | None:
        """Finish the video: check what OpenCV wrote (it reports no write error: a full disk gives a short
        file), then into place, or (partial) under the partial name. Returns where it is."""
        if self._closed:
            return None
        self._closed = True
        if self._writer is None:
            self.output.discard()       # nothing was processed: no video
            return None
        self._writer.release()
        if not partial:
            readable = _count_frames(self._part)
            if readable != self.written:
                where = self.output.abandon()
                raise OutputError(f"{self.path}: OpenCV wrote {readable} of {self.written} frames (is the disk "
                                  f"full?); what it wrote is in {where}")
        return self.output.abandon() if partial else self.output.commit()

    def __enter__(self) -> AnnotatedVideoSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(partial=exc_type is not None)


def _count_frames(path: Path) -> int:
    """Frames a video file holds: the container's count, trusted only if its last frame decodes (a write cut
    short by a full disk leaves a count the data does not back, or no readable index at all). Cheap for long
    videos: one seek, not a decode of every frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if declared <= 0:
            return 0
        cap.set(cv2.CAP_PROP_POS_FRAMES, declared - 1)
        ok, _ = cap.read()
        return declared if ok else 0
    finally:
        cap.release()


# ------------------------------------------------------------------------------------ callback, fan-out
class CallbackSink:
    """Calls `fn(result)` for each FrameResult. An exception in `fn` becomes a one-line TPOError naming the
    callback (the original is its __cause__): user code failing must stop the run, not vanish."""

    def __init__(self, fn: Callable[[FrameResult], Any]):
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or repr(fn)

    def write(self, result: FrameResult) -> None:
        try:
            self.fn(result)
        except Exception as e:
            where = "the closing result" if result.frame is None else f"frame {result.frame.index}"
            raise TPOError(f"callback {self.name} failed on {where}: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def close(self, partial: bool = False) -> None:
        pass


class Sinks:
    """Fan-out: each result to every sink. `close()` closes all of them even when one fails, then raises the
    first failure."""

    def __init__(self, sinks: Iterable[Any] = ()):
        self.sinks = list(sinks)

    def write(self, result: FrameResult) -> None:
        for sink in self.sinks:
            sink.write(result)

    def close(self, partial: bool = False) -> None:
        """Close every sink (partial: an interrupted or failed run) even when one fails; then raise the first
        failure."""
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close(partial)
            except BaseException as e:
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(partial=exc_type is not None)
