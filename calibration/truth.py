"""Ground truth for an exported artifact: the answers of the runtime's `Session` on the project's held-out clips,
scored with each benchmark's metric (`tpo.data.metrics`).

The rules are `tpo-eval`'s (`tpo.train.evaluate`, which runs the PyTorch model and so cannot be imported
here); a test pins the two together: `tpo-eval` on a checkpoint and this module on its fp32 export give the
same numbers for the same clips.

    routing       accuracy: the first trigger == the query's route ("none" for conversation)
    track         success AUC and precision @ 20 px (OTB, frames where the object is unseen left out), J, F
                  and J&F (DAVIS, every frame); per query, then averaged
    region        Acc@0.5 (RefCOCO) of the box about the asked frame
    temporal      R1@{0.3, 0.5, 0.7} and mIoU (Charades-STA) of the top-1 window against the query's spans
    conversation  exact match of the answer text (normalised)

MISS RULE (as tpo-eval): a query whose first trigger is not its route scores a miss for its task (no box, no
window, empty masks, no answer); routing accuracy measures the routing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tpo.contract.tasks import CHAT
from tpo.data import metrics
from tpo.data.synthetic import Clip, Query

R1_THRESHOLDS = (0.3, 0.5, 0.7)
# The numbers the gate compares with fp32's (the issue's acceptance list, region beside them), as
# (section, metric) of `TruthScores.summary()`.
HEADLINE = (("routing", "accuracy"), ("track", "success_AUC"), ("track", "J&F"), ("region", "Acc@0.5"),
            ("temporal", "R1@0.5"), ("conversation", "exact_match"))
SECTION_OF_ROUTE = {"track": "track", "region": "region", "temporal": "temporal", CHAT: "conversation"}


def _first_object(result):
    """A track result is one object's dict, or a list of them (several `<track_box>`es): the first object."""
    return result[0] if isinstance(result, list) else result


@dataclass
class TruthScores:
    """Every query's route and its task's predictions against ground truth, query by query."""

    routes: list[tuple[str, str]] = field(default_factory=list)   # (expected route, first trigger produced)
    track: list[dict[str, float]] = field(default_factory=list)
    region: tuple[list, list] = field(default_factory=lambda: ([], []))          # (pred boxes | None, gt boxes)
    temporal: tuple[list, list] = field(default_factory=lambda: ([], []))        # (top-1 | None, gt spans)
    conversation: tuple[list, list] = field(default_factory=lambda: ([], []))    # (answer | None, reference)

    def add(self, clip: Clip, q: Query, answer, frames: int) -> dict:
        """Score the runtime `Answer` to `q`, asked about the first `frames` frames of `clip` (the region
        question about its one frame); returns the query's own scores."""
        routed = answer.task == q.route
        self.routes.append((q.route, answer.task))
        row: dict = {"route": q.route, "routed": answer.task}
        if q.route == "track":
            k = q.object_id
            gt_boxes = [clip.box(t, k) for t in range(frames)]
            got = _first_object(answer.track[0]) if routed and answer.track else None
            boxes = list(got["boxes"]) if got is not None else [None] * frames
            masks = list(got["masks"]) if got is not None else [None] * frames
            s = {"success_AUC": metrics.tracking_success_auc(boxes, gt_boxes),
                 "precision@20px": metrics.tracking_precision(boxes, gt_boxes),
                 **metrics.jf_score(masks, clip.masks(k)[:frames])}
            self.track.append(s)
            row.update(s)
        elif q.route == "region":
            box = answer.region[0]["box"] if routed and answer.region else None
            self.region[0].append(box)
            self.region[1].append(list(q.box))
            row["iou"] = 0.0 if box is None else float(metrics.box_iou(box, list(q.box)))
        elif q.route == "temporal":
            windows = answer.temporal[0]["windows"] if routed and answer.temporal else []
            top1 = list(windows[0][:2]) if windows else None
            spans = [list(s) for s in q.spans]
            self.temporal[0].append(top1)
            self.temporal[1].append(spans)
            row["top1_iou"] = max((metrics.temporal_iou(top1, s) for s in spans), default=0.0) if top1 else 0.0
        elif q.route == CHAT:
            text = answer.text if routed else None
            self.conversation[0].append(text)
            self.conversation[1].append(q.answer)
            row["exact_match"] = metrics.exact_match([text], [q.answer]) == 1.0
        return row

    def summary(self) -> dict[str, dict[str, float]]:
        """{"routing": {"accuracy"}, and per task asked: its benchmark's metrics (fractions in [0, 1])}."""
        out: dict[str, dict[str, float]] = {
            "routing": {"accuracy": metrics.routing_accuracy([p for _, p in self.routes],
                                                             [g for g, _ in self.routes])}}
        if self.track:
            out["track"] = {k: float(np.mean([s[k] for s in self.track])) for k in self.track[0]}
        if self.region[1]:
            out["region"] = {"Acc@0.5": metrics.region_accuracy(*self.region, iou=0.5)}
        if self.temporal[1]:
            r1 = metrics.temporal_recall_at_iou(*self.temporal, R1_THRESHOLDS)
            out["temporal"] = {**{f"R1@{m:g}": v for m, v in r1.items()},
                               "mIoU": metrics.temporal_miou(*self.temporal)}
        if self.conversation[1]:
            out["conversation"] = {"exact_match": metrics.exact_match(*self.conversation)}
        return out

    def counts(self) -> dict[str, int]:
        """Questions per section (the resolution of its numbers: one question moves a mean by 1/count)."""
        per = {"routing": len(self.routes)}
        for route, section in SECTION_OF_ROUTE.items():
            n = sum(g == route for g, _ in self.routes)
            if n:
                per[section] = n
        return per


def headline(summary: dict, counts: dict) -> dict[str, dict]:
    """The HEADLINE numbers of one summary: {"track success_AUC": {"value", "questions"}, ...}."""
    return {f"{section} {name}": {"value": summary[section][name], "questions": counts[section]}
            for section, name in HEADLINE if section in summary}


def compare_truth(reference: dict, quantized: dict, points: float) -> tuple[dict, list[str]]:
    """fp32's headline numbers against the quantised artifact's: the deltas, and a failure per number that
    dropped by more than `points` or by more than one question's worth (1 / questions), whichever is larger:
    on a few clips one question flipped is noise the gate cannot resolve, on 50 it is 2 points."""
    rows, failures = {}, []
    for key, ref in reference.items():
        got = quantized[key]
        allowed = max(points, 1.0 / ref["questions"])
        delta = got["value"] - ref["value"]
        rows[key] = {"fp32": ref["value"], "quantized": got["value"], "delta": delta, "allowed_drop": allowed,
                     "questions": ref["questions"]}
        if delta < -allowed - 1e-9:
            failures.append(f"{key} (ground truth): {ref['value']:.3f} -> {got['value']:.3f}, a drop of "
                            f"{-delta:.3f} > {allowed:.3f}")
    return rows, failures
