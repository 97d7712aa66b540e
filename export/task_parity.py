"""The parity gate, task level: the whole chain on the runtime's onnxruntime backend against the PyTorch pipeline.

For each parity clip and each of its questions (track, region, temporal, conversation), `tpo.model.generate`
and `tpo.runtime.Session.ask` answer; compared: the trigger chosen and the generated tokens (must be identical),
the region box (IoU), the temporal windows (each window's start/end, seconds, matched as sets), the tracked masks and boxes
(IoU per frame, the worst frame counts). Budgets (issue 4's acceptance): fp32 box and mask IoU >= 0.99, windows
within 0.05 s, same triggers; fp16 IoUs >= 0.95 and windows within one clip length.
"""

from __future__ import annotations

import numpy as np

from tpo.contract import Manifest, Precision
from tpo.contract import tasks as T
from tpo.runtime.backend import OnnxRuntimeBackend
from tpo.runtime.postprocess import box_iou, mask_iou, window_set_error
from tpo.runtime.session import Session

BUDGETS = {
    Precision.FP32: {"iou": 0.99, "window_s": 0.05},
    Precision.FP16: {"iou": 0.95, "window_s": None},   # None: one clip length (the windows' own resolution)
}


def _worst(row: dict, key: str, value: float, worse) -> None:
    """Keep the worst value of `key` in `row` (a question can trigger a head more than once)."""
    row[key] = value if key not in row else worse(row[key], value)


def compare_heads(ref, got, row: dict) -> None:
    """The worst agreement of each head's results (the same triggers fired, so the lists pair up)."""
    for a, b in zip(ref.region, got.region, strict=True):
        _worst(row, "box_iou", box_iou(a.box_xyxy, b["box"]), min)
    for a, b in zip(ref.temporal, got.temporal, strict=True):
        # at the head's resolution (snapped to the clip grid a midpoint value may land one clip apart),
        # as sets (near-tied scores sort either way), both directions
        _worst(row, "window_err_s", max(window_set_error(a.windows_raw, b["windows_raw"]),
                                        window_set_error(b["windows_raw"], a.windows_raw)), max)
    for a, b in zip(ref.track, got.track, strict=True):
        _worst(row, "mask_iou", min(mask_iou(m1, m2) for m1, m2 in zip(a.masks, b["masks"], strict=True)), min)
        _worst(row, "track_box_iou", min(box_iou(x, y) for x, y in zip(a.boxes, b["boxes"], strict=True)), min)


def task_parity(model, tokenizer, manifest: Manifest, clips) -> dict:
    """Compare the chain on `clips` (the graphs in `manifest.root`); returns {rows, worst: {...}, failures: [...]}."""
    from tpo.model.generate import generate
    from tpo.model.preprocess import Video

    session = Session(manifest, OnnxRuntimeBackend())
    budget = dict(BUDGETS[manifest.precision])
    clip_s = manifest.preprocess.temporal.clip_s
    window_budget = budget["window_s"] if budget["window_s"] is not None else clip_s + 1e-6
    rows, failures = [], []
    for clip in clips:
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
                compare_heads(ref, got, row)
            for key in ("box_iou", "mask_iou", "track_box_iou"):
                if key in row and row[key] < budget["iou"]:
                    failures.append(f"{where}: {key} {row[key]:.4f} < {budget['iou']}")
            if "window_err_s" in row and row["window_err_s"] > window_budget:
                failures.append(f"{where}: windows off by {row['window_err_s']:.3f} s > {window_budget:.3f}")
            rows.append(row)

    def worst(key, fn):
        vals = [r[key] for r in rows if key in r]
        return fn(vals) if vals else None

    return {
        "rows": rows,
        "worst": {"box_iou": worst("box_iou", min), "mask_iou": worst("mask_iou", min),
                  "track_box_iou": worst("track_box_iou", min), "window_err_s": worst("window_err_s", max),
                  "same_triggers": all(r["task_torch"] == r["task_runtime"] for r in rows),
                  "same_tokens": all(r["same_tokens"] for r in rows)},
        "budget": {"iou": budget["iou"], "window_s": window_budget},
        "failures": failures,
        "mean_mask_iou": float(np.mean([r["mask_iou"] for r in rows if "mask_iou" in r] or [1.0])),
    }
