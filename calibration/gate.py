"""The gate of a quantised artifact: the same held-out questions through the fp32 graphs and the quantised ones,
compared in task terms, judged on the mean AND on the worst question.

Held-out clips come from the project's generator (seed 1000, never the calibration clips). Per question:
routing (the same first trigger), answer tokens (the same greedy ids), and, where both fired the same head,
box IoU (region), top-1 window IoU (temporal) and mask J (per-frame IoU, track) against the fp32 answer. A
precision passes when every mean is within its budget and no single question falls under the worst-case
floor: a graph that breaks one clip fails the gate even when the mean hides it.
"""

from __future__ import annotations

import numpy as np

from tpo.contract import Precision
from tpo.runtime.postprocess import box_iou, mask_iou
from tpo.signals import stop_point

from .sources import CalibrationClip

HELD_OUT_SEED = 1000
# mean: over the questions; worst: the floor for any one question (same trigger fired on both sides).
BUDGETS = {
    Precision.INT8: {"routing": 0.98, "tokens": 0.85, "box_iou": 0.90, "window_iou": 0.85, "mask_j": 0.90,
                     "worst": 0.50},
    Precision.INT4: {"routing": 0.95, "tokens": 0.75, "box_iou": 0.85, "window_iou": 0.80, "mask_j": 0.85,
                     "worst": 0.40},
}
METRICS = ("box_iou", "window_iou", "mask_j")


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
        top_a = a["windows_raw"][0] if a["windows_raw"] else None
        top_b = b["windows_raw"][0] if b["windows_raw"] else None
        row["window_iou"] = min(row.get("window_iou", 1.0), window_iou(top_a, top_b))
    for objs_a, objs_b in zip(ref.results.get("track", []), got.results.get("track", []), strict=False):
        for a, b in zip(objs_a if isinstance(objs_a, list) else [objs_a],
                        objs_b if isinstance(objs_b, list) else [objs_b], strict=False):
            js = [mask_iou(m1, m2) for m1, m2 in zip(a["masks"], b["masks"], strict=True)]
            row["mask_j"] = min(row.get("mask_j", 1.0), float(np.mean(js)) if js else 1.0)
    return row


def agreement(reference, quantized, clips: list[CalibrationClip], precision: Precision) -> dict:
    """Ask every question of `clips` on both sessions; the rows, the means, the worst, the verdict."""
    budget = BUDGETS[precision]
    rows = []
    for clip in clips:
        stop_point()
        for task, question, image_frame in clip.questions:
            frames = clip.frames if image_frame is None else clip.frames[min(image_frame, len(clip.frames) - 1)][None]
            ref = reference.ask(question, frames, clip.fps)
            got = quantized.ask(question, frames, clip.fps)
            rows.append({"clip": clip.name, "task": task, "question": question, **compare_answers(ref, got)})
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
    return {"clips": len(clips), "questions": len(rows), "means": means, "worst": worst, "budget": budget,
            "failures": failures, "passed": not failures, "rows": rows}
