"""Metrics on hand-made cases with known answers: perfect, disjoint, a known partial case, edge cases."""

import math

import numpy as np
import pytest

from tpo.data.metrics import (
    OTB_OVERLAP_THRESHOLDS,
    PERFECT_SUCCESS_AUC,
    boundary_f,
    box_iou,
    exact_match,
    format_table,
    jf_score,
    normalise_answer,
    qvhighlights_map,
    region_accuracy,
    region_j,
    routing_accuracy,
    temporal_iou,
    temporal_miou,
    temporal_recall_at_iou,
    tracking_precision,
    tracking_success_auc,
    tracking_success_curve,
)
from tpo.errors import InputError

A = [0.0, 0.0, 10.0, 10.0]


def shifted(box, dx=0.0, dy=0.0):
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


# ---- boxes and tracking --------------------------------------------------------------------------------


def test_box_iou_known_values_and_broadcasting():
    assert box_iou(A, A) == 1.0
    assert box_iou(A, [20, 20, 30, 30]) == 0.0
    assert box_iou(A, [10, 0, 20, 10]) == 0.0                         # touching edges
    assert math.isclose(box_iou(A, [5, 0, 15, 10]), 50 / 150)
    assert box_iou(A, [3, 3, 3, 8]) == 0.0                            # zero width
    assert box_iou([5, 5, 2, 2], [5, 5, 2, 2]) == 0.0                 # inverted: area 0, union 0
    out = box_iou(np.zeros((3, 1, 4)) + A, np.array([A, [5, 0, 15, 10]]))
    assert out.shape == (3, 2) and np.allclose(out, [[1, 1 / 3]] * 3)


def test_perfect_tracker_scores_otbs_20_of_21():
    """OTB's convention (thresholds 0:0.05:1, IoU > t, AUC = the mean): a perfect tracker scores 20/21, as the
    docstring says; its curve is 1 everywhere but at threshold 1, also on frames where the target is absent."""
    assert PERFECT_SUCCESS_AUC == 20 / 21 and round(PERFECT_SUCCESS_AUC, 3) == 0.952
    gt = [shifted(A, dx=3 * t) for t in range(6)]
    assert tracking_success_auc(gt, gt) == PERFECT_SUCCESS_AUC
    curve = tracking_success_curve(gt[:3] + [None] + gt[4:], gt[:3] + [None] + gt[4:])
    assert curve.tolist() == [1.0] * 20 + [0.0]


def test_tracking_perfect_none_and_known_partial():
    gt = [shifted(A, dx=3 * t) for t in range(6)]
    assert tracking_success_auc(gt, gt) == 1.0 - 1 / 21                # IoU 1 is not > 1: 20 of 21 thresholds
    assert tracking_precision(gt, gt) == 1.0
    assert tracking_success_auc([None] * 6, gt) == 0.0
    assert tracking_precision([None] * 6, gt) == 0.0
    # IoU 1/3 in every frame: success at thresholds 0, 0.05, ..., 0.3 -> 7 of 21
    third = [shifted(g, dx=5) for g in gt]
    assert math.isclose(tracking_success_auc(third, gt), 7 / 21)
    # half the frames perfect, half lost
    half = gt[:3] + [None] * 3
    assert math.isclose(tracking_success_auc(half, gt), 0.5 * 20 / 21)
    curve = tracking_success_curve(half, gt)
    assert curve.shape == (21,) and np.allclose(curve[:-1], 0.5) and curve[-1] == 0.0
    assert np.allclose(OTB_OVERLAP_THRESHOLDS, np.arange(21) * 0.05)


def test_tracking_success_uses_strict_greater_than():
    gt = [[0, 0, 10, 20]]
    pred = [[0, 0, 10, 10]]                                           # IoU exactly 0.5
    curve = tracking_success_curve(pred, gt)
    assert curve[10] == 0.0 and curve[9] == 1.0                       # 0.5 not > 0.5; 0.45 is


def test_tracking_excludes_absent_ground_truth_frames():
    gt = [A, None, [0, 0, 0, 0], shifted(A, dx=4)]                    # frames 1 and 2: target absent
    pred = [A, [50, 50, 60, 60], None, shifted(A, dx=4)]
    assert tracking_success_auc(pred, gt) == 1.0 - 1 / 21
    assert tracking_precision(pred, gt) == 1.0
    with pytest.raises(InputError, match="no frame has a ground-truth box"):
        tracking_success_auc([A, A], [None, None])
    with pytest.raises(InputError, match="3 predictions for 2"):
        tracking_success_auc([A, A, A], [A, A])


def test_tracking_precision_threshold_is_inclusive():
    gt = [A, A]
    assert tracking_precision([shifted(A, dx=20), shifted(A, dx=12, dy=16)], gt) == 1.0   # 20 px, 20 px
    assert tracking_precision([shifted(A, dx=20.5), A], gt) == 0.5
    assert tracking_precision([shifted(A, dx=30), A], gt, threshold_px=30) == 1.0


def test_region_accuracy_at_half_iou():
    gt = [[0, 0, 10, 20]] * 4
    pred = [[0, 0, 10, 20], [0, 0, 10, 10], [0, 0, 10, 9.9], None]   # IoU 1, 0.5 (counts), 0.495, none
    assert region_accuracy(pred, gt) == 0.5
    assert region_accuracy(pred, gt, iou=0.3) == 0.75
    assert region_accuracy([[50, 50, 60, 60]], [A]) == 0.0


# ---- temporal ------------------------------------------------------------------------------------------


def test_temporal_iou():
    assert temporal_iou([0, 10], [0, 10]) == 1.0
    assert temporal_iou([0, 10], [10, 20]) == 0.0
    assert temporal_iou([0, 10], [5, 15]) == 5 / 15
    assert temporal_iou([3, 3], [3, 3]) == 0.0


def test_recall_at_iou_and_miou():
    gt = [[0, 10], [0, 10], [0, 10], [0, 10]]
    pred = [[0, 10], [0, 5], [0, 8, 0.9], None]                       # IoU 1, 0.5, 0.8 (score ignored), 0
    r = temporal_recall_at_iou(pred, gt)
    assert r == {0.3: 0.75, 0.5: 0.75, 0.7: 0.5}
    assert math.isclose(temporal_miou(pred, gt), (1 + 0.5 + 0.8 + 0) / 4)
    assert temporal_recall_at_iou([[0, 10]], [[0, 10]]) == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0}
    assert temporal_recall_at_iou([[20, 30]], [[0, 10]]) == {0.3: 0.0, 0.5: 0.0, 0.7: 0.0}


def test_several_ground_truth_windows_use_the_best_match():
    gt = [[[0, 10], [20, 28]]]                                        # one query, two visible spans
    assert math.isclose(temporal_miou([[20, 30]], gt), 0.8)
    assert temporal_recall_at_iou([[20, 30]], gt) == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0}
    assert temporal_miou([[20, 30]], np.array([[20.0, 30.0]])) == 1.0   # a single window as an array
    with pytest.raises(InputError, match="no ground-truth window"):
        temporal_miou([[0, 1]], [[]])


def test_qvhighlights_map_perfect_disjoint_partial():
    gt = [[[0, 10]]]
    perfect = qvhighlights_map([[[0, 10, 0.9]]], gt)
    assert list(perfect) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95", "average"]
    assert all(v == 1.0 for v in perfect.values())
    assert all(v == 0.0 for v in qvhighlights_map([[[20, 30, 0.9]]], gt).values())
    # IoU 0.8: a hit at thresholds 0.5 .. 0.8 (7 of 10), a miss at 0.85 .. 0.95
    m = qvhighlights_map([[[0, 8, 1.0]]], gt)
    assert m["0.8"] == 1.0 and m["0.85"] == 0.0 and math.isclose(m["average"], 0.7)
    # two ground-truth windows, ranked hit, miss, hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # interpolated AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    m = qvhighlights_map([[[0, 10, 0.9], [50, 60, 0.8], [20, 30, 0.7]]], [[[0, 10], [20, 30]]])
    assert math.isclose(m["average"], 5 / 6)
    # scores decide the ranking, not the order given
    m = qvhighlights_map([[[20, 30, 0.7], [50, 60, 0.8], [0, 10, 0.9]]], [[[0, 10], [20, 30]]])
    assert math.isclose(m["average"], 5 / 6)


def test_qvhighlights_map_duplicates_cutoff_and_empty():
    # a duplicate of a matched window is a false positive after the hit: AP stays 1
    assert qvhighlights_map([[[0, 10, 0.9], [0, 10, 0.8]]], [[[0, 10]]])["average"] == 1.0
    # only the first 10 windows count: the hit in 11th place is cut
    preds = [[[50 + i, 51 + i, 1.0] for i in range(10)] + [[0, 10, 0.1]]]
    assert qvhighlights_map(preds, [[[0, 10]]])["average"] == 0.0
    # mean over queries; a query with no predictions scores 0
    m = qvhighlights_map([[[0, 10, 0.5]], []], [[[0, 10]], [[5, 6]]])
    assert m["average"] == 0.5
    with pytest.raises(InputError, match="without a score"):
        qvhighlights_map([[[0, 10]]], [[[0, 10]]])


# ---- masks ---------------------------------------------------------------------------------------------


def square(h=240, w=320, x=100, y=80, size=40):
    m = np.zeros((h, w), bool)
    m[y:y + size, x:x + size] = True
    return m


def test_j_and_f_perfect_disjoint_empty():
    g = square()
    assert jf_score([g, g], [g, g]) == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    far = square(x=250, y=10)
    assert jf_score([far], [g]) == {"J": 0.0, "F": 0.0, "J&F": 0.0}
    empty = np.zeros_like(g)
    assert jf_score([empty], [empty]) == {"J": 1.0, "F": 1.0, "J&F": 1.0}        # both empty: DAVIS scores 1
    assert jf_score([None], [g]) == {"J": 0.0, "F": 0.0, "J&F": 0.0}             # None = empty prediction
    assert jf_score([g], [empty]) == {"J": 0.0, "F": 0.0, "J&F": 0.0}            # false positive
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, g) == 0.0


def test_j_and_f_known_partial():
    g = square()
    # 4 px shift at 320x240: J = 36*40 / (44*40); every boundary pixel within ceil(0.008 * 400) = 4 px
    p = np.roll(g, 4, axis=1)
    r = jf_score([p], [g])
    assert math.isclose(r["J"], 36 / 44) and r["F"] == 1.0 and math.isclose(r["J&F"], (36 / 44 + 1) / 2)
    assert boundary_f(np.roll(g, 5, axis=1), g) < 1.0                 # one pixel past the tolerance
    assert boundary_f(np.roll(g, 5, axis=1), g, bound_th=5) == 1.0    # tolerance in pixels when >= 1
    # on a 854x480 (DAVIS) frame the tolerance is ceil(0.008 * 979.7) = 8 px
    big = square(480, 854)
    assert boundary_f(np.roll(big, 8, axis=1), big) == 1.0 > boundary_f(np.roll(big, 9, axis=1), big)
    # mean over frames: one perfect frame, one empty prediction
    r = jf_score([g, None], np.stack([g, g]))
    assert r == {"J": 0.5, "F": 0.5, "J&F": 0.5}
    with pytest.raises(InputError, match="resize"):
        jf_score([np.zeros((10, 10), bool)], [g])


# ---- text and report -----------------------------------------------------------------------------------


def test_routing_accuracy():
    assert routing_accuracy(["track", "none", "region", "temporal"], ["track", "none", "temporal", "temporal"]) == 0.75
    with pytest.raises(InputError):
        routing_accuracy([], [])


def test_exact_match_normalisation():
    assert normalise_answer("The answer is Three.") == "answer is 3"
    assert exact_match(["Three.", "3", "RED!", "a circle", "blue", None], ["three", "three", "red", "circle",
                                                                           "red", "red"]) == 4 / 6
    assert exact_match(["twenty"], ["20"]) == 1.0
    assert exact_match(["thirty"], ["30"]) == 0.0                     # number words only up to twenty


def test_format_table():
    t = format_table({"track": {"success_auc": 0.5, "precision@20px": 1.0}, "queries": 12, "region/acc@0.5": 0.25})
    lines = t.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert "track/success_auc" in t and "0.5000" in t and "12" in t and "region/acc@0.5" in t
    assert len(lines) == 2 + 4 and len({len(line) for line in lines}) == 1
    assert format_table({}) == "(no metrics)"
