"""Head outputs -> results in source units: masks and boxes in frame pixels, windows in seconds.

Same definitions as the PyTorch side (`tpo.model.mask_tracker`, `tpo.model.temporal_head.decode_windows`):
bilinear upsampling with half-pixel centres (torch's align_corners=False; OpenCV's INTER_LINEAR), mask = logit
> 0, boxes as pixel edges (x1 = first on column, x2 = one past the last), windows from (centre, width) with
the foreground softmax as score, stable-sorted, rounded to 4 decimals and to multiples of the clip length.
"""

from __future__ import annotations

import cv2
import numpy as np


def upsample_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """[h, w] float -> [height, width] float32 (bilinear, half-pixel centres)."""
    return cv2.resize(np.ascontiguousarray(logits, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def mask_and_box(logits: np.ndarray, height: int, width: int) -> tuple[np.ndarray, list[float] | None]:
    """Low-res logits [h, w] -> (bool mask [height, width], [x1, y1, x2, y2] pixel edges or None if empty)."""
    mask = upsample_logits(logits, height, width) > 0
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return mask, None
    rows = np.flatnonzero(mask.any(axis=1))
    return mask, [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def decode_windows(logits: np.ndarray, spans: np.ndarray, duration_s: float, clip_len_s: float,
                   snap: bool = True) -> list[list[float]]:
    """logits [Q, 2], spans [Q, 2] (centre, width as fractions) -> [[start_s, end_s, score], ...] best first;
    `snap=False` leaves the times at the head's resolution (4 decimals) instead of the clip grid."""
    z = logits.astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    scores = (e / e.sum(axis=1, keepdims=True))[:, 0]
    cw = spans.astype(np.float32)
    windows = np.clip(np.stack([cw[:, 0] - 0.5 * cw[:, 1], cw[:, 0] + 0.5 * cw[:, 1]], axis=1) * np.float32(duration_s),
                      0, duration_s)
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        start, end = (float(f"{v:.4f}") for v in windows[i])
        if snap:
            start, end = (float(np.round(v / clip_len_s) * clip_len_s) for v in (start, end))
        out.append([start, end, float(f"{float(scores[i]):.4f}")])
    return out


def unique_windows(windows: list[list[float]]) -> list[list[float]]:
    """Windows as a user reads them: the first (best-scored) of each [start, end] kept, repeats dropped, and
    zero-length windows dropped unless nothing else is left. Snapping to the clip grid makes CG-DETR's queries
    land on the same window often; the release reports every query, we report each moment once."""
    seen: set[tuple[float, float]] = set()
    out = []
    for w in windows:
        key = (w[0], w[1])
        if key not in seen:
            seen.add(key)
            out.append(w)
    spans = [w for w in out if w[1] > w[0]]
    return spans or out[:1]


def decode_saliency(saliency: np.ndarray, valid: np.ndarray) -> list[float]:
    """Saliency of the valid clips, in fp16 precision (as the release reports it)."""
    return [float(v) for v in saliency[valid].astype(np.float16)]


def box_iou(a: list[float] | None, b: list[float] | None) -> float:
    """IoU of two [x1, y1, x2, y2] boxes; two missing boxes agree (1.0), one missing disagrees (0.0)."""
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def near_tied(windows: list[list[float]], tie: float) -> list[list[float]]:
    """The windows ([[start, end, score], ...] best first) scored within `tie` of the best: the answers a model
    cannot tell apart, so any of them is a right top-1 for a comparison (both gates judge top-1 this way)."""
    return [w for w in windows if windows[0][2] - w[2] <= tie] if windows else []


def window_set_error(a: list[list[float]], b: list[list[float]], score_tol: float = 1e-3) -> float:
    """Seconds by which window lists a and b ([[start, end, score], ...]) disagree: for each window of a, the
    nearest window of b with a score within `score_tol`; the worst of those (inf if one has no partner).
    Order is not compared: queries whose scores tie to 1e-4 (common in CG-DETR) sort either way."""
    worst = 0.0
    for wa in a:
        errs = [max(abs(wa[0] - wb[0]), abs(wa[1] - wb[1])) for wb in b if abs(wa[2] - wb[2]) <= score_tol]
        worst = max(worst, min(errs, default=float("inf")))
    return worst
