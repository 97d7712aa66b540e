"""Where the streaming runtime's results go: JSON lines, QVHighlights predictions, an annotated video,
a Python callback, or several of these at once.

The runtime produces plain dicts (boxes in source pixels, times in seconds of the source):

    {"type": "answer", "text": str, "task": "track" | "region" | "temporal" | "none"}
    {"type": "track", "frame": i, "time_s": t, "box": [x1, y1, x2, y2] | None, "score": s,
     "mask_rle": {"size": [h, w], "counts": str}}              # COCO compressed RLE, see runtime/rle.py
    {"type": "region", "frame": i, "box": [x1, y1, x2, y2]}
    {"type": "temporal", "windows": [[start_s, end_s, score], ...], "saliency": [float, ...]}
        online variants add "event": "open" | "close"; an "open" event may carry only "time_s" (the
        start); "pred_relevant_windows" / "pred_saliency_scores" are accepted for windows / saliency
    {"type": "source", "event": str, "detail": str, "time_s": t}    # from tpo.runtime.sources
    {"type": "summary", "frames_in": n, "processed": n, "dropped": n,
     "latency_ms": {stage: {"p50": ms, "p95": ms, "p99": ms}}}

Two calls feed a sink, and the runtime makes each once:
- `write_event(event)` for every event, in order (every sink has it);
- `write(frame, events_for_frame)` for every processed frame, only to sinks with `takes_frames = True`
  (the video sink), with the track/region events of that frame (already sent through write_event).
`Sinks` fans both out. Files are written under a `.part` name and renamed by `close()` (also when
the `with` block ends in an exception: what was written is valid), so a process that dies leaves
the `.part` file, whose lines are whole but perhaps the last (each line is flushed as written).
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

from .rle import rle_decode, rle_encode
from .sources import Frame

__all__ = ["AnnotatedVideoSink", "CallbackSink", "JsonlSink", "QVHighlightsSink", "Sink", "Sinks",
           "annotate", "json_safe", "normalise_temporal_event", "rle_decode", "rle_encode"]

VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}   # OpenCV's wheels cannot write H.264


class Sink(Protocol):
    def write_event(self, event: dict) -> None: ...

    def close(self) -> None: ...


def _part_path(path: Path) -> Path:
    """`out.jsonl` -> `out.jsonl.part`; videos keep their suffix last (`out.part.mp4`) because
    OpenCV picks the container from it."""
    if path.suffix.lower() in VIDEO_FOURCC:
        return path.with_name(f"{path.stem}.part{path.suffix}")
    return path.with_name(path.name + ".part")


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
    """One JSON object per line, flushed per line. A path is written as `<path>.part` and renamed at
    close; a stream (anything with write/flush) is written to and left open."""

    takes_frames = False

    def __init__(self, path_or_stream: str | os.PathLike | io.TextIOBase):
        if isinstance(path_or_stream, str | os.PathLike):
            self.path: Path | None = Path(path_or_stream)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._part = _part_path(self.path)
            self._stream: Any = open(self._part, "w", encoding="utf-8")   # noqa: SIM115 (closed in close)
        else:
            self.path = None
            self._stream = path_or_stream
        self.lines = 0
        self._closed = False

    def write_event(self, event: dict) -> None:
        if self._closed:
            raise TPOError(f"JSONL sink {self.path or '<stream>'}: written after close")
        self._stream.write(_dumps(event) + "\n")
        self._stream.flush()
        self.lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.path is not None:
            self._stream.close()
            os.replace(self._part, self.path)

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    """QVHighlights prediction lines: {"qid", "query", "vid", "pred_relevant_windows",
    "pred_saliency_scores"}, windows sorted by score, best first (the benchmark's R1 reads the first).

    A temporal event without "event" is a complete prediction and is written at once. Online "close"
    events add their windows to the current query, written at close (or when a complete prediction
    arrives). qid / query / vid come from the event, else from the constructor."""

    takes_frames = False

    def __init__(self, path: str | os.PathLike, *, qid: Any = 0, query: str = "", vid: str = ""):
        self.defaults = {"qid": qid, "query": query, "vid": vid}
        self._out = JsonlSink(path)
        self._pending: dict | None = None

    def _line(self, event: dict) -> dict:
        windows = sorted(event["windows"], key=lambda w: -w[2] if math.isfinite(w[2]) else math.inf)
        return {**{k: event.get(k, d) for k, d in self.defaults.items()},
                "pred_relevant_windows": windows, "pred_saliency_scores": event["saliency"]}

    def write_event(self, event: dict) -> None:
        if event.get("type") != "temporal":
            return
        event = normalise_temporal_event(event)
        phase = event.get("event")
        if phase is None:
            self._flush()
            self._out.write_event(self._line(event))
        elif phase == "close":
            if self._pending is None:
                self._pending = {**event, "windows": [], "saliency": []}
            self._pending["windows"] += event["windows"]
            self._pending["saliency"] = event["saliency"] or self._pending["saliency"]

    def _flush(self) -> None:
        if self._pending is not None:
            self._out.write_event(self._line(self._pending))
            self._pending = None

    def close(self) -> None:
        self._flush()
        self._out.close()

    def __enter__(self) -> QVHighlightsSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ drawing
COLOURS = {"track": (40, 220, 90), "region": (255, 170, 0), "mask": (30, 144, 255), "window": (255, 200, 0),
           "cursor": (255, 255, 255), "strip": (40, 40, 40), "text": (255, 255, 255), "text_bg": (0, 0, 0)}
MASK_ALPHA = 0.45


def _ascii(text: str) -> str:
    """cv2.putText draws ASCII only; anything else becomes '?' rather than garbage glyphs."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))


def _font_scale(h: int, w: int) -> float:
    return max(0.3, min(1.0, min(h, w) / 480))


def _put_label(img: np.ndarray, text: str, x: int, y: int, colour: tuple, scale: float) -> None:
    """Text on a filled box whose top-left is (x, y), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    h, w = img.shape[:2]
    x = min(max(x, 0), max(w - tw - 2, 0))
    y = min(max(y, 0), max(h - th - base - 2, 0))
    cv2.rectangle(img, (x, y), (x + tw + 2, y + th + base + 2), colour, thickness=-1)
    cv2.putText(img, text, (x + 1, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, COLOURS["text_bg"], 1,
                cv2.LINE_AA)


def _overlay_mask(img: np.ndarray, mask: Any) -> None:
    if isinstance(mask, dict):
        mask = rle_decode(mask)
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2 or not mask.any():
        return
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    colour = np.array(COLOURS["mask"], np.float32)
    img[mask] = (img[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA + 0.5).astype(np.uint8)


def _draw_box(img: np.ndarray, event: dict, scale: float) -> None:
    box = event.get("box")
    if box is None:
        return
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"{event.get('type')} event of frame {event.get('frame')}: box {box!r} is not "
                         "[x1, y1, x2, y2]") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return
    colour = COLOURS.get(event.get("type", ""), COLOURS["track"])
    p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
    cv2.rectangle(img, p1, p2, colour, thickness=max(1, round(scale * 2)))
    label = str(event.get("label", event.get("type", "")))
    score = event.get("score")
    if isinstance(score, int | float | np.floating) and math.isfinite(score):
        label += f" {float(score):.2f}"
    _, th = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0]
    _put_label(img, _ascii(label), p1[0], p1[1] - th - 6, colour, scale)


def _draw_answer(img: np.ndarray, text: str, scale: float) -> None:
    """Up to two lines of the answer on a dark band at the top, cut with '...' when longer."""
    h, w = img.shape[:2]
    words, lines, line = _ascii(text).split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= w - 6 or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], lines[1] + " ..."]
    if not lines:
        return
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = th + base + 2
    band = img[: min(h, step * len(lines) + 4)]
    band[:] = (band * 0.4).astype(np.uint8)
    for i, text_line in enumerate(lines):
        cv2.putText(img, text_line, (3, 2 + th + i * step), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    COLOURS["text"], 1, cv2.LINE_AA)


def _draw_timeline(img: np.ndarray, windows: Iterable[list[float]], time_s: float,
                   duration_s: float | None) -> None:
    """A strip along the bottom: windows (brighter = higher score, scores assumed in 0..1) and the
    current time as a white cursor, over [0, duration_s] (else up to the latest time seen)."""
    h, w = img.shape[:2]
    windows = list(windows)
    strip_h = min(h, max(4, min(24, h // 12)))
    span = duration_s or max([time_s, *[win[1] for win in windows], 1e-6])
    strip = img[h - strip_h:]
    strip[:] = COLOURS["strip"]
    for start, end, score in windows:
        x1 = int(np.clip(start / span * w, 0, w - 1))
        x2 = int(np.clip(end / span * w, x1 + 1, w))
        weight = float(np.clip(score, 0.0, 1.0)) if math.isfinite(score) else 1.0
        colour = np.array(COLOURS["window"], np.float32) * (0.35 + 0.65 * weight)
        strip[:, x1:x2] = colour.astype(np.uint8)
    cursor = int(np.clip(time_s / span * w, 0, w - 1))
    strip[:, cursor] = COLOURS["cursor"]


def annotate(frame: Frame, events: Iterable[dict], *, answer: str | None = None,
             windows: Iterable[list[float]] = (), duration_s: float | None = None,
             timeline: bool = True) -> np.ndarray:
    """An RGB copy of `frame` with, in this order: the masks and boxes of `events` (track / region,
    source pixels), the answer text at the top, and the timeline strip of `windows` at the bottom."""
    img = frame.rgb.copy()
    h, w = img.shape[:2]
    scale = _font_scale(h, w)
    events = [e for e in events if e.get("type") in ("track", "region")]
    for event in events:
        mask = event.get("mask_rle")
        mask = event.get("mask") if mask is None else mask
        if mask is not None:
            _overlay_mask(img, mask)
    for event in events:
        _draw_box(img, event, scale)
    if answer:
        _draw_answer(img, answer, scale)
    if timeline:
        _draw_timeline(img, windows, frame.time_s, duration_s)
    return img


class AnnotatedVideoSink:
    """An annotated copy of the processed frames: .mp4 (mp4v) or .avi (MJPG), `size_hw` frames at
    `fps` (mp4v stores even sizes: OpenCV drops the last row / column of an odd one). Frames of another
    size are annotated in their own pixels, then resized. Answer and temporal events (write_event)
    are remembered and drawn on every later frame; an online "open" temporal event draws a window
    from its start to the current frame until its "close"."""

    takes_frames = True

    def __init__(self, path: str | os.PathLike, fps: float, size_hw: tuple[int, int], *,
                 duration_s: float | None = None):
        self.path = Path(path)
        fourcc = VIDEO_FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise InputError(f"{self.path}: video suffix must be one of {', '.join(VIDEO_FOURCC)} "
                             "(this OpenCV writes mp4v and MJPG, not H.264)")
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise InputError(f"{self.path}: fps {fps!r} must be a positive number")
        h, w = (int(v) for v in size_hw)
        if h < 2 or w < 2:
            raise InputError(f"{self.path}: frame size {size_hw} too small")
        self.size_hw, self.fps, self.duration_s = (h, w), float(fps), duration_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = _part_path(self.path)
        self._writer = cv2.VideoWriter(str(self._part), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
        if not self._writer.isOpened():
            raise InputError(f"{self.path}: OpenCV cannot write {fourcc} video here")
        self.frames = 0
        self.answer: str | None = None
        self.windows: list[list[float]] = []
        self._open_start: float | None = None
        self._closed = False

    def write_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "answer":
            self.answer = str(event.get("text", ""))
        elif kind == "temporal":
            event = normalise_temporal_event(event)
            phase = event.get("event")
            if phase is None:
                self.windows = list(event["windows"])
            elif phase == "open":
                start = event["windows"][0][0] if event["windows"] else event.get("time_s")
                self._open_start = float(start) if start is not None else None
            elif phase == "close":
                self.windows += event["windows"]
                self._open_start = None

    def write(self, frame: Frame, events_for_frame: Iterable[dict] = ()) -> None:
        if self._closed:
            raise TPOError(f"video sink {self.path}: written after close")
        windows = list(self.windows)
        if self._open_start is not None and frame.time_s >= self._open_start:
            windows.append([self._open_start, frame.time_s, 1.0])
        img = annotate(frame, events_for_frame, answer=self.answer, windows=windows,
                       duration_s=self.duration_s)
        h, w = self.size_hw
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.release()
        os.replace(self._part, self.path)

    def __enter__(self) -> AnnotatedVideoSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------ callback, fan-out
class CallbackSink:
    """Calls `fn(event)` for each event. An exception in `fn` becomes a one-line TPOError naming the
    callback (the original is its __cause__): user code failing must stop the run, not vanish."""

    takes_frames = False

    def __init__(self, fn: Callable[[dict], Any]):
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or repr(fn)

    def write_event(self, event: dict) -> None:
        try:
            self.fn(event)
        except Exception as e:
            raise TPOError(f"callback {self.name} failed on a {event.get('type', '?')} event: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def close(self) -> None:
        pass


class Sinks:
    """Fan-out: each event to every sink, each frame to the sinks that take frames. `close()` closes
    all of them even when one fails, then raises the first failure."""

    takes_frames = True

    def __init__(self, sinks: Iterable[Any] = ()):
        self.sinks = list(sinks)

    def write_event(self, event: dict) -> None:
        for sink in self.sinks:
            sink.write_event(event)

    def write(self, frame: Frame, events_for_frame: Iterable[dict] = ()) -> None:
        events_for_frame = list(events_for_frame)
        for sink in self.sinks:
            if getattr(sink, "takes_frames", False):
                sink.write(frame, events_for_frame)

    write_frame = write

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as e:
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> Sinks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
