"""Where calibration clips come from: `--calibration-data SRC`.

    synthetic:N[@SEED]   N clips of the project's generator (default seed 777, apart from training 0,
                         held-out 1000 and the parity gate 4242), each with its own questions
    clip.mp4             one video (any container OpenCV reads; a recorded stream is a video)
    a folder             every video in it, every sub-folder of images, or (images directly inside) one clip

A clip from a file has no questions of its own: it is asked one question per task (`DEFAULT_QUESTIONS`), so
every graph of the chain, heads included, sees the inputs that clip produces. Frames are read through the
runtime's own source (the same decode and colour order as a stream). Bad input is one line naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo.data.synthetic import Clip, Query
from tpo.errors import InputError

CALIBRATION_SEED = 777
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# One question per task for clips without their own (the wording the synthetic questions use).
DEFAULT_QUESTIONS = (
    ("track", "track the object in the video"),
    ("region", "where is the object? give its box"),
    ("temporal", "when does the object appear? give the timestamps"),
    ("conversation", "what is in the video?"),
)


@dataclass
class CalibrationClip:
    name: str
    frames: np.ndarray                  # uint8 [T, H, W, 3] RGB
    fps: float
    questions: list[tuple[str, str, int | None]] = field(default_factory=list)   # (task, question, image frame)
    # the generator's clips only: the clip with its ground truth and the Query behind each of `questions`
    # (set only when every frame of the clip is kept: a cut clip's spans and masks are not its ground truth)
    truth: Clip | None = None
    queries: list[Query] = field(default_factory=list)


def check_source(src: str | Path) -> None:
    """The cheap checks of `src` (the form of synthetic:N, that a path exists), before a long export runs;
    decoding and frame counts are checked by `load_clips`."""
    text = str(src)
    if text.startswith("synthetic:"):
        _synthetic_spec(text)
    elif not Path(text).exists():
        raise InputError(f"calibration data {text}: no such file or folder")


def _synthetic_spec(text: str) -> tuple[int, int]:
    count, _, seed = text.split(":", 1)[1].partition("@")
    try:
        n, s = int(count), int(seed) if seed else CALIBRATION_SEED
    except ValueError:
        raise InputError(f"calibration data {text!r}: write synthetic:N or synthetic:N@SEED") from None
    if n < 1 or s < 0:
        raise InputError(f"calibration data {text!r}: N must be >= 1 and SEED >= 0")
    return n, s


def load_clips(src: str | Path, *, min_frames: int, max_frames: int | None = 64, max_clips: int | None = None
               ) -> list[CalibrationClip]:
    """The clips of `src` (see the module docstring); each has at least `min_frames` frames (the frames the
    vision graph takes) and at most `max_frames` (the first ones; None: every frame)."""
    text = str(src)
    if text.startswith("synthetic:"):
        clips = _synthetic(text, max_frames)
    else:
        path = Path(text)
        if not path.exists():
            raise InputError(f"calibration data {path}: no such file or folder")
        clips = [_read(p, max_frames) for p in _clip_paths(path)]
    if max_clips is not None:
        clips = clips[:max_clips]
    short = [f"{c.name} ({c.frames.shape[0]})" for c in clips if c.frames.shape[0] < min_frames]
    if short:
        raise InputError(f"calibration data {text}: clip(s) with fewer than {min_frames} frames: {', '.join(short)}")
    if not clips:
        raise InputError(f"calibration data {text}: no clips")
    return clips


def _synthetic(text: str, max_frames: int | None) -> list[CalibrationClip]:
    """The generator's clips, one question per task (its first), with their ground truth when uncut."""
    from tpo.data.synthetic import make_clip

    n, s = _synthetic_spec(text)
    out = []
    for i in range(n):
        clip = make_clip(i, s)
        first: dict[str, Query] = {}
        for q in clip.queries:
            first.setdefault(q.task, q)
        queries = list(first.values())
        whole = max_frames is None or clip.num_frames <= max_frames
        out.append(CalibrationClip(clip.name, np.ascontiguousarray(clip.frames[:max_frames]), float(clip.fps),
                                   [(q.task, q.question, q.frame) for q in queries],
                                   truth=clip if whole else None, queries=queries if whole else []))
    return out


def _clip_paths(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    entries = sorted(path.iterdir())
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return [path]
    paths = [p for p in entries if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
             or (p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()))]
    if not paths:
        raise InputError(f"calibration data {path}: no videos ({', '.join(VIDEO_SUFFIXES)}) and no image folders")
    return paths


def _read(path: Path, max_frames: int | None) -> CalibrationClip:
    from tpo.runtime.sources import open_source

    try:
        with open_source(str(path), max_frames=max_frames, live=False) as source:
            frames = [f.rgb for f in source]
            fps = float(source.fps or 30.0)
    except InputError as e:
        raise InputError(f"calibration data {path}: {e}") from None
    if not frames:
        raise InputError(f"calibration data {path}: no frame decodes")
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise InputError(f"calibration data {path}: frames of different sizes {sorted(sizes)}")
    return CalibrationClip(path.stem, np.stack(frames), fps, [(t, q, 0 if t == "region" else None)
                                                                for t, q in DEFAULT_QUESTIONS])
