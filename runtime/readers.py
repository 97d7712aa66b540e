"""How each kind of input is read: one generator of records (a frame, a skipped or corrupt frame, an event) per
kind (`_file_records`, `_folder_records`, `_iter_records`, `_live_capture_records`), and the conversion of what
they decode to RGB (`to_rgb`). `runtime.sources` turns records into `Frame`s with accounting; see its docstring
for what each kind delivers and how failures are reported.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from tpo.errors import InputError

if TYPE_CHECKING:
    from .sources import ReconnectPolicy


class Capture(Protocol):
    """The part of cv2.VideoCapture a source uses; `capture_factory` may return any such object."""

    def isOpened(self) -> bool: ...   # noqa: N802  (OpenCV's name)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...

    def get(self, prop: int) -> float: ...


# ------------------------------------------------------------------------------------------ to_rgb
def to_rgb(image: Any, where: str, *, rgb: bool = False) -> np.ndarray:
    """A uint8 [H, W, 3] RGB copy of `image`, or InputError naming `where` (e.g. "frame 17 of a.mp4").

    Accepted: uint8 [H, W] or [H, W, 1] (grey), [H, W, 3] and [H, W, 4]. Colour order is BGR / BGRA,
    as OpenCV decodes, unless `rgb=True` (RGB / RGBA, as numpy code produces). Anything else (other
    dtypes, other ranks, empty images) is refused rather than guessed at: a float frame may be 0..1 or
    0..255, and a wrong guess gives a model garbage without any error.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{where}: image dtype {image.dtype}, expected uint8 (scale to 0..255 and cast)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(f"{where}: image shape {tuple(image.shape)}, expected [H, W], [H, W, 1|3|4]")
    if image.size == 0:
        raise InputError(f"{where}: empty image (shape {tuple(image.shape)})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    image = np.ascontiguousarray(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB if rgb else cv2.COLOR_BGRA2RGB)
    return image.copy() if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------------ records
@dataclass
class _Rec:
    """What a reader produces: a frame, a corrupt frame, a skipped frame, an attempt, or an event."""

    kind: str                 # "frame" | "corrupt" | "skip" | "reconnect" | "event"
    index: int = -1
    time_s: float = 0.0
    image: Any = None
    rgb: bool = False
    detail: str = ""
    event: str = ""


def _sane_time(msec: float, index: int, last: float) -> float | None:
    """The container's timestamp in seconds, or None when it is missing, negative or goes backwards."""
    if not math.isfinite(msec) or msec < 0 or (msec == 0 and index > 0):
        return None
    t = msec / 1000.0
    return t if t >= last else None


def _file_records(cap: Capture, name: str, stride: int, fps: float,
                  max_failures: int) -> Iterator[_Rec]:
    """Every frame of an opened capture, on demand. A failed read is kept pending: if a later read
    succeeds it was a corrupt frame (or a skipped one), otherwise the file ended early. No seeking:
    OpenCV's FFMPEG reader resumes after a bad packet by itself, and seeking lands off by a frame."""
    declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    declared = int(declared) if math.isfinite(declared) and declared > 0 else 0
    pending: list[int] = []
    pos, last_t, read = 0, 0.0, 0
    grab = getattr(cap, "grab", None)
    try:
        while True:
            wanted = pos % stride == 0
            if wanted or grab is None:
                ok, image = cap.read()
                ok = ok and image is not None
            else:
                ok, image = bool(grab()), None
            if not ok:
                pending.append(pos)
                pos += 1
                # the readable data ended: at the declared count, or after max_failures reads in a row
                # (a container that overstates its frame count, a truncated file); either way the frames
                # from pending[0] on were never received, so this is `ended_early`, not a live `gave_up`
                at_end = not declared or pos >= declared
                if at_end or len(pending) >= max_failures:
                    if declared and pending[0] < declared:
                        how = "" if at_end else f"; stopped after {len(pending)} failed reads in a row"
                        yield _Rec("event", time_s=last_t, event="ended_early",
                                   detail=f"{name}: read failed from frame {pending[0]} on, {declared} frames "
                                          f"declared, {read} read{how}")
                    elif not declared:
                        # no frame count to compare with: the end of the file cannot be told from a file cut
                        # short, so say where reading stopped rather than end silently
                        yield _Rec("event", time_s=last_t, event="ended_unverified",
                                   detail=f"{name}: the container declares no frame count; {read} frames read "
                                          f"until a read failed at frame {pending[0]} (its end, or a truncated file)")
                    return
                continue
            read += 1
            for bad in pending:
                if bad % stride == 0:
                    t = bad / fps
                    yield _Rec("corrupt", bad, t, detail=f"frame {bad} of {name}: could not be decoded")
                else:
                    yield _Rec("skip", bad)
            pending.clear()
            if not wanted:
                yield _Rec("skip", pos)
            else:
                t = _sane_time(cap.get(cv2.CAP_PROP_POS_MSEC), pos, last_t)
                last_t = t if t is not None else pos / fps
                yield _Rec("frame", pos, last_t, image=image)
            pos += 1
    finally:
        cap.release()


def _folder_records(paths: list[Path], stride: int, fps: float) -> Iterator[_Rec]:
    for i, path in enumerate(paths):
        if i % stride:
            yield _Rec("skip", i)
            continue
        t = i / fps
        try:
            data = np.fromfile(path, dtype=np.uint8)    # np + imdecode: non-ASCII paths work too
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        except OSError as e:
            image, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "not a decodable image"
        if image is None:
            yield _Rec("corrupt", i, t, detail=f"frame {i} ({path.name}): {why}")
        else:
            yield _Rec("frame", i, t, image=image)


def _iter_records(items: Iterable[Any], name: str, stride: int, clock: Callable[[int], float]
                  ) -> Iterator[_Rec]:
    """Items of a user iterable: RGB arrays or (time_s, array) pairs. Exceptions the iterable raises
    propagate (a generator that raised cannot go on); a malformed item is a corrupt frame."""
    for i, item in enumerate(items):
        if i % stride:
            yield _Rec("skip", i)
            continue
        t, image = clock(i), item
        if isinstance(item, tuple | list) and len(item) == 2:
            try:
                t = float(item[0])
            except (TypeError, ValueError):
                yield _Rec("corrupt", i, t, detail=f"frame {i} of {name}: time {item[0]!r} is not a number")
                continue
            image = item[1]
            if not math.isfinite(t):
                yield _Rec("corrupt", i, clock(i), detail=f"frame {i} of {name}: time {t} is not finite")
                continue
        yield _Rec("frame", i, t, image=image, rgb=True)


def _live_capture_records(cap: Capture | None, factory: Callable[[], Capture], name: str, stride: int,
                          policy: ReconnectPolicy, clock: Callable[[], float],
                          stop: threading.Event, counter: Iterator[int] | None = None) -> Iterator[_Rec]:
    """Frames of a live capture; on a failed read: release, back off, reopen, up to policy.attempts
    times in a row. Waits end early when `stop` is set (the consumer closed the source). `counter` numbers
    the frames (shared with a reader that replaces this one, so indices keep growing); cap None: start by
    reconnecting."""
    counter = counter if counter is not None else itertools.count()
    failures = 0
    try:
        while not stop.is_set():
            ok, image = cap.read() if cap is not None else (False, None)
            if ok and image is not None:
                if failures:
                    yield _Rec("event", time_s=clock(), event="reconnected",
                               detail=f"{name}: frames again after {failures} attempt(s)")
                failures = 0
                index = next(counter)
                yield _Rec("skip", index) if index % stride else _Rec("frame", index, clock(), image=image)
                continue
            if cap is not None:
                cap.release()
                cap = None
                if failures == 0:
                    yield _Rec("event", time_s=clock(), event="disconnected", detail=f"{name}: read failed")
            failures += 1
            if failures > policy.attempts:
                yield _Rec("event", time_s=clock(), event="gave_up",
                           detail=f"{name}: no frames after {policy.attempts} reconnect attempt(s); ending")
                return
            delay = policy.delay(failures)
            if stop.wait(delay):
                return
            try:
                cap = factory()
                why = "" if cap.isOpened() else "could not open"
            except Exception as e:    # a driver or factory error is one more failed attempt
                cap, why = None, f"{type(e).__name__}: {e}"
            if why and cap is not None:
                cap.release()
                cap = None
            yield _Rec("reconnect", time_s=clock(), event="reconnect_attempt",
                       detail=f"{name}: attempt {failures}/{policy.attempts} after {delay:g} s"
                              + (f": {why}" if why else ": opened"))
    finally:
        if cap is not None:
            cap.release()
