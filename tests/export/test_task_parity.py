"""The task-level gate judges windows as an answer is read (top-1, ranking, scores) and every row on its own:
window_ranking and judge on made window lists (no export, no model)."""

from __future__ import annotations

import pytest

from tpo.contract import Precision
from tpo.export.task_parity import BUDGETS, judge, window_ranking

REF = [[2.0, 6.0, 0.90], [10.0, 14.0, 0.60], [0.0, 20.0, 0.30]]
FP32 = {**BUDGETS[Precision.FP32]}


def test_the_same_answer_agrees():
    r = window_ranking(REF, [list(w) for w in REF], tie=2e-3, apart_s=0.05)
    assert r == {"top1_err_s": 0.0, "near_tie": False, "rank_swaps": 0, "score_err": 0.0}
    assert judge({"top1_err_s": 0.0, "rank_swaps": 0, "score_err": 0.0, "window_err_s": 0.0}, FP32, "q") == []


def test_a_new_top_window_fails_even_when_the_set_is_the_same():
    """The set comparison alone passes this: every window has a partner. The answer a user reads changed."""
    got = [[10.0, 14.0, 0.91], [2.0, 6.0, 0.90], [0.0, 20.0, 0.30]]
    r = window_ranking(REF, got, tie=2e-3, apart_s=0.05)
    assert r["top1_err_s"] == pytest.approx(8.0) and not r["near_tie"] and r["rank_swaps"] == 1
    row = {**r, "window_err_s": 0.0}
    failures = judge(row, FP32, "clip q")
    assert any("top-1 window off by 8.000 s" in f for f in failures)
    assert any("1 pair(s) of windows ranked the other way" in f for f in failures)
    assert any("window scores off by 0.3100" in f for f in failures)


def test_near_tied_reference_accepts_either_top_and_says_so():
    ref = [[2.0, 6.0, 0.9000], [10.0, 14.0, 0.8995], [0.0, 20.0, 0.30]]
    got = [[10.0, 14.0, 0.9001], [2.0, 6.0, 0.9000], [0.0, 20.0, 0.30]]
    r = window_ranking(ref, got, tie=2e-3, apart_s=0.05)
    assert r["top1_err_s"] == 0.0 and r["near_tie"] and r["rank_swaps"] == 0
    assert judge({**r, "window_err_s": 0.0}, FP32, "q") == []


def test_a_swap_lower_down_is_caught_and_the_worst_row_counts():
    got = [[2.0, 6.0, 0.90], [0.0, 20.0, 0.61], [10.0, 14.0, 0.60]]
    r = window_ranking(REF, got, tie=2e-3, apart_s=0.05)
    assert r["top1_err_s"] == 0.0 and r["rank_swaps"] == 1
    assert window_ranking([], [], tie=2e-3, apart_s=0.05)["top1_err_s"] == 0.0
    assert window_ranking(REF, [], tie=2e-3, apart_s=0.05)["top1_err_s"] == float("inf")
