"""Span decode kernel, run on the CPU, against the numpy reference (float32 vs float64: 1e-5 s / 1e-6)."""

import numpy as np
import pytest

from tpo.kernels import decode_spans
from tpo.kernels import reference as ref


def check(device, logits, spans, duration, top_k, round_to=0.0):
    got = decode_spans(device, logits, spans, duration=duration, top_k=top_k, round_to=round_to)
    windows, order = ref.span_reference(logits, spans, duration, top_k, round_to)
    assert got.windows.shape == (top_k, 3) and got.queries.shape == (top_k,)
    np.testing.assert_array_equal(got.queries, order)
    np.testing.assert_allclose(got.windows[:, :2], windows[:, :2], atol=1e-5 * duration, rtol=0)
    np.testing.assert_allclose(got.windows[:, 2], windows[:, 2], atol=1e-6, rtol=0)
    return got


class TestSpanDecode:
    @pytest.mark.parametrize("queries, top_k", [(10, 5), (10, 10), (10, 1), (37, 13), (1, 1)])
    def test_matches_reference(self, emulated, rng, queries, top_k):
        logits = rng.normal(0, 2, (queries, 2)).astype(np.float32)
        spans = rng.uniform(0, 1, (queries, 2)).astype(np.float32)
        got = check(emulated, logits, spans, 47.3, top_k)
        assert (np.diff(got.windows[:, 2]) <= 0).all()

    def test_clamps_to_the_clip(self, emulated):
        logits = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
        spans = np.array([[0.05, 0.5], [0.9, 0.6], [0.5, 3.0]], np.float32)  # start < 0, end > 1, both
        got = check(emulated, logits, spans, 20.0, 3)
        np.testing.assert_allclose(got.windows[:, :2], [[0.0, 6.0], [12.0, 20.0], [0.0, 20.0]], atol=1e-5)

    def test_ties_keep_query_order(self, emulated, rng):
        logits = np.zeros((10, 2), np.float32)
        logits[[2, 7, 4], 0] = 1.0  # three equal best scores, then seven equal ones
        spans = rng.uniform(0.2, 0.8, (10, 2)).astype(np.float32)
        got = check(emulated, logits, spans, 10.0, 10)
        assert list(got.queries) == [2, 4, 7, 0, 1, 3, 5, 6, 8, 9]

    def test_rounding_is_half_to_even_then_clamped(self, emulated):
        logits = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
        spans = np.array(
            [[0.5, 0.5], [0.99, 0.1]], np.float32
        )  # 2.5 -> 2, 7.5 -> 8; 9.4 -> 9, end 10.4 -> 10
        got = check(emulated, logits, spans, 10.0, 2, round_to=1.0)
        np.testing.assert_array_equal(got.windows[:, :2], [[2.0, 8.0], [9.0, 10.0]])
        got = check(
            emulated, logits, spans, 10.3, 2, round_to=2.0
        )  # end 10.3 rounds to 10, not past the clip
        assert got.windows[:, :2].max() <= 10.3

    def test_nan_logits_sort_last(self, emulated):
        logits = np.array([[np.nan, 0.0], [1.0, 0.0], [-1.0, 0.0]], np.float32)
        spans = np.full((3, 2), 0.5, np.float32)
        got = decode_spans(emulated, logits, spans, duration=5.0, top_k=3)
        assert list(got.queries) == [1, 2, 0] and np.isnan(got.windows[2, 2])

    def test_batch_of_one(self, emulated, rng):
        logits = rng.normal(0, 1, (1, 10, 2)).astype(np.float32)
        spans = rng.uniform(0, 1, (1, 10, 2)).astype(np.float32)
        check(emulated, logits, spans, 12.0, 4)
