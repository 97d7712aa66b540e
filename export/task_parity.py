"""The parity gate, task level: the whole chain on the runtime's onnxruntime backend against the PyTorch pipeline.

For each parity clip and each of its questions (track, region, temporal, conversation), `tpo.model.generate`
and `tpo.runtime.Session.ask` answer; compared: the trigger chosen and the generated tokens (must be identical),
the region box (IoU), the temporal windows, the tracked masks and boxes (IoU per frame, the worst frame counts).
Every number is the worst over the clips and over each head's results, never the last.

Temporal windows are judged as an answer is read, best first (`window_ranking`): the top-1 window (within the
window budget, seconds), the ranking (no pair of windows the reference orders apart by more than a near-tie
may come the other way), and the scores themselves. Where the reference's best scores are within a near-tie of
each other, either of them is a right top-1: the row says `near_tie` and the report counts those. The set
comparison (`window_set_error`: every window has a partner) stays as a further check.
Budgets (issue 4's acceptance): fp32 box and mask IoU >= 0.99, windows within 0.05 s, scores within 1e-3, same
triggers; fp16 IoUs >= 0.95, windows within one clip length, scores within 1e-2. A near-tie is a score gap
of at most twice the score budget (two windows each off by the budget may swap).
"""

from __future__ import annotations

import numpy as np

from tpo.contract import Manifest, Precision
from tpo.contract import tasks as T
from tpo.runtime.backend import OnnxRuntimeBackend
from tpo.runtime.postprocess import box_iou, mask_iou, near_tied, window_set_error
from tpo.runtime.session import Session
from tpo.signals import stop_point

BUDGETS = {
    Precision.FP32: {"iou": 0.99, "window_s": 0.05, "score": 1e-3},
    Precision.FP16: {"iou": 0.95, "window_s": None, "score": 1e-2},   # None: one clip length (the grid)
}


def _window_err(a: list[float], b: list[float]) -> float:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


def window_ranking(ref: list[list[float]], got: list[list[float]], tie: float, apart_s: float) -> dict:
    """How `got` ([[start, end, score], ...] best first) ranks the windows `ref` ranks.

    top1_err_s: seconds between got's top window and ref's top, or the nearest of ref's windows scored within
    `tie` of its top (`near_tie` then: the reference itself cannot tell them apart); score_err: the largest
    score difference between a ref window and its partner (the got window nearest in time); rank_swaps: pairs
    of ref windows more than `apart_s` apart in time and more than `tie` apart in score whose partners come in
    the other order."""
    if not ref or not got:
        same = len(ref) == len(got)
        return {"top1_err_s": 0.0 if same else float("inf"), "near_tie": False, "rank_swaps": 0,
                "score_err": 0.0 if same else float("inf")}
    tied = near_tied(ref, tie)
    partner = [min(range(len(got)), key=lambda j, w=w: _window_err(w, got[j])) for w in ref]
    swaps = sum(1 for i in range(len(ref)) for j in range(i + 1, len(ref))
                if ref[i][2] - ref[j][2] > tie and _window_err(ref[i], ref[j]) > apart_s and partner[i] > partner[j])
    return {"top1_err_s": min(_window_err(got[0], w) for w in tied), "near_tie": len(tied) > 1,
            "rank_swaps": swaps, "score_err": max(abs(w[2] - got[k][2]) for w, k in zip(ref, partner, strict=True))}


def _worst(row: dict, key: str, value: float, worse) -> None:
    """Keep the worst value of `key` in `row` (a question can trigger a head more than once)."""
    row[key] = value if key not in row else worse(row[key], value)


def compare_heads(ref, got, row: dict, budget: dict) -> None:
    """The worst agreement of each head's results (the same triggers fired, so the lists pair up)."""
    for a, b in zip(ref.region, got.region, strict=True):
        _worst(row, "box_iou", box_iou(a.box_xyxy, b["box"]), min)
    for a, b in zip(ref.temporal, got.temporal, strict=True):
        # at the head's resolution (snapped to the clip grid a midpoint value may land one clip apart)
        rank = window_ranking(a.windows_raw, b["windows_raw"], 2 * budget["score"], budget["window_s"])
        _worst(row, "top1_err_s", rank["top1_err_s"], max)
        _worst(row, "rank_swaps", rank["rank_swaps"], max)
        _worst(row, "score_err", rank["score_err"], max)
        row["near_tie"] = row.get("near_tie", False) or rank["near_tie"]
        _worst(row, "window_err_s", max(window_set_error(a.windows_raw, b["windows_raw"], budget["score"]),
                                        window_set_error(b["windows_raw"], a.windows_raw, budget["score"])), max)
    for a, b in zip(ref.track, got.track, strict=True):
        _worst(row, "mask_iou", min(mask_iou(m1, m2) for m1, m2 in zip(a.masks, b["masks"], strict=True)), min)
        _worst(row, "track_box_iou", min(box_iou(x, y) for x, y in zip(a.boxes, b["boxes"], strict=True)), min)


def judge(row: dict, budget: dict, where: str) -> list[str]:
    """The failures of one question's row against the budget (one line each)."""
    out = [f"{where}: {key} {row[key]:.4f} < {budget['iou']}"
           for key in ("box_iou", "mask_iou", "track_box_iou") if key in row and row[key] < budget["iou"]]
    if row.get("top1_err_s", 0.0) > budget["window_s"]:
        out.append(f"{where}: top-1 window off by {row['top1_err_s']:.3f} s > {budget['window_s']:.3f}"
                   + (" (the reference's best windows are near-tied)" if row.get("near_tie") else ""))
    if row.get("rank_swaps", 0):
        out.append(f"{where}: {row['rank_swaps']} pair(s) of windows ranked the other way")
    if row.get("score_err", 0.0) > budget["score"]:
        out.append(f"{where}: window scores off by {row['score_err']:.4f} > {budget['score']}")
    if row.get("window_err_s", 0.0) > budget["window_s"]:
        out.append(f"{where}: windows off by {row['window_err_s']:.3f} s > {budget['window_s']:.3f}")
    return out


def task_parity(model, tokenizer, manifest: Manifest, clips) -> dict:
    """Compare the chain on `clips` (the graphs in `manifest.root`); returns {rows, worst: {...}, failures: [...]}."""
    from tpo.model.generate import generate
    from tpo.model.preprocess import Video

    session = Session(manifest, OnnxRuntimeBackend())
    budget = dict(BUDGETS[manifest.precision])
    clip_s = manifest.preprocess.temporal.clip_s
    window_budget = budget["window_s"] = budget["window_s"] if budget["window_s"] is not None else clip_s + 1e-6
    rows, failures = [], []
    for clip in clips:
        stop_point()
        for q in clip.queries:
            video = clip.video
            if T.TASKS.get(q.task) is not None and T.TASKS[q.task].media == "image":   # asked about one frame
                t = min(q.frame or 0, video.frames.shape[0] - 1)
                video = Video(video.frames[t:t + 1], video.fps)
            ref = generate(model, tokenizer, video, q.question)
            got = session.ask(q.question, video.frames, video.fps)
            row = {"clip": clip.name, "question": q.question, "task_torch": ref.task, "task_runtime": got.task,
                   "same_tokens": ref.token_ids == got.token_ids}
            where = f"{clip.name} {q.question!r}"
            if ref.task != got.task:
                failures.append(f"{where}: trigger {got.task} != PyTorch {ref.task}")
            elif not row["same_tokens"]:
                failures.append(f"{where}: answer tokens differ ({got.raw_text!r} vs {ref.raw_text!r})")
            if row["same_tokens"]:
                compare_heads(ref, got, row, budget)
            failures += judge(row, budget, where)
            rows.append(row)

    def worst(key, fn):
        vals = [r[key] for r in rows if key in r]
        return fn(vals) if vals else None

    return {
        "rows": rows,
        "worst": {"box_iou": worst("box_iou", min), "mask_iou": worst("mask_iou", min),
                  "track_box_iou": worst("track_box_iou", min), "window_err_s": worst("window_err_s", max),
                  "top1_err_s": worst("top1_err_s", max), "rank_swaps": worst("rank_swaps", max),
                  "score_err": worst("score_err", max),
                  "same_triggers": all(r["task_torch"] == r["task_runtime"] for r in rows),
                  "same_tokens": all(r["same_tokens"] for r in rows)},
        "near_ties": sum(1 for r in rows if r.get("near_tie")),
        "budget": {"iou": budget["iou"], "window_s": window_budget, "score": budget["score"]},
        "failures": failures,
        "mean_mask_iou": float(np.mean([r["mask_iou"] for r in rows if "mask_iou" in r] or [1.0])),
    }
