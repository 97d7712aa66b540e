"""Drawing a `FrameResult`: the frame with its objects, an answer band above it and a timeline below it.

    layout = Layout.for_frame(h, w)               # fixed per video: band and strip heights from the frame size
    canvas = compose(layout, rgb, objects, status="tracking the red circle", windows=[[2.0, 5.5, 0.8]],
                     time_s=3.2, span_s=(0.0, 10.0))

The bands are added outside the picture, never over it: the picture's rows are the frame's own except where
an object's mask or box is drawn. The timeline spans `span_s` (the file's duration; a live source scrolls)
with the windows found so far (brighter = higher score) and a white cursor at `time_s`. cv2.putText draws
ASCII only; anything else becomes '?'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .results import TrackedObject

COLOURS = {"track": (40, 220, 90), "region": (255, 170, 0), "mask": (30, 144, 255), "window": (255, 200, 0),
           "cursor": (255, 255, 255), "strip": (40, 40, 40), "band": (16, 16, 16), "text": (255, 255, 255),
           "text_bg": (0, 0, 0)}
MASK_ALPHA = 0.45
FONT = cv2.FONT_HERSHEY_SIMPLEX


def ascii_text(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))


def font_scale(h: int, w: int) -> float:
    return max(0.3, min(1.0, min(h, w) / 480))


@dataclass(frozen=True)
class Layout:
    """Sizes of one annotated video: the picture (h, w) with a band of `band_h` rows above and a strip of
    `strip_h` rows below, padded to even sizes (mp4v drops an odd last row or column)."""

    h: int
    w: int
    band_h: int
    strip_h: int
    scale: float

    @classmethod
    def for_frame(cls, h: int, w: int) -> Layout:
        scale = font_scale(h, w)
        (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
        band_h = 2 * (th + base + 2) + 4                 # two lines of answer text
        strip_h = max(6, min(24, h // 12))
        if (band_h + h + strip_h) % 2:
            strip_h += 1
        return cls(h, w, band_h, strip_h, scale)

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.band_h + self.h + self.strip_h, self.w + self.w % 2


def overlay_mask(img: np.ndarray, mask: np.ndarray) -> None:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2 or not mask.any():
        return
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    colour = np.array(COLOURS["mask"], np.float32)
    img[mask] = (img[mask] * (1 - MASK_ALPHA) + colour * MASK_ALPHA + 0.5).astype(np.uint8)


def put_label(img: np.ndarray, text: str, x: int, y: int, colour: tuple, scale: float) -> None:
    """Text on a filled box whose top-left is (x, y), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    h, w = img.shape[:2]
    x = min(max(x, 0), max(w - tw - 2, 0))
    y = min(max(y, 0), max(h - th - base - 2, 0))
    cv2.rectangle(img, (x, y), (x + tw + 2, y + th + base + 2), colour, thickness=-1)
    cv2.putText(img, text, (x + 1, y + th + 1), FONT, scale, COLOURS["text_bg"], 1, cv2.LINE_AA)


def draw_box(img: np.ndarray, obj: TrackedObject, scale: float) -> None:
    if obj.box is None or not all(math.isfinite(v) for v in obj.box):
        return
    x1, y1, x2, y2 = (float(v) for v in obj.box)
    colour = COLOURS.get(obj.kind, COLOURS["track"])
    p1 = (round(x1), round(y1))
    # pixel edges -> the last covered pixel, so a box hugging the frame stays visible
    p2 = (max(p1[0], round(x2) - 1), max(p1[1], round(y2) - 1))
    cv2.rectangle(img, p1, p2, colour, thickness=max(1, round(scale * 2)))
    label = ascii_text(f"{obj.label} {obj.score:.2f}")
    _, th = cv2.getTextSize(label, FONT, scale, 1)[0]
    put_label(img, label, p1[0], p1[1] - th - 6, colour, scale)


def draw_objects(img: np.ndarray, objects: Iterable[TrackedObject], scale: float) -> None:
    """Masks first, then boxes and labels, on `img` in place (the frame's own pixels)."""
    objects = list(objects)
    for obj in objects:
        if obj.mask is not None and obj.present:
            overlay_mask(img, obj.mask)
    for obj in objects:
        if obj.present:
            draw_box(img, obj, scale)


def draw_band(band: np.ndarray, text: str, scale: float) -> None:
    """Up to two lines of `text` on the band (cut with '...' when longer)."""
    band[:] = COLOURS["band"]
    w = band.shape[1]
    lines, line = [], ""
    for word in ascii_text(text).split():
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, FONT, scale, 1)[0][0] <= w - 6 or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], lines[1] + " ..."]
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
    for i, text_line in enumerate(lines):
        cv2.putText(band, text_line, (3, 2 + th + i * (th + base + 2)), FONT, scale, COLOURS["text"], 1,
                    cv2.LINE_AA)


def draw_timeline(strip: np.ndarray, windows: Iterable[list[float]], time_s: float,
                  span_s: tuple[float, float]) -> None:
    """Windows over [span_s[0], span_s[1]] (brighter = higher score, scores in 0..1) and the cursor at time_s."""
    w = strip.shape[1]
    start, end = span_s
    length = max(end - start, 1e-6)
    strip[:] = COLOURS["strip"]

    def x_of(t: float) -> int:
        return int(np.clip((t - start) / length * w, 0, w - 1))

    for a, b, score in windows:
        if b < start or a > end:
            continue
        x1 = x_of(a)
        x2 = max(x_of(b), x1 + 1)
        weight = float(np.clip(score, 0.0, 1.0)) if math.isfinite(score) else 1.0
        strip[:, x1:x2] = (np.array(COLOURS["window"], np.float32) * (0.35 + 0.65 * weight)).astype(np.uint8)
    strip[:, x_of(time_s)] = COLOURS["cursor"]


def timeline_span(time_s: float, duration_s: float | None, live_span_s: float = 60.0) -> tuple[float, float]:
    """[0, duration] when the duration is known (files); otherwise the last `live_span_s` seconds, growing
    from [0, live_span_s] until then (live sources)."""
    if duration_s and duration_s > 0:
        return 0.0, float(duration_s)
    return max(0.0, time_s - live_span_s), max(time_s, live_span_s)


def compose(layout: Layout, rgb: np.ndarray, objects: Iterable[TrackedObject], *, status: str,
            windows: Iterable[list[float]], time_s: float, span_s: tuple[float, float]) -> np.ndarray:
    """The annotated RGB canvas [band_h + h + strip_h (+pad), w (+pad), 3]. A frame of another size than the
    layout's is annotated in its own pixels, then resized into the picture area."""
    picture = rgb.copy()
    draw_objects(picture, objects, font_scale(*rgb.shape[:2]))
    if picture.shape[:2] != (layout.h, layout.w):
        picture = cv2.resize(picture, (layout.w, layout.h), interpolation=cv2.INTER_AREA)
    out_h, out_w = layout.size_hw
    canvas = np.zeros((out_h, out_w, 3), np.uint8)
    canvas[layout.band_h: layout.band_h + layout.h, : layout.w] = picture
    draw_band(canvas[: layout.band_h], status, layout.scale)
    draw_timeline(canvas[layout.band_h + layout.h:], windows, time_s, span_s)
    return canvas
