"""The gate of a quantised artifact: the same held-out questions through the fp32 graphs and the quantised ones,
compared in task terms, judged on the mean AND on the worst question.

Held-out clips come from the project's generator (seed 1000, never the calibration clips). Per question:
routing (the same first trigger), answer tokens (the same greedy ids), and, where both fired the same head,
box IoU (region), top-1 window IoU (temporal) and mask J (per-frame IoU, track) against the fp32 answer. A
precision passes when every mean is within its budget and no single question falls under the worst-case
floor: a graph that breaks one clip fails the gate even when the mean hides it.

Held-out clips are whole (every frame), so the generator's ground truth holds: both sides are also scored
against it with the benchmarks' metrics (truth.py: routing, track AUC and J&F, region Acc@0.5, temporal
R1@0.5, exact match), and a number that drops by more than `TRUTH_POINTS` (or one question's worth, on few
clips) fails the gate too.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tpo.contract import Precision
from tpo.runtime.postprocess import box_iou, mask_iou, near_tied
from tpo.signals import stop_point

from .sources import CalibrationClip
from .truth import TruthScores, compare_truth, headline

HELD_OUT_SEED = 1000
# mean: over the questions; worst: the floor for any one question (same trigger fired on both sides).
BUDGETS = {
    Precision.INT8: {"routing": 0.98, "tokens": 0.85, "box_iou": 0.90, "window_iou": 0.85, "mask_j": 0.90,
                     "worst": 0.50},
    Precision.INT4: {"routing": 0.95, "tokens": 0.75, "box_iou": 0.85, "window_iou": 0.80, "mask_j": 0.85,
                     "worst": 0.40},
    Precision.FP16: {"routing": 0.99, "tokens": 0.90, "box_iou": 0.95, "window_iou": 0.90, "mask_j": 0.95,
                     "worst": 0.50},
}
METRICS = ("box_iou", "window_iou", "mask_j")
# Temporal top-1: fp32's windows scored within NEAR_TIE of its best are all right answers (CG-DETR's queries tie
# often; a precision that picks another of them changed no ranking fp32 could make). Twice the fp16 score
# budget of the export's gate (export/task_parity.py), as there.
NEAR_TIE = 0.02
TRUTH_POINTS = 0.02        # the largest drop of a ground-truth number against fp32 (2 points)


def budget_for(drop: float) -> dict[str, float]:
    """`--precision auto --budget B`: every agreement mean at least 1 - B; the worst-case floor as int8's."""
    return {"routing": 1 - drop, "tokens": 1 - drop, "box_iou": 1 - drop, "window_iou": 1 - drop,
            "mask_j": 1 - drop, "worst": BUDGETS[Precision.INT8]["worst"]}


class Remembered:
    """A session whose answers are kept: the fp32 side of a search asks the same held-out questions each trial."""

    def __init__(self, session):
        self.session, self.answers = session, {}

    def ask(self, question: str, frames: np.ndarray, fps: float):
        key = (question, frames.shape, fps, hashlib.sha1(np.ascontiguousarray(frames).data).hexdigest())
        if key not in self.answers:
            self.answers[key] = self.session.ask(question, frames, fps)
        return self.answers[key]


def window_iou(a: list[float] | None, b: list[float] | None) -> float:
    """IoU of two [start, end, ...] windows in time; two missing agree."""
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 1.0


def compare_answers(ref, got) -> dict:
    """One question: the fp32 answer `ref` against the quantised `got` (runtime `Answer`s)."""
    row = {"task_fp32": ref.task, "task_quantized": got.task, "same_task": ref.task == got.task,
           "same_tokens": ref.token_ids == got.token_ids}
    if not row["same_task"]:
        return row
    # strict=False: when later tokens differ a head can fire a different number of times; the common ones pair up
    for a, b in zip(ref.results.get("region", []), got.results.get("region", []), strict=False):
        row["box_iou"] = min(row.get("box_iou", 1.0), box_iou(a["box"], b["box"]))
    for a, b in zip(ref.results.get("temporal", []), got.results.get("temporal", []), strict=False):
        tied = near_tied(a["windows_raw"], NEAR_TIE)
        top_b = b["windows_raw"][0] if b["windows_raw"] else None
        ious = [window_iou(w, top_b) for w in tied] or [window_iou(None, top_b)]
        row["window_iou"] = min(row.get("window_iou", 1.0), max(ious))
        if max(ious) > ious[0]:                 # the other side chose another of fp32's near-tied windows
            row["near_tie"] = True
    for objs_a, objs_b in zip(ref.results.get("track", []), got.results.get("track", []), strict=False):
        for a, b in zip(objs_a if isinstance(objs_a, list) else [objs_a],
                        objs_b if isinstance(objs_b, list) else [objs_b], strict=False):
            js = [mask_iou(m1, m2) for m1, m2 in zip(a["masks"], b["masks"], strict=True)]
            row["mask_j"] = min(row.get("mask_j", 1.0), float(np.mean(js)) if js else 1.0)
    return row


def agreement(reference, quantized, clips: list[CalibrationClip], budget: Precision | dict[str, float]) -> dict:
    """Ask every question of `clips` on both sessions; the rows, the means, the worst, the verdict. `budget`: a
    precision's `BUDGETS`, or a dict of the same keys (`budget_for`)."""
    budget = BUDGETS[budget] if isinstance(budget, Precision) else budget
    rows = []
    truth = {"fp32": TruthScores(), "quantized": TruthScores()}
    for clip in clips:
        stop_point()
        for i, (task, question, image_frame) in enumerate(clip.questions):
            frames = clip.frames if image_frame is None else clip.frames[min(image_frame, len(clip.frames) - 1)][None]
            ref = reference.ask(question, frames, clip.fps)
            got = quantized.ask(question, frames, clip.fps)
            row = {"clip": clip.name, "task": task, "question": question, **compare_answers(ref, got)}
            if clip.truth is not None:
                q = clip.queries[i]
                row["truth_fp32"] = truth["fp32"].add(clip.truth, q, ref, len(clip.frames))
                row["truth_quantized"] = truth["quantized"].add(clip.truth, q, got, len(clip.frames))
            rows.append(row)
    means = {"routing": float(np.mean([r["same_task"] for r in rows])),
             "tokens": float(np.mean([r["same_tokens"] for r in rows]))}
    worst = {}
    for key in METRICS:
        values = [r[key] for r in rows if key in r]
        if values:
            means[key], worst[key] = float(np.mean(values)), float(min(values))
    failures = [f"{key}: mean {value:.3f} < {budget[key]}" for key, value in means.items() if value < budget[key]]
    for r in rows:
        failures += [f"{r['clip']} {r['question']!r}: {key} {r[key]:.3f} < {budget['worst']} (worst-case floor)"
                     for key in METRICS if key in r and r[key] < budget["worst"]]
    out = {"clips": len(clips), "questions": len(rows), "means": means, "worst": worst, "budget": budget,
           "near_ties": sum(bool(r.get("near_tie")) for r in rows)}
    if truth["fp32"].routes:
        counts = truth["fp32"].counts()
        summaries = {side: t.summary() for side, t in truth.items()}
        out["ground_truth"], truth_failures = compare_truth(headline(summaries["fp32"], counts),
                                                           headline(summaries["quantized"], counts), TRUTH_POINTS)
        out["ground_truth_metrics"] = summaries
        failures += truth_failures
    return {**out, "failures": failures, "passed": not failures, "rows": rows}
