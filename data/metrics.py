"""Standard scores for the four tasks, in plain numpy, each following its benchmark's own evaluation code.

Boxes are [x1, y1, x2, y2] in pixels with continuous coordinates (area = (x2 - x1) * (y2 - y1)); the
OTB/LaSOT toolkits use inclusive pixel boxes [x, y, w, h] and compute the same IoU and centre error for
the same box (x2 = x + w). Windows are [start_s, end_s] in seconds. All scores are fractions in [0, 1]
(papers print them x100). A missing prediction (None) always scores as a miss.

    tracking  success AUC, precision @ 20 px       OTB-2013/2015 one-pass evaluation, LaSOT absent frames
    region    Acc@0.5                              RefCOCO/+/g: IoU >= 0.5 with the one ground-truth box
    temporal  R1@{0.3, 0.5, 0.7}, mIoU             Charades-STA / QVHighlights `compute_mr_r1`
              mAP over IoU 0.5:0.05:0.95           QVHighlights `standalone_eval` (`compute_mr_ap`)
    masks     J, F, J&F                            DAVIS 2017 (`davis2017-evaluation`, metrics.py)
    text      routing accuracy, exact match        (trigger chosen == expected; normalised string equality)
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import numpy as np

from tpo.errors import InputError

Box = Sequence[float]
Window = Sequence[float]

OTB_OVERLAP_THRESHOLDS = np.linspace(0.0, 1.0, 21)      # 0, 0.05, ..., 1
# OTB's success AUC of a perfect tracker: IoU 1 passes `IoU > t` at the 20 thresholds below 1, never at t = 1.
PERFECT_SUCCESS_AUC = 20 / 21                            # 0.952...
QVH_IOU_THRESHOLDS = tuple(round(float(t), 2) for t in np.linspace(0.5, 0.95, 10))
DAVIS_BOUND_TH = 0.008                                  # boundary tolerance, fraction of the image diagonal


def _same_length(name: str, a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise InputError(f"{name}: {len(a)} predictions for {len(b)} ground-truth items; give one per item")


# ---- boxes and tracking --------------------------------------------------------------------------------


def box_iou(a: np.ndarray | Box, b: np.ndarray | Box) -> np.ndarray:
    """IoU of boxes a [..., 4] and b [..., 4] (xyxy px, broadcast) -> float64 [...].

    A degenerate box (x2 <= x1 or y2 <= y1) has area 0; IoU is 0 when the union is 0.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _present(gt_boxes: Sequence[Box | None]) -> list[int]:
    """Frames whose ground-truth box exists and has positive width and height (LaSOT/pytracking `valid`)."""
    keep = []
    for t, g in enumerate(gt_boxes):
        if g is None:
            continue
        g = np.asarray(g, np.float64)
        if np.isfinite(g).all() and g[2] > g[0] and g[3] > g[1]:
            keep.append(t)
    return keep


def _track_overlaps(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box | None]) -> np.ndarray:
    _same_length("tracking", pred_boxes, gt_boxes)
    keep = _present(gt_boxes)
    if not keep:
        raise InputError("tracking: no frame has a ground-truth box, so there is nothing to score")
    ious = np.zeros(len(keep))
    for i, t in enumerate(keep):
        if pred_boxes[t] is not None:
            ious[i] = float(box_iou(pred_boxes[t], gt_boxes[t]))
    return ious


def tracking_success_curve(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box | None],
                           thresholds: np.ndarray = OTB_OVERLAP_THRESHOLDS) -> np.ndarray:
    """Success plot of one sequence: float64 [len(thresholds)], the fraction of frames with IoU > threshold.

    OTB (Wu et al., "Online Object Tracking: A Benchmark", CVPR 2013 / TPAMI 2015): strict `>`, thresholds
    0:0.05:1. Frames without a ground-truth box (None, or zero width/height: the target is absent, out
    of view or fully occluded) are excluded from numerator and denominator. Note: the LaSOT MATLAB
    toolkit drops absent frames from matching but still divides by the full sequence length (and
    pytracking copies that for LaSOT), which caps its scores at the visible fraction; we exclude them
    from both so that a perfect tracker's curve is 1 at every threshold below 1 whatever the target's
    visibility (at threshold 1 it is 0: no IoU exceeds 1). A None prediction on a present frame has IoU 0.
    No first-frame substitution: score exactly the frames you pass.
    """
    ious = _track_overlaps(pred_boxes, gt_boxes)
    return (ious[:, None] > np.asarray(thresholds)[None, :]).mean(axis=0)


def tracking_success_auc(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box | None]) -> float:
    """Success AUC of one sequence: the mean of the 21-point OTB success curve (see tracking_success_curve).

    The convention is the OTB toolkit's (and pysot's / pytracking's for OTB): the mean over thresholds
    0:0.05:1 of the fraction of frames with IoU > threshold. The last point never counts, so a perfect
    tracker scores PERFECT_SUCCESS_AUC = 20/21 = 0.952, not 1; kept so that numbers compare with published
    OTB success scores. A benchmark's AUC averages the per-sequence curves, which equals the mean of
    per-sequence AUCs.
    """
    return float(tracking_success_curve(pred_boxes, gt_boxes).mean())


def _centre(box: Box) -> np.ndarray:
    b = np.asarray(box, np.float64)
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])


def tracking_precision(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box | None],
                       threshold_px: float = 20.0) -> float:
    """OTB precision: the fraction of frames whose centre error (Euclidean, px) is <= threshold_px (20).

    Same frame handling as tracking_success_curve: absent ground truth excluded, None prediction a miss.
    """
    _same_length("tracking", pred_boxes, gt_boxes)
    keep = _present(gt_boxes)
    if not keep:
        raise InputError("tracking: no frame has a ground-truth box, so there is nothing to score")
    hits = [pred_boxes[t] is not None
            and float(np.linalg.norm(_centre(pred_boxes[t]) - _centre(gt_boxes[t]))) <= threshold_px
            for t in keep]
    return float(np.mean(hits))


def region_accuracy(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box], iou: float = 0.5) -> float:
    """RefCOCO-style Acc@iou: the fraction of queries whose predicted box has IoU >= iou (0.5) with the
    ground-truth box (as MDETR's and OFA's RefCOCO evaluators). One box per query; None is a miss."""
    _same_length("region", pred_boxes, gt_boxes)
    if len(gt_boxes) == 0:
        raise InputError("region: no queries to score")
    hits = [p is not None and float(box_iou(p, g)) >= iou for p, g in zip(pred_boxes, gt_boxes, strict=True)]
    return float(np.mean(hits))


# ---- temporal grounding --------------------------------------------------------------------------------


def temporal_iou(a: Window, b: Window) -> float:
    """IoU of two windows [start, end] in seconds; 0 when the union is empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _as_windows(gt: Window | Sequence[Window]) -> list[Window]:
    """A single [s, e] or a list of them -> a list of windows."""
    if len(gt) and not isinstance(gt[0], Sequence | np.ndarray):
        return [gt]
    return list(gt)


def _top1_ious(pred_windows: Sequence[Window | None], gt_windows: Sequence[Window | Sequence[Window]]) -> np.ndarray:
    _same_length("temporal", pred_windows, gt_windows)
    if len(gt_windows) == 0:
        raise InputError("temporal: no queries to score")
    ious = np.zeros(len(gt_windows))
    for i, (p, g) in enumerate(zip(pred_windows, gt_windows, strict=True)):
        spans = _as_windows(g)
        if len(spans) == 0:
            raise InputError(f"temporal: query {i} has no ground-truth window")
        if p is not None:
            ious[i] = max(temporal_iou(p[:2], s) for s in spans)
    return ious


def temporal_recall_at_iou(pred_windows_top1: Sequence[Window | None],
                           gt_windows: Sequence[Window | Sequence[Window]],
                           thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> dict[float, float]:
    """Charades-STA R1@IoU=m: the fraction of queries whose top-1 window has IoU >= m with the ground truth.

    One prediction [s, e] (extra items such as a score are ignored) per query; ground truth is a window
    or a list of windows. With several ground-truth windows the one with the highest IoU to the
    prediction counts, as QVHighlights' `compute_mr_r1` picks it. None is IoU 0.
    """
    ious = _top1_ious(pred_windows_top1, gt_windows)
    return {float(m): float(np.mean(ious >= m)) for m in thresholds}


def temporal_miou(pred_windows_top1: Sequence[Window | None],
                  gt_windows: Sequence[Window | Sequence[Window]]) -> float:
    """Charades-STA mIoU: the mean top-1 IoU over queries (same pairing as temporal_recall_at_iou)."""
    return float(_top1_ious(pred_windows_top1, gt_windows).mean())


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 all-point interpolated AP (ActivityNet / QVHighlights `interpolated_precision_recall`)."""
    p = np.concatenate([[0.0], precision, [0.0]])
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]          # precision envelope, non-increasing
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def _query_ap(preds: Sequence[Sequence[float]], gts: Sequence[Window], thresholds: Sequence[float]) -> np.ndarray:
    """AP of one query's scored windows at each IoU threshold (greedy matching by score, each ground
    truth used once, highest-IoU free ground truth first; as `compute_average_precision_detection`)."""
    ap = np.zeros(len(thresholds))
    if len(preds) == 0 or len(gts) == 0:
        return ap
    order = np.argsort(-np.array([p[2] for p in preds], np.float64), kind="stable")
    tp = np.zeros((len(thresholds), len(preds)))
    taken = np.zeros((len(thresholds), len(gts)), bool)
    for rank, i in enumerate(order):
        ious = np.array([temporal_iou(preds[i][:2], g) for g in gts])
        by_iou = np.argsort(-ious, kind="stable")
        for ti, thr in enumerate(thresholds):
            for j in by_iou:
                if ious[j] < thr:
                    break
                if not taken[ti, j]:
                    taken[ti, j] = True
                    tp[ti, rank] = 1
                    break
    tp_cum = np.cumsum(tp, axis=1)
    precision = tp_cum / np.arange(1, len(preds) + 1)
    recall = tp_cum / len(gts)
    return np.array([_interpolated_ap(precision[ti], recall[ti]) for ti in range(len(thresholds))])


def qvhighlights_map(pred_windows: Sequence[Sequence[Sequence[float]]], gt_windows: Sequence[Sequence[Window]],
                     thresholds: Sequence[float] = QVH_IOU_THRESHOLDS, max_pred_windows: int = 10) -> dict[str, float]:
    """QVHighlights moment-retrieval mAP (Lei et al., NeurIPS 2021; `standalone_eval/eval.py`).

    pred_windows: per query, scored windows [s, e, score] (the first `max_pred_windows` = 10 are used,
    in the order given, as the submission's `pred_relevant_windows[:10]`); gt_windows: per query, all its
    relevant windows. Per query and IoU threshold, predictions are sorted by score (ties keep their
    order), each matched greedily to the unmatched ground truth of highest IoU when that IoU >= threshold,
    and AP is the all-point interpolated area (VOC 2011). mAP at a threshold is the mean over queries;
    "average" is the mean over thresholds 0.5:0.05:0.95. A query with no predictions has AP 0.
    Returns {"0.5": ..., ..., "0.95": ..., "average": ...} as fractions (the official script prints x100).
    """
    _same_length("qvhighlights", pred_windows, gt_windows)
    if len(gt_windows) == 0:
        raise InputError("qvhighlights: no queries to score")
    per_query = []
    for i, (p, g) in enumerate(zip(pred_windows, gt_windows, strict=True)):
        p = list(p)[:max_pred_windows]
        if any(len(w) < 3 for w in p):
            raise InputError(f"qvhighlights: query {i} has a window without a score; give [start, end, score]")
        if len(g) == 0:
            raise InputError(f"qvhighlights: query {i} has no ground-truth window")
        per_query.append(_query_ap(p, list(g), thresholds))
    per_threshold = np.mean(per_query, axis=0)
    out = {f"{t:g}": float(v) for t, v in zip(thresholds, per_threshold, strict=True)}
    out["average"] = float(per_threshold.mean())
    return out


# ---- masks ---------------------------------------------------------------------------------------------


def _boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (DAVIS `_seg2bmap` at full size): a pixel is on the boundary
    when it differs from its east, south or south-east neighbour (pixels past the edge count as 0,
    except that the last row/column compare only along the edge)."""
    seg = mask.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """uint8 [2r+1, 2r+1]: pixels with x^2 + y^2 <= r^2 (skimage.morphology.disk)."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """DAVIS boundary F-measure of one frame (Perazzi et al., CVPR 2016; davis2017-evaluation `f_measure`).

    Boundaries match within a tolerance of ceil(bound_th * image diagonal) px (bound_th < 1; a value
    >= 1 is taken as pixels): 4 px at 320x240, 7 px at 854x480. Dilation by a disk of that radius
    (OpenCV). Both empty: F = 1; only one empty: F = 0.
    """
    import cv2

    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape)))
    pb, gb = _boundary_map(pred), _boundary_map(gt)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    k = _disk(radius)
    p_dil = cv2.dilate(pb.astype(np.uint8), k).astype(bool)
    g_dil = cv2.dilate(gb.astype(np.uint8), k).astype(bool)
    precision = (pb & g_dil).sum() / n_p
    recall = (gb & p_dil).sum() / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """DAVIS region similarity J of one frame: mask IoU; 1 when both masks are empty."""
    p, g = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def jf_score(pred_masks: Sequence[np.ndarray | None], gt_masks: Sequence[np.ndarray] | np.ndarray,
             bound_th: float = DAVIS_BOUND_TH) -> dict[str, float]:
    """DAVIS J, F and J&F of one object over the frames given: bool [H, W] masks per frame.

    J and F are averaged over frames, J&F = (J + F) / 2. A None prediction is an empty mask. Frames
    where the object is absent count (an empty prediction there scores J = F = 1), as in DAVIS 2017.
    DAVIS' semi-supervised protocol drops the first (given) and last frame and then averages over
    objects; pass the frames you want scored and average per-object results yourself.
    """
    _same_length("masks", pred_masks, gt_masks)
    if len(gt_masks) == 0:
        raise InputError("masks: no frames to score")
    js, fs = [], []
    for t, (p, g) in enumerate(zip(pred_masks, gt_masks, strict=True)):
        g = np.asarray(g, bool)
        p = np.zeros_like(g) if p is None else np.asarray(p, bool)
        if p.shape != g.shape:
            raise InputError(f"masks: frame {t}: prediction {p.shape} vs ground truth {g.shape}; resize first")
        js.append(region_j(p, g))
        fs.append(boundary_f(p, g, bound_th))
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2}


# ---- text ----------------------------------------------------------------------------------------------


def routing_accuracy(pred_routes: Sequence[str], gt_routes: Sequence[str]) -> float:
    """The fraction of queries whose emitted trigger ("region" | "temporal" | "track" | "none") is right."""
    _same_length("routing", pred_routes, gt_routes)
    if len(gt_routes) == 0:
        raise InputError("routing: no queries to score")
    return float(np.mean([p == g for p, g in zip(pred_routes, gt_routes, strict=True)]))


_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_WORD_TO_DIGITS = {w: str(i) for i, w in enumerate(_NUMBERS)}
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))


def normalise_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, drop the articles a/an/the (SQuAD), number words zero..twenty to
    digits, collapse whitespace: "The answer is Three." -> "answer is 3"."""
    words = text.lower().translate(_PUNCT).split()
    words = [_WORD_TO_DIGITS.get(w, w) for w in words if w not in ("a", "an", "the")]
    return " ".join(words)


def exact_match(pred_answers: Sequence[str | None], gt_answers: Sequence[str]) -> float:
    """The fraction of answers equal to the reference after normalise_answer; None is wrong."""
    _same_length("exact_match", pred_answers, gt_answers)
    if len(gt_answers) == 0:
        raise InputError("exact_match: no answers to score")
    return float(np.mean([p is not None and normalise_answer(p) == normalise_answer(g)
                          for p, g in zip(pred_answers, gt_answers, strict=True)]))


# ---- report --------------------------------------------------------------------------------------------


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, name + "/")
        else:
            rows.append((name, v))
    return rows


def format_table(metrics: dict) -> str:
    """A two-column text table; nested dicts become "outer/inner" rows, floats print with 4 decimals."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in _flatten(metrics)]
    if not rows:
        return "(no metrics)"
    wk = max(len("metric"), *(len(k) for k, _ in rows))
    wv = max(len("value"), *(len(v) for _, v in rows))
    lines = [f"{'metric':<{wk}}  {'value':>{wv}}", f"{'-' * wk}  {'-' * wv}"]
    lines += [f"{k:<{wk}}  {v:>{wv}}" for k, v in rows]
    return "\n".join(lines)


__all__ = [
    "PERFECT_SUCCESS_AUC", "box_iou", "boundary_f", "exact_match", "format_table", "jf_score", "normalise_answer", "qvhighlights_map",
    "region_accuracy", "region_j", "routing_accuracy", "temporal_iou", "temporal_miou", "temporal_recall_at_iou",
    "tracking_precision", "tracking_success_auc", "tracking_success_curve",
]
