"""Span decoding for the temporal head on a device: the top-k moment windows of one clip, best first.

    windows = decode_spans(device, logits, spans, duration=31.5, top_k=5)   # SpanWindows

`logits`: CG-DETR's class logits [queries, 2] (or [1, queries, 2]), float32, class 0 = foreground.
`spans`: its (centre, width) per query [queries, 2], float32, as fractions of the clip. What the kernel
computes: see span_decode.cu (softmax score, clamping, optional rounding, stable descending sort).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tpo.errors import InputError
from tpo.kernels.arrays import ArrayView, view_of
from tpo.kernels.device import Device
from tpo.kernels.params import SpanParams
from tpo.kernels.sources import SPAN_DECODE

MAX_QUERIES = 1024  # one block, one thread per query


@dataclass(frozen=True)
class SpanWindows:
    """windows: [top_k, 3] float32 (start_s, end_s, score), best first; queries: [top_k] int32 query index."""

    windows: np.ndarray
    queries: np.ndarray


def _squeeze_pairs(view: ArrayView, name: str) -> tuple[int, ...]:
    shape, strides = view.shape, view.strides
    if len(shape) == 3 and shape[0] == 1:
        shape, strides = shape[1:], strides[1:]
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(f"{name} must be [queries, 2] (or [1, queries, 2]), got shape {view.shape}")
    if view.dtype != np.float32:
        raise InputError(f"{name} dtype {view.dtype} is not float32")
    if strides != (8, 4):
        raise InputError(f"{name} must be contiguous, got strides {view.strides}")
    return shape


def plan_span_decode(
    logits: ArrayView,
    spans: ArrayView,
    duration: float,
    top_k: int,
    round_to: float,
    windows_ptr: int,
    order_ptr: int,
) -> tuple[SpanParams, tuple[int, int, int], tuple[int, int, int]]:
    """Check everything and build the launch: (params, grid, block)."""
    queries = _squeeze_pairs(logits, "span logits")[0]
    if _squeeze_pairs(spans, "spans")[0] != queries:
        raise InputError(f"spans have {spans.shape} but logits {logits.shape}: one (centre, width) per query")
    if not 1 <= queries <= MAX_QUERIES:
        raise InputError(f"span decode takes 1 to {MAX_QUERIES} queries, got {queries}")
    if not 1 <= top_k <= queries:
        raise InputError(f"top_k {top_k} must be between 1 and the number of queries ({queries})")
    if not (math.isfinite(duration) and duration > 0):
        raise InputError(f"clip duration must be a positive number of seconds, got {duration}")
    if not (math.isfinite(round_to) and round_to >= 0):
        raise InputError(f"round_to must be >= 0 seconds (0: no rounding), got {round_to}")
    p = SpanParams()
    p.logits, p.spans, p.windows, p.order = logits.ptr, spans.ptr, windows_ptr, order_ptr
    p.duration, p.round_to = float(duration), float(round_to)
    p.queries, p.top_k = queries, top_k
    threads = -(-queries // 32) * 32
    return p, (1, 1, 1), (threads, 1, 1)


def decode_spans(
    device: Device, logits, spans, *, duration: float, top_k: int, round_to: float = 0.0, stream: int = 0
) -> SpanWindows:
    """Decode on the device and return the top_k windows on the host (waits for them)."""
    logits, spans = view_of(logits, "span logits"), view_of(spans, "spans")
    device.check_reachable(logits, "span logits")
    device.check_reachable(spans, "spans")
    out = device.scratch("span_windows", 16 * max(int(top_k), 1))  # 12 bytes of window + 4 of index each
    order_ptr = out + 12 * max(int(top_k), 1)
    params, grid, block = plan_span_decode(logits, spans, duration, top_k, round_to, out, order_ptr)
    device.launch(SPAN_DECODE, grid, block, params, stream)
    windows = np.zeros((top_k, 3), np.float32)
    queries = np.zeros(top_k, np.int32)
    device.copy_to_host(windows, out, stream)
    device.copy_to_host(queries, order_ptr, stream)
    return SpanWindows(windows, queries)
