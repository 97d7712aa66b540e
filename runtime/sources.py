"""Frame sources of the streaming runtime: one iterator of RGB `Frame`s for every kind of input.

    with open_source("clip.mp4", stride=2) as source:      # or 0, "rtsp://...", a folder, an iterator
        for frame in source:                               # Frame(index, time_s, rgb [H, W, 3] uint8)
            ...
        source.stats                                       # frames_in, delivered, dropped, ...

What `spec` may be, and how it is read:
- a video file (anything OpenCV reads): every frame, in order, never dropped;
- a folder of images (.jpg .jpeg .png .bmp, sorted by file name, so number them with zero padding):
  as a video at `fps` (default 30);
- a Python iterable of RGB frames, or of `(time_s, frame)` pairs (RGB because that is what numpy
  code produces; OpenCV's BGR order appears only where OpenCV itself decodes);
- a camera index (an int or a digit string), an rtsp(s):// or http(s):// URL, or a GStreamer
  pipeline (a string with `!`): *live* sources, read by a thread into a small queue.

Files, folders and iterators are never dropped from: the consumer sets the pace. Live sources run
at the device's pace, so a slow consumer must lose frames; the queue keeps the newest `queue_size`
frames (newest wins: a stale frame is worth less than a fresh one) and counts the rest as dropped.
A live source that fails reconnects with exponential backoff and ends after `ReconnectPolicy.attempts`
failed attempts in a row. `live=True|False` overrides the choice (tests force a fake camera live).

Accounting (`Source.stats`), chosen so that the runtime's summary can say
`frames_in == processed + dropped`:
- `frames_in`: frames received from the device, file or iterator and meant for delivery;
- `delivered`: frames handed to the consumer; `dropped`: received but not delivered (newest-wins
  drops, corrupt frames, frames still queued when the source closes); `corrupt`: of those dropped,
  frames that could not be read or converted;
- `skipped`: frames passed over by `stride`, *not* in `frames_in` (the user asked for them to go);
- `reconnects`: reconnection attempts.
After the source is closed (iterating to the end closes it) `frames_in == delivered + dropped`;
while it runs, the difference is the frames waiting in the queue (`stats.in_flight`).

`Frame.index` counts every frame the source produced, skipped and dropped ones included, so it is
the frame's position in the file. `Frame.time_s` is the source's timestamp: the container's time for
files when it is sane, else index / fps; seconds since the source opened (monotonic clock) for live
sources; the given time for `(time_s, frame)` pairs.

Reconnections, corrupt frames and early ends are recorded in `Source.events` as
`{"type": "source", "event": name, "detail": one line, "time_s": t}`; `new_events()` returns those
not yet returned, for the runtime to forward to its sinks.

A corrupt frame is one that fails to decode between readable frames: OpenCV returns no image, an
image file does not decode, an iterator yields something that is not a uint8 image. Failures that
run to the end of a file (a truncated file, a frame count the container overstates) end the stream
with an `ended_early` event instead, whose detail gives the frames declared and read: those frames
were never received. A file's readable data has ended at the declared frame count, or after
`max_consecutive_failures` failed reads in a row (OpenCV skips a bad packet by itself, so a run that
long is the end of the data). `gave_up` is for live sources only: no frames after every reconnection.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tpo.errors import InputError

from .readers import (  # noqa: F401  (to_rgb and Capture: part of this module's API)
    Capture,
    _file_records,
    _folder_records,
    _iter_records,
    _live_capture_records,
    _Rec,
    to_rgb,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_FPS = 30.0
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
JOIN_TIMEOUT_S = 2.0   # a reader blocked inside the driver is left behind (daemon) after this
EVENT_BACKLOG = 10_000   # unread source events kept (a consumer reads them every frame)
EVENT_HISTORY = 256      # the latest events kept for `Source.events`
DEFAULT_WATCHDOG_S = 5.0   # a live source with no frame (nor reconnect attempt) for this long is restarted


@dataclass
class Frame:
    """One decoded frame: `rgb` is uint8 [H, W, 3], C-contiguous, owned (never a view of the input).
    `received` is the monotonic clock when the source received it (a live source's reader thread: the capture,
    as near as this process can see it), the start of the glass-to-glass latency the stream reports."""

    index: int
    time_s: float
    rgb: np.ndarray
    received: float = 0.0

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


@dataclass
class SourceStats:
    """Counts of one source; see the module docstring for what each means."""

    frames_in: int = 0
    delivered: int = 0
    dropped: int = 0
    corrupt: int = 0
    skipped: int = 0
    reconnects: int = 0

    @property
    def in_flight(self) -> int:
        """Frames received and neither delivered nor dropped yet (queued); 0 once the source closed."""
        return self.frames_in - self.delivered - self.dropped

    def as_dict(self) -> dict[str, int]:
        return {"frames_in": self.frames_in, "delivered": self.delivered, "dropped": self.dropped,
                "corrupt": self.corrupt, "skipped": self.skipped, "reconnects": self.reconnects}


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff of a live source after a failure: attempt k waits min(initial_s * factor**(k-1), max_s).

    The count restarts after every frame read, so a flaky camera can reconnect forever while a dead one
    ends after `attempts` tries. `attempts=0` ends the stream at the first failure.
    """

    attempts: int = 6
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.initial_s * self.factor ** (attempt - 1), self.max_s)




# ------------------------------------------------------------------------------------------ sources
class Source:
    """An iterator of `Frame`s with accounting; close it (or use `with`) to stop a live reader thread.

    Single pass: iterating again continues where the last loop stopped. Iterating to the end, or to
    `max_frames`, closes the source.
    """

    def __init__(self, name: str, records: Iterator[_Rec], *, live: bool, fps: float | None,
                 max_frames: int | None):
        self.name = name
        self.live = live
        self.fps = fps
        self.max_frames = max_frames
        self.frame_count: int | None = None   # frames a file or folder declares (None: live or unknown)
        self._records = records
        self._stats = SourceStats()
        self._unread: deque[dict] = deque(maxlen=EVENT_BACKLOG)    # not yet taken by new_events()
        self._history: deque[dict] = deque(maxlen=EVENT_HISTORY)   # the latest events, read or not
        self._events_lost = 0
        self._lock = threading.Condition()
        self._closed = False

    # ---- accounting, always under self._lock
    def _event(self, event: str, detail: str, time_s: float) -> None:
        """Record an event. Memory stays bounded on a source that runs for weeks: at most EVENT_BACKLOG unread
        events are kept (older unread ones are counted as lost and said so in the next event read)."""
        if len(self._unread) == self._unread.maxlen:
            self._events_lost += 1
        item = {"type": "source", "event": event, "detail": detail, "time_s": float(time_s)}
        self._unread.append(item)
        self._history.append(item)

    def _handle(self, rec: _Rec) -> Frame | None:
        """Counts one record; the Frame to deliver, if it is one. Runs under the lock."""
        s = self._stats
        if rec.kind == "skip":
            s.skipped += 1
        elif rec.kind == "event":
            self._event(rec.event, rec.detail, rec.time_s)
        elif rec.kind == "reconnect":
            s.reconnects += 1
            self._event(rec.event, rec.detail, rec.time_s)
        elif rec.kind == "corrupt":
            s.frames_in += 1
            s.corrupt += 1
            s.dropped += 1
            self._event("corrupt_frame", rec.detail, rec.time_s)
        else:
            s.frames_in += 1
            try:
                rgb = to_rgb(rec.image, f"frame {rec.index} of {self.name}", rgb=rec.rgb)
            except InputError as e:
                s.corrupt += 1
                s.dropped += 1
                self._event("corrupt_frame", str(e), rec.time_s)
                return None
            return Frame(rec.index, float(rec.time_s), rgb, time.monotonic())
        return None

    # ---- public
    @property
    def duration_s(self) -> float | None:
        """The length a file or folder declares (frame count / fps); None for live sources or when unknown."""
        if self.live or not self.frame_count or not self.fps:
            return None
        return self.frame_count / self.fps

    @property
    def stats(self) -> SourceStats:
        """A consistent copy of the counts (the live reader thread updates the real ones)."""
        with self._lock:
            return replace(self._stats)

    @property
    def events(self) -> list[dict]:
        """The latest EVENT_HISTORY events (the runtime forwards every one to its sinks as they happen)."""
        with self._lock:
            return list(self._history)

    def new_events(self) -> list[dict]:
        """Events recorded since the last call (for forwarding to sinks as they happen)."""
        with self._lock:
            out = list(self._unread)
            self._unread.clear()
            if self._events_lost:
                out.insert(0, {"type": "source", "event": "events_lost", "time_s": out[0]["time_s"] if out else 0.0,
                               "detail": f"{self.name}: {self._events_lost} events were not read in time and dropped"})
                self._events_lost = 0
            return out

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self.max_frames is not None and self._stats.delivered >= self.max_frames:
            self.close()
            raise StopIteration
        frame = self._next_frame()
        if frame is None:
            self.close()
            raise StopIteration
        return frame

    def _next_frame(self) -> Frame | None:
        """The next frame (counted as delivered), or None at the end."""
        for rec in self._records:
            with self._lock:
                frame = self._handle(rec)
                if frame is not None:
                    self._stats.delivered += 1
                    return frame
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._records.close()     # type: ignore[attr-defined]  (a generator: its finally releases)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "live" if self.live else "offline"
        return f"<Source {self.name} {kind} fps={self.fps} {self.stats.as_dict()}>"


class _PeekedSource(Source):
    """A file or folder source that reads its first frame on opening, so an unreadable input fails in
    `open_source` with one line rather than as an empty stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._peeked = super()._next_frame()
        if self._peeked is None:
            events = "; ".join(e["detail"] for e in self._events)
            self.close()
            raise InputError(f"{self.name}: no frame could be read" + (f" ({events})" if events else ""))
        self._stats.delivered -= 1     # counted when handed out

    def _next_frame(self) -> Frame | None:
        if self._peeked is not None:
            frame, self._peeked = self._peeked, None
            with self._lock:
                self._stats.delivered += 1
            return frame
        return super()._next_frame()


class LiveSource(Source):
    """A source read by a thread into a queue of `queue_size` frames; when it is full the oldest queued
    frame is dropped (and counted) so the consumer always gets the newest.

    A read watchdog: when the reader has produced nothing (no frame, no reconnect attempt) for `watchdog_s`
    seconds while the consumer waits -- a stream that stalls with its socket open, a driver stuck in a read --
    the source records a `stalled` event and starts a new reader from `restart()` (which reconnects); the stuck
    reader is left to finish on its own (a daemon thread) and anything it still produces is ignored."""

    def __init__(self, name: str, records: Iterator[_Rec], *, stop: threading.Event, fps: float | None,
                 max_frames: int | None, queue_size: int, restart: Callable[[], Iterator[_Rec]] | None = None,
                 watchdog_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(name, records, live=True, fps=fps, max_frames=max_frames)
        self._stop = stop
        self._queue: deque[Frame] = deque()
        self._queue_size = queue_size
        self._restart, self._watchdog_s, self._clock = restart, watchdog_s, clock
        self._finished = False
        self._error: BaseException | None = None
        self._generation = 0
        self._last_record = time.monotonic()
        self._start_reader(records)

    def _start_reader(self, records: Iterator[_Rec]) -> None:
        """A reader thread for `records`; an older reader (same source) stops mattering. Under the lock or
        before the first one runs."""
        self._generation += 1
        self._records = records
        self._finished = False
        self._last_record = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(self._generation, records), daemon=True,
                                        name=f"tpo-source {self.name} #{self._generation}")
        self._thread.start()

    def _run(self, generation: int, records: Iterator[_Rec]) -> None:
        try:
            for rec in records:
                if rec.kind == "frame":    # convert outside the lock: the consumer is not held up
                    try:
                        rec = replace(rec, image=to_rgb(rec.image, f"frame {rec.index} of {self.name}",
                                                        rgb=rec.rgb), rgb=True)
                    except InputError as e:
                        rec = replace(rec, kind="corrupt", image=None, detail=str(e))
                with self._lock:
                    if self._stop.is_set() or generation != self._generation:
                        break
                    self._last_record = time.monotonic()
                    frame = self._handle(rec)
                    if frame is not None:
                        if len(self._queue) >= self._queue_size:
                            self._queue.popleft()
                            self._stats.dropped += 1
                        self._queue.append(frame)
                        self._lock.notify_all()
        except BaseException as e:    # re-raised in the consumer's thread
            with self._lock:
                if generation == self._generation:
                    self._error = e
        finally:
            records.close()     # type: ignore[attr-defined]
            with self._lock:
                if generation == self._generation:
                    self._finished = True
                self._lock.notify_all()

    def _stalled(self) -> None:
        """The reader has been silent for the watchdog's time: say so and start a new one. Under the lock."""
        self._event("stalled", f"{self.name}: nothing read for {self._watchdog_s:g} s; reconnecting",
                    self._clock())
        self._stats.reconnects += 1
        self._start_reader(self._restart())

    def _next_frame(self) -> Frame | None:
        with self._lock:
            while not self._queue and not self._finished:
                if self._watchdog_s is None or self._restart is None:
                    self._lock.wait()
                    continue
                silent = time.monotonic() - self._last_record
                if silent < self._watchdog_s:
                    self._lock.wait(self._watchdog_s - silent)
                elif not self._stop.is_set():
                    self._stalled()
            if self._queue:
                self._stats.delivered += 1
                return self._queue.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            self.close()
            raise error
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stop.set()
            self._lock.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT_S)
        with self._lock:     # received, never delivered: dropped, so frames_in == delivered + dropped
            self._stats.dropped += len(self._queue)
            self._queue.clear()


# ------------------------------------------------------------------------------------------ opening
def _has_gstreamer() -> bool:
    match = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(match) and match.group(1).upper() not in ("NO", "OFF")


def _capture_fps(cap: Capture) -> float | None:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None


def _describe(spec: Any) -> tuple[str, str]:
    """(kind, name) of a spec: kind is file | folder | camera | url | gstreamer | iterable."""
    if isinstance(spec, bool):
        raise InputError(f"source {spec!r}: not a file, folder, camera index, URL or iterable")
    if isinstance(spec, int):
        return "camera", f"camera {spec}"
    if isinstance(spec, Path):
        return ("folder" if spec.is_dir() else "file"), str(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise InputError("source '': empty")
        if text.lower().startswith(URL_SCHEMES):
            return "url", text
        if Path(text).exists():       # an existing path wins over the patterns below
            return ("folder" if Path(text).is_dir() else "file"), text
        if "!" in text:
            return "gstreamer", text
        if text.isdigit():
            return "camera", f"camera {text}"
        return "file", text
    if isinstance(spec, bytes):
        raise InputError("source given as bytes: pass a path or a URL as str")
    if isinstance(spec, Iterable) or hasattr(spec, "__next__"):
        return "iterable", f"<{type(spec).__name__}>"
    raise InputError(f"source of type {type(spec).__name__}: not a file, folder, camera index, URL or iterable")


def _default_factory(kind: str, spec: Any, timeout_s: float | None = None) -> Callable[[], Capture]:
    if kind == "camera":
        return lambda: cv2.VideoCapture(int(spec))
    if kind == "gstreamer":
        return lambda: cv2.VideoCapture(str(spec), cv2.CAP_GSTREAMER)
    if kind == "url" and timeout_s:
        # FFmpeg's own open and read timeouts, so a read blocked on a stalled socket returns (the source's
        # watchdog has already started a new reader by then; this lets the old one end and release its socket)
        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return lambda: cv2.VideoCapture(str(spec), cv2.CAP_FFMPEG, params)
    return lambda: cv2.VideoCapture(str(spec))


def _open_capture(kind: str, name: str, spec: Any, factory: Callable[[], Capture], custom: bool) -> Capture:
    """An opened capture for a file, camera, URL or pipeline, or one InputError saying why not."""
    if kind == "file" and not Path(spec).is_file():
        raise InputError(f"{name}: no such file or folder")
    if kind == "gstreamer" and not custom and not _has_gstreamer():
        raise InputError(f"GStreamer pipeline {name!r}: this OpenCV has no GStreamer support "
                         "(cv2.getBuildInformation() says GStreamer: NO); use an OpenCV built with it")
    try:
        cap = factory()
        opened = cap.isOpened()
    except Exception as e:
        raise InputError(f"{name}: cannot open ({type(e).__name__}: {e})") from e
    if not opened:
        cap.release()
        why = {"camera": "no such camera, or it is busy", "url": "cannot connect or unsupported stream",
               "gstreamer": "the pipeline does not start"}.get(kind, "OpenCV cannot read it as a video")
        raise InputError(f"{name}: cannot open ({why})")
    return cap


def open_source(spec: Any, *, stride: int = 1, max_frames: int | None = None, live: bool | None = None,
                queue_size: int = 2, reconnect: ReconnectPolicy = ReconnectPolicy(), fps: float | None = None,
                capture_factory: Callable[[], Capture] | None = None,
                max_consecutive_failures: int = 10, watchdog_s: float | None = DEFAULT_WATCHDOG_S) -> Source:
    """Opens `spec` (see the module docstring) as a `Source`; one-line InputError if it cannot be read.

    stride: deliver every stride-th frame (the others count as `skipped`). max_frames: stop after
    that many delivered frames. live: force the threaded newest-wins reader on (or off). queue_size:
    frames a live source holds for a slow consumer. reconnect: backoff of live sources. fps: frame rate
    of folders and iterators (default 30), and of a video whose container states none.
    capture_factory: builds the OpenCV-like capture instead of cv2.VideoCapture (tests, custom
    drivers); `spec` then only names the source. max_consecutive_failures: unreadable frames in a row
    after which a file's readable data counts as ended (`ended_early`). watchdog_s: a live capture that
    reads nothing for this long is restarted (a `stalled` event); None turns the watchdog off.
    """
    if not isinstance(stride, int) or stride < 1:
        raise InputError(f"stride {stride!r}: must be an integer >= 1")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 0):
        raise InputError(f"max_frames {max_frames!r}: must be an integer >= 0")
    if not isinstance(queue_size, int) or queue_size < 1:
        raise InputError(f"queue_size {queue_size!r}: must be an integer >= 1")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps {fps!r}: must be a positive number")
    if watchdog_s is not None and not (math.isfinite(watchdog_s) and watchdog_s > 0):
        raise InputError(f"watchdog_s {watchdog_s!r}: must be a positive number of seconds (or None: off)")

    if capture_factory is not None:
        kind, name = "capture", str(spec)
    else:
        kind, name = _describe(spec)
    is_live = live if live is not None else kind in ("camera", "url", "gstreamer")
    stop = threading.Event()
    start = time.monotonic()

    def since_start() -> float:
        return time.monotonic() - start

    def build(records: Iterator[_Rec], source_fps: float | None, peek: bool,
              restart: Callable[[], Iterator[_Rec]] | None = None) -> Source:
        if is_live:
            return LiveSource(name, records, stop=stop, fps=source_fps, max_frames=max_frames,
                              queue_size=queue_size, restart=restart, watchdog_s=watchdog_s, clock=since_start)
        cls = _PeekedSource if peek else Source
        return cls(name, records, live=False, fps=source_fps, max_frames=max_frames)

    if kind == "iterable":
        rate = fps or DEFAULT_FPS
        clock = (lambda i: since_start()) if is_live else (lambda i: i / rate)
        return build(_iter_records(spec, name, stride, clock), rate, peek=False)

    if kind == "folder":
        folder = Path(spec)
        paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: p.name)
        if not paths:
            raise InputError(f"folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        rate = fps or DEFAULT_FPS
        source = build(_folder_records(paths, stride, rate), rate, peek=True)
        source.frame_count = len(paths)
        return source

    factory = capture_factory or _default_factory(kind, spec, watchdog_s)
    cap = _open_capture(kind, name, spec, factory, custom=capture_factory is not None)
    source_fps = _capture_fps(cap) or fps
    if is_live:
        counter = itertools.count()
        records = _live_capture_records(cap, factory, name, stride, reconnect, since_start, stop, counter)
        return build(records, source_fps, peek=False, restart=lambda: _live_capture_records(
            None, factory, name, stride, reconnect, since_start, stop, counter))
    records = _file_records(cap, name, stride, source_fps or DEFAULT_FPS, max_consecutive_failures)
    declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    source = build(records, source_fps or DEFAULT_FPS, peek=kind in ("file", "capture"))
    source.frame_count = int(declared) if math.isfinite(declared) and declared > 0 else None
    if source_fps is None:      # never a silent default: say which rate the times are computed with
        with source._lock:
            source._event("fps_unknown", f"{name}: the container states no frame rate; times assume "
                                         f"{DEFAULT_FPS:g} fps (pass fps= to open_source)", 0.0)
    return source
