"""Score a model on a synthetic dataset with each benchmark's standard metric (the library of `tpo-eval`).

Every query of the dataset is asked once through `tpo.model.generate.generate`, in dataset order (clip
by clip, queries in file order): track, temporal and conversation queries about the whole clip, region
queries about their one frame given as an image. Ground truth comes from the annotations, never from
the (lossy) video the model sees.

    routing       accuracy: generate's first trigger == the query's route ("none" for conversation)
    track         success AUC and precision @ 20 px (OTB one-pass; frames where the object is invisible
                  are left out), J, F and J&F (DAVIS; every frame, an empty mask where the object is
                  absent scores 1); each per query, then averaged over queries
    region        Acc@0.5 (RefCOCO): predicted box vs the object's box in the asked frame
    temporal      R1@{0.3, 0.5, 0.7} and mIoU (Charades-STA) of the top-1 window against the query's
                  spans (the best-matching span counts); mAP (QVHighlights, IoU 0.5:0.05:0.95) of the
                  first 10 scored windows against all spans
    conversation  exact match of the answer text (normalised as `metrics.normalise_answer`)

MISS RULE: task metrics are computed over ALL queries of the task. A query whose first trigger is not
its route counts as a miss there: no box, no window, empty masks, no answer (even if the right head ran
after a wrong first trigger). Routing accuracy measures the routing itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tpo.data.synthetic import ROUTES, TASKS, Clip, Query
from tpo.errors import InputError
from tpo.model.generate import GenerationResult, generate
from tpo.model.preprocess import Video

from . import metrics

ROUTE_NAMES = ("track", "region", "temporal", "none")     # what generate's `.task` can be
R1_THRESHOLDS = (0.3, 0.5, 0.7)
MAX_PRED_WINDOWS = 10                                      # QVHighlights scores the first 10 windows
MISS_RULE = ("metrics cover all queries of a task; a query whose first trigger is not its route scores "
             "as a miss (no box, no window, empty masks, no answer)")


def _check_args(dataset, max_clips: int | None, tasks: Sequence[str] | None) -> tuple[list[Clip], tuple[str, ...]]:
    if max_clips is not None and not (isinstance(max_clips, int) and max_clips >= 1):
        raise InputError(f"max_clips must be an integer >= 1, got {max_clips!r}")
    chosen = tuple(TASKS) if tasks is None else tuple(tasks)
    unknown = [t for t in chosen if t not in TASKS]
    if unknown or not chosen:
        raise InputError(f"tasks {list(chosen)}: choose one or more of {list(TASKS)}")
    clips = dataset.clips[:max_clips]
    for c in clips:
        if c.frames is None:
            raise InputError(f"{dataset.root}: clip {c.name} has no frames; load the dataset with "
                             "frames='video' or 'render'")
    if not any(q.task in chosen for c in clips for q in c.queries):
        raise InputError(f"{dataset.root}: no queries of tasks {list(chosen)} in the first {len(clips)} clips")
    return clips, chosen


def _ask(model, tokenizer, clip: Clip, video: Video, q: Query) -> GenerationResult:
    if q.task == "region":
        return generate(model, tokenizer, Video(clip.frames[q.frame:q.frame + 1], clip.fps), q.question)
    return generate(model, tokenizer, video, q.question)


def _floats(x) -> list | None:
    return None if x is None else [float(v) for v in x]


class _Scores:
    """Per-task predictions and ground truth, gathered query by query."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str]] = []               # (expected route, produced task)
        self.region: tuple[list, list] = ([], [])              # pred boxes | None, gt boxes
        self.temporal_top1: list = []                          # [s, e, score] | None
        self.temporal_all: list[list] = []                     # scored windows (first 10)
        self.temporal_gt: list[list] = []                      # spans per query
        self.track: list[dict[str, float]] = []                # per query: AUC, precision, J, F, J&F
        self.answers: tuple[list, list] = ([], [])             # pred text | None, reference

    def add(self, clip: Clip, q: Query, res: GenerationResult) -> dict:
        """Score one query; returns its record."""
        routed = res.task == q.route
        self.routes.append((q.route, res.task))
        rec = {"qid": q.qid, "vid": q.vid, "task": q.task, "route": q.route, "routed": res.task,
               "route_correct": routed, "question": q.question, "reference": q.answer, "text": res.text}
        if q.task == "region":
            pred = _floats(res.region[0].box_xyxy) if routed else None
            gt = _floats(q.box)
            self.region[0].append(pred)
            self.region[1].append(gt)
            iou = 0.0 if pred is None else float(metrics.box_iou(pred, gt))
            rec.update(frame=q.frame, pred_box=pred, gt_box=gt, iou=iou)
        elif q.task == "temporal":
            windows = [_floats(w) for w in res.temporal[0].windows[:MAX_PRED_WINDOWS]] if routed else []
            spans = [list(s) for s in q.spans]
            self.temporal_top1.append(windows[0] if windows else None)
            self.temporal_all.append(windows)
            self.temporal_gt.append(spans)
            top1 = max((metrics.temporal_iou(windows[0][:2], s) for s in spans), default=0.0) if windows else 0.0
            rec.update(pred_windows=windows, gt_spans=spans, top1_iou=top1)
        elif q.task == "track":
            k, n = q.object_id, clip.num_frames
            gt_boxes = [clip.box(t, k) for t in range(n)]
            if routed:
                tr = res.track[0]
                pred_boxes = [_floats(b) for b in tr.boxes]
                pred_masks = list(tr.masks)
            else:
                pred_boxes, pred_masks = [None] * n, [None] * n
            s = {"success_AUC": metrics.tracking_success_auc(pred_boxes, gt_boxes),
                 "precision@20px": metrics.tracking_precision(pred_boxes, gt_boxes),
                 **metrics.jf_score(pred_masks, clip.masks(k))}
            self.track.append(s)
            rec.update(object_id=k, pred_boxes=pred_boxes, **s)
        else:
            pred = res.text if routed else None
            self.answers[0].append(pred)
            self.answers[1].append(q.answer)
            rec["exact_match"] = metrics.exact_match([pred], [q.answer]) == 1.0
        return rec

    def summary(self) -> dict:
        out: dict = {"routing_accuracy": metrics.routing_accuracy([p for _, p in self.routes],
                                                                   [g for g, _ in self.routes])}
        if self.track:
            out["track"] = {k: float(np.mean([s[k] for s in self.track])) for k in self.track[0]}
        if self.region[1]:
            out["region"] = {"Acc@0.5": metrics.region_accuracy(*self.region, iou=0.5)}
        if self.temporal_gt:
            r1 = metrics.temporal_recall_at_iou(self.temporal_top1, self.temporal_gt, R1_THRESHOLDS)
            qvh = metrics.qvhighlights_map(self.temporal_all, self.temporal_gt, max_pred_windows=MAX_PRED_WINDOWS)
            out["temporal"] = {**{f"R1@{m:g}": v for m, v in r1.items()},
                               "mIoU": metrics.temporal_miou(self.temporal_top1, self.temporal_gt),
                               "mAP": qvh["average"], "mAP@0.5": qvh["0.5"], "mAP@0.75": qvh["0.75"]}
        if self.answers[1]:
            out["conversation"] = {"exact_match": metrics.exact_match(*self.answers)}
        return out

    def counts(self, clips: int, tasks: tuple[str, ...]) -> dict:
        per_task = {t: sum(g == ROUTES[t] for g, _ in self.routes) for t in tasks}
        correct = {t: sum(g == ROUTES[t] and p == g for g, p in self.routes) for t in tasks}
        confusion = {ROUTES[t]: {r: sum(g == ROUTES[t] and p == r for g, p in self.routes) for r in ROUTE_NAMES}
                     for t in tasks}
        return {"clips": clips, "queries": len(self.routes), "queries_per_task": per_task,
                "routed_correctly": correct, "confusion": confusion}


def evaluate(model, tokenizer, dataset, *, max_clips: int | None = None, tasks: Sequence[str] | None = None,
             progress: bool = False, records: bool = False) -> dict:
    """Ask every query of `dataset` (a `tpo.data.files.Dataset` loaded with frames) and score the answers.

    max_clips: only the first N clips; tasks: a subset of TASKS ("track", "region", "temporal",
    "conversation"); progress: a tqdm bar on stderr; records: add one record per query (question,
    produced route and text, predictions, ground truth and the query's own score).
    Returns one JSON-able dict:
        data, scoring (the miss rule, see module docstring),
        metrics: routing_accuracy, and per task present: track {success_AUC, precision@20px, J, F, J&F},
                 region {Acc@0.5}, temporal {R1@0.3, R1@0.5, R1@0.7, mIoU, mAP, mAP@0.5, mAP@0.75},
                 conversation {exact_match}; all fractions in [0, 1]
        counts: clips, queries, queries_per_task, routed_correctly (per task), confusion
                (expected route -> produced first trigger -> count)
        records: [...] (only with records=True)
    """
    clips, chosen = _check_args(dataset, max_clips, tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(q.task in chosen for c in clips for q in c.queries), desc="queries", unit="query")
    scores, recs = _Scores(), []
    for clip in clips:
        video = Video(clip.frames, clip.fps)
        for q in (q for q in clip.queries if q.task in chosen):
            rec = scores.add(clip, q, _ask(model, tokenizer, clip, video, q))
            if records:
                recs.append(rec)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    out = {"data": str(dataset.root), "scoring": MISS_RULE, "metrics": scores.summary(),
           "counts": scores.counts(len(clips), chosen)}
    if records:
        out["records"] = recs
    return out


__all__ = ["MISS_RULE", "ROUTE_NAMES", "evaluate"]
