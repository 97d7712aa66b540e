"""Frame sampling and pixel preprocessing on the host, numpy and OpenCV only: the CPU path of the runtime.

Same arithmetic as `tpo.model.preprocess` (the PyTorch reference) so that backends agree:
- MLLM frames: bicubic antialiased resize of the uint8 frame (torch's separable filter, a = -0.5, support
  widened when downscaling), rounded half to even and clamped to uint8, then /255 and mean/std.
- mask frames: the same resize in float (no rounding), then /255 and mean/std (folded: x / (255 std) - mean / std).

The filter taps come from `tpo.kernels.reference` (the CUDA kernels' reference). An output reads only a short
contiguous run of inputs (about 4 x the scale), so each axis is cut into *bands* of BLOCK outputs, each with
the contiguous input window it reads and its small dense weight matrix. Consecutive bands whose windows sit
at a near-uniform stride form a *run*: one batched product (weights [bands, BLOCK, taps] @ windows [bands,
taps, n], the windows a strided view, a few zero taps of slack) instead of one numpy call per band. BLOCK = 4
matches OpenBLAS's small-matrix kernels (4 columns at a time); every product keeps M * N * K below
BLAS_SINGLE, under which OpenBLAS never splits a product across threads (gemm.c: one thread per 262144
multiply-adds), so these products run the same whatever its thread count.

Two layouts (`_plan`):
- strips (camera frames; one frame at a time). Pass 1 (vertical) multiplies the decoded rows [h, w * C]
  from the left, in column strips of about STRIP_VALUES values (long row segments convert fast) and runs
  whose input rows are converted to float32 once, into a cache-sized buffer (a run's rows that the next run
  also reads are moved to the buffer's front, not converted again). A strip's result [height, strip] is cut
  into narrow sub-strips, each transposed (cv2.transpose, in cache) into a rolling buffer of pixel rows
  [pixels, C * height]; pass 2 (horizontal) then multiplies those from the left as well, for the outputs
  whose inputs are all there, and the rows the next outputs still need move to the buffer's front. Both
  passes thus multiply with the long axis contiguous (no weights expanded over channels, 1/3 of pass 2's
  multiply-adds) and nothing of full-frame size leaves the cache but the frame itself. The result
  [width, C * height] is transposed once more into [C, height, width].
- planar (small inputs, upscaling; all frames at once): the whole input to float32 planes [C * T, h, w] first,
  then both passes on the planes, the cheaper order first, the second writing the output in place.
Buffers and the views the products use are built once per frame size and thread (`_Workspace`). The sums
are the dense matrices' in another order (zero taps add exact zeros): the results agree with them and with
torch to float32 rounding (bounds: tests/runtime/test_preprocess.py, docs/runtime.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from tpo.kernels.reference import aa_bicubic_taps
from tpo.sampling import clip_frame_indices, middle_frame_indices  # noqa: F401  (the session's)

BLOCK = 4                   # outputs per band (OpenBLAS's small kernels work on 4 columns at a time)
SLACK = 1.15                # a run's window may be this much longer than its widest band's (+1 tap)
BLAS_SINGLE = 1 << 19       # M * N * K below this: OpenBLAS runs a product on one thread, whatever its setting
# strips layout, tuned on the project's 2-core machine (L2 1.25 MiB per core; 1280x720, 1920x1080 to 256, 112)
STRIP_VALUES = 1920         # pass 1's column strip: converting shorter row segments is slower per value
BUFFER_BYTES = 512 << 10    # pass 1's float32 row buffer (a run's input rows) at least this many bytes
NARROW_BYTES = 200_000       # a transposed sub-strip [pixels * C, slab rows] float32 at most this many bytes
SLAB_BYTES = 800_000         # a slab's strip result [rows, strip] float32 at most this many bytes
CARRY = True
# The planar layout's cost model, in multiply-adds: a fixed overhead per product (numpy and BLAS call) and,
# per input value a band reads, its operand packing.
PRODUCT_OVERHEAD = 400_000
PACK_COST = 1.0
# Planar while the whole input as float32 planes stays cache-sized: measured faster up to 200x150 frames and
# 8 frames of 97x61 (90K, 142K values), slower from 320x240 (230K) on.
PLANAR_VALUES = 160_000
BLOCK_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LAYOUTS = ("strips", "planar-vertical", "planar-horizontal")

Band = tuple[int, int, int, int, np.ndarray]   # out0, out1, in0, in1, weights (planar layout)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index, weight) [out, taps] float64, and per output the [lo, hi) input range of its nonzero taps
    (padding taps have weight 0 and a clamped index; an output without any tap reads an empty range)."""
    index, weight = aa_bicubic_taps(in_size, out_size)
    nz = weight != 0
    lo = np.where(nz, index, in_size).min(axis=1)
    hi = np.where(nz, index + 1, 0).max(axis=1)
    empty = ~nz.any(axis=1)
    lo[empty], hi[empty] = 0, 0
    return index, weight, lo, hi


def _band_weights(in_size: int, out_size: int, block: tuple[int, int, int, int]) -> np.ndarray:
    """[out1 - out0, in1 - in0] float64: the taps of outputs out0..out1 on inputs in0..in1 (which must hold
    all of their nonzero taps)."""
    index, weight, _, _ = _taps(in_size, out_size)
    out0, out1, in0, in1 = block
    m = np.zeros((out1 - out0, in1 - in0), np.float64)
    idx, wt = index[out0:out1], weight[out0:out1]
    nz = wt != 0
    rows = np.broadcast_to(np.arange(out1 - out0)[:, None], idx.shape)
    np.add.at(m, (rows[nz], idx[nz] - in0), wt[nz])
    return m


def _frozen(m: np.ndarray) -> np.ndarray:
    """float32, read-only: cached weights shared by every call (and thread)."""
    m = np.ascontiguousarray(m, np.float32)
    m.flags.writeable = False
    return m


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class _Run:
    """Bands i < count of `rows` outputs from out0 + i * rows; band i reads inputs start + i * step ..
    + taps (weights [count, rows, taps] float32, zero outside the band's own taps)."""

    out0: int
    rows: int
    count: int
    start: int
    step: int
    taps: int
    weights: np.ndarray

    @property
    def end(self) -> int:
        """One past the last input the run reads."""
        return self.start + self.step * (self.count - 1) + self.taps


@lru_cache(maxsize=64)
def _bands(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outputs cut into bands of BLOCK (the last two 3 and 2 rather than leaving 1: a one-row product may
    go to gemv, which OpenBLAS threads much earlier): out0, size, and each band's [lo, hi) input range."""
    sizes = [BLOCK] * (out_size // BLOCK)
    rest = out_size % BLOCK
    if rest == 1 and sizes:
        sizes[-1:] = [BLOCK - 1, 2]
    elif rest:
        sizes.append(rest)
    out0 = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    _, _, lo, hi = _taps(in_size, out_size)
    empty = lo >= hi
    i0 = np.minimum.reduceat(np.where(empty, in_size, lo), out0)
    i1 = np.maximum.reduceat(np.where(empty, 0, hi), out0)
    none = i0 >= i1                                   # bands without any tap read one (zero-weight) input
    i0[none] = np.minimum(i1[none], in_size - 1).clip(0)
    i1[none] = i0[none] + 1
    return out0, np.asarray(sizes, np.int64), i0, i1


def _fit(i0: np.ndarray, i1: np.ndarray) -> tuple[int, int, int]:
    """(start, step, taps): uniform-stride windows start + j * step .. + taps holding [i0[j], i1[j])."""
    k = len(i0)
    step = int(round((int(i0[-1]) - int(i0[0])) / (k - 1))) if k > 1 else 0
    j = np.arange(k)
    start = int((i0 - step * j).min())
    return start, step, int((i1 - start - step * j).max())


def _runs(in_size: int, out_size: int, b0: int, b1: int, lo: int, hi: int, max_span: int,
          columns: int) -> list[_Run]:
    """Bands b0..b1 grouped greedily into runs: same band size, windows within inputs [lo, hi), at most SLACK
    longer than the widest band's, a run's inputs at most `max_span` (unless one band alone needs more), and
    each product (one band of the run times `columns`) below BLAS_SINGLE while the band alone is."""
    out0, sizes, i0, i1 = _bands(in_size, out_size)

    def fits(a: int, e: int) -> bool:
        start, step, taps = _fit(i0[a:e], i1[a:e])
        widest = int((i1[a:e] - i0[a:e]).max())
        return (sizes[a:e].min() == sizes[a:e].max() and start >= lo and start + step * (e - a - 1) + taps <= hi
                and taps <= SLACK * widest + 1 and step * (e - a - 1) + taps <= max_span
                and int(sizes[a]) * taps * columns < BLAS_SINGLE)

    runs, b = [], b0
    while b < b1:
        e = b + 1
        while e < b1 and fits(b, e + 1):
            e += 1
        start, step, taps = _fit(i0[b:e], i1[b:e])
        rows = int(sizes[b])
        weights = np.stack([_band_weights(in_size, out_size, (int(out0[j]), int(out0[j]) + rows,
                                                              start + step * (j - b), start + step * (j - b) + taps))
                            for j in range(b, e)])
        runs.append(_Run(int(out0[b]), rows, e - b, start, step, taps, _frozen(weights)))
        b = e
    return runs


def _band_after(in_size: int, out_size: int, px: int) -> int:
    """The number of leading bands whose inputs all lie below `px`."""
    _, _, _, i1 = _bands(in_size, out_size)
    return int(np.searchsorted(np.maximum.accumulate(i1), px, side="right"))


# --------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class _Narrow:
    """One sub-strip of pass 2: values v0..v1 of the strip result transposed to rows `row` .. of a slab's
    rolling buffer (pixel rows), then `runs` (windows relative to the buffer's first pixel), then the
    buffer's pixel rows carry[0]..carry[1] moved to its front (None: nothing to keep)."""

    v0: int
    v1: int
    row: int
    runs: tuple[_Run, ...]
    carry: tuple[int, int] | None


@dataclass(frozen=True)
class _Plan:
    """How [T, h, w, C] frames resize to [height, width]. layout: "strips", "planar-vertical" or
    "planar-horizontal" (planes, that pass first).
    strips: vertical = pass-1 runs per slab of output rows (slabs: their [y0, y1)); strips = pass-1 column
    strips (value ranges); narrow = per strip, its sub-strips (the same for every slab); span = pass-1 buffer
    rows; roll = rolling buffer pixel rows.
    planar: vertical / horizontal = bands (left factors [outputs, inputs] / right factors [inputs, outputs])."""

    layout: str
    vertical: tuple
    horizontal: tuple = ()
    strips: tuple[tuple[int, int], ...] = ()
    narrow: tuple[tuple[_Narrow, ...], ...] = ()
    span: int = 0
    roll: int = 0
    slabs: tuple[tuple[int, int], ...] = ()


def _cut(in_size: int, out_size: int, n: int, per_input: float, calls: int = 1
         ) -> tuple[tuple[tuple[int, int, int, int], ...], float]:
    """Planar layout: outputs cut into equal blocks (out0, out1, in0, in1), the size minimising the modelled
    cost of products [outputs, inputs] x [inputs, n]: per block `calls` * PRODUCT_OVERHEAD + (outputs +
    per_input) * inputs * n (big blocks multiply zeros, small ones pay the overhead more often)."""
    _, _, lo, hi = _taps(in_size, out_size)
    best, best_cost = (), np.inf
    for b in BLOCK_CANDIDATES:
        b = min(b, out_size)
        starts = np.arange(0, out_size, b)
        ends = np.minimum(starts + b, out_size)
        blo = np.minimum.reduceat(lo, starts)
        inputs = np.maximum(np.maximum.reduceat(hi, starts), blo) - blo
        cost = float(np.sum(calls * PRODUCT_OVERHEAD + (ends - starts + per_input) * inputs * float(n)))
        if cost < best_cost:
            best_cost = cost
            best = tuple((int(s), int(e), int(a), int(a + k)) for s, e, a, k in zip(starts, ends, blo, inputs))
        if b == out_size:
            break
    return best, best_cost


def _strips_plan(h: int, w: int, c: int, height: int, width: int) -> _Plan:
    n = w * c
    # pass 1: column strips of about STRIP_VALUES values (whole pixels), narrower when a band's product
    # [BLOCK, taps] x [taps, strip] would reach BLAS_SINGLE; output rows in slabs of bands whose strip
    # result [rows, strip] stays cache-sized
    out0, sizes, i0, i1 = _bands(h, height)
    widest = int((i1 - i0).max())
    values = max(c, min(STRIP_VALUES, (BLAS_SINGLE - 1) // (BLOCK * widest)))
    count = _ceil_div(n, values)
    edges = [round(w * i / count) * c for i in range(count + 1)]
    strips = tuple((a, b) for a, b in zip(edges, edges[1:]) if b > a)
    columns = max(b - a for a, b in strips)
    span = max(BUFFER_BYTES // (4 * columns), widest)
    slab_rows = max(1, SLAB_BYTES // (4 * columns))
    slab_bands, b = [], 0
    while b < len(out0):
        e = b + 1
        while e < len(out0) and out0[e] + sizes[e] - out0[b] <= slab_rows:
            e += 1
        slab_bands.append((b, e))
        b = e
    slabs = tuple((int(out0[b]), int(out0[e - 1] + sizes[e - 1])) for b, e in slab_bands)
    vertical = tuple(tuple(_runs(h, height, b, e, 0, h, span, columns)) for b, e in slab_bands)
    # pass 2: sub-strips of at most NARROW_BYTES transposed, a rolling buffer of pixel rows per slab
    slab_values = c * max(y1 - y0 for y0, y1 in slabs)
    narrow_px = max(1, NARROW_BYTES // (4 * slab_values))
    _, _, j0, j1 = _bands(w, width)
    out_bands = len(j0)
    margin = int((SLACK - 1) * int((j1 - j0).max())) + 1    # room below the next band for a run's window
    narrow, base, done, roll = [], 0, 0, 1
    for a, b in strips:
        parts = _ceil_div((b - a) // c, narrow_px)
        cuts = [a + round((b - a) // c * i / parts) * c for i in range(parts + 1)]
        subs = []
        for v0, v1 in zip(cuts, cuts[1:]):
            px1 = v1 // c
            ready = out_bands if v1 == n else _band_after(w, width, px1)
            runs = _runs(w, width, done, ready, base, px1, 1 << 62, slab_values) if ready > done else []
            runs = [_Run(r.out0, r.rows, r.count, r.start - base, r.step, r.taps, r.weights) for r in runs]
            roll = max(roll, px1 - base)
            row, carry, done = (v0 // c - base) * c, None, ready
            if done < out_bands and int(j0[done]) - margin > base:
                keep = int(j0[done]) - margin
                carry, base = (keep - base, px1 - base), keep
            subs.append(_Narrow(v0, v1, row, tuple(runs), carry))
        narrow.append(tuple(subs))
    rows = max(r.end - r.start for runs in vertical for r in runs)
    return _Plan("strips", vertical, (), strips, tuple(narrow), rows, roll, slabs)


@lru_cache(maxsize=32)
def _plan(t: int, h: int, w: int, c: int, height: int, width: int, layout: str | None = None) -> _Plan:
    """Planar for small inputs (the cheaper order by the cost model: usually the axis reduced most first, an axis
    that grows last), else strips. `layout` forces one (tests)."""
    planes = c * t
    cuts = {
        "planar-vertical": lambda: (_cut(h, height, w, PACK_COST, calls=planes),
                                    _cut(w, width, planes * height, PACK_COST)),
        "planar-horizontal": lambda: (_cut(h, height, width, PACK_COST, calls=planes),
                                      _cut(w, width, planes * h, PACK_COST)),
    }
    if layout is None:
        if planes * h * w > PLANAR_VALUES:
            layout = "strips"
        else:
            layout = min(cuts, key=lambda k: sum(cut[1] for cut in cuts[k]()))
    if layout == "strips":
        return _strips_plan(h, w, c, height, width)
    vcut, hcut = cuts[layout]()
    vertical = tuple(b + (_frozen(_band_weights(h, height, b)),) for b in vcut[0])
    horizontal = tuple(b + (_frozen(_band_weights(w, width, b).T),) for b in hcut[0])
    return _Plan(layout, vertical, horizontal)


# --------------------------------------------------------------------------------------------- strips
def _windows(buf: np.ndarray, run: _Run, first: int) -> np.ndarray:
    """run's windows in `buf` (rows [R, n], buf row 0 = input `first`): a view [count, taps, n]."""
    n = buf.shape[1]
    item = buf.itemsize
    return np.ndarray((run.count, run.taps, n), buf.dtype, buf, (run.start - first) * n * item,
                      (run.step * n * item, n * item, item))


def _products(run: _Run, x: np.ndarray, out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(weights, windows, out) triples for np.matmul, the columns split so that each BLAS product stays
    below BLAS_SINGLE."""
    n = x.shape[2]
    cols = max(1, (BLAS_SINGLE - 1) // (run.rows * run.taps))
    return [(run.weights, x[:, :, a:a + cols], out[:, :, a:a + cols]) for a in range(0, n, cols)]


class _Workspace:
    """One thread's buffers for a strips plan, and every view the products use, built once. Slab by slab
    (all strips, then the slab's result transposed out), so that a slab's buffers stay in cache."""

    def __init__(self, plan: _Plan, c: int, height: int, width: int):
        rows = max(y1 - y0 for y0, y1 in plan.slabs)
        roll_flat = np.zeros(plan.roll * c * rows, np.float32)
        out_flat = np.empty(width * c * rows, np.float32)
        bufs = {b - a: (np.zeros((plan.span, b - a), np.float32), np.empty((rows, b - a), np.float32))
                for a, b in plan.strips}
        self.c = c
        self.slabs = []
        for (y0, y1), runs in zip(plan.slabs, plan.vertical):
            sh = y1 - y0
            roll = roll_flat[:plan.roll * c * sh].reshape(plan.roll * c, sh)
            roll_px = roll.reshape(plan.roll, c * sh)
            out = out_flat[:width * c * sh].reshape(width, c * sh)          # [width, (C, y in slab)]
            strips = []
            for (a, b), subs in zip(plan.strips, plan.narrow):
                cw = b - a
                buf, result = bufs[cw]
                steps, lo, hi = [], 0, 0
                for run in runs:
                    if CARRY and lo <= run.start < hi:  # rows the previous run read: move, don't convert
                        move = (buf[:hi - run.start], buf[run.start - lo:hi - lo])
                        first = hi
                    else:
                        move, first = None, run.start
                    x = _windows(buf, run, run.start)
                    r0 = run.out0 - y0
                    o = result[r0:r0 + run.count * run.rows].reshape(run.count, run.rows, cw)
                    steps.append((move, buf[first - run.start:run.end - run.start], first, run.end,
                                  _products(run, x, o)))
                    lo, hi = run.start, run.end
                narrow = []
                for sub in subs:
                    products = []
                    for run in sub.runs:
                        x = _windows(roll_px, run, 0)
                        o = out[run.out0:run.out0 + run.count * run.rows].reshape(run.count, run.rows, c * sh)
                        products += _products(run, x, o)
                    move = None
                    if sub.carry is not None:
                        k0, k1 = sub.carry
                        move = (roll_px[:k1 - k0], roll_px[k0:k1])
                    narrow.append((result[:sh, sub.v0 - a:sub.v1 - a], roll[sub.row:sub.row + sub.v1 - sub.v0],
                                   products, move))
                strips.append((a, b, steps, narrow))
            finish = [out] if len(plan.slabs) == 1 else [out[:, k * sh:(k + 1) * sh] for k in range(c)]
            self.slabs.append((y0, y1, strips, finish))

    def run(self, src: np.ndarray, dst: np.ndarray) -> None:
        """src [h, w * C] (uint8 or float) -> dst [C, height, width] float32."""
        for y0, y1, strips, finish in self.slabs:
            for a, b, steps, narrow in strips:
                for move, buf, first, end, products in steps:
                    if move is not None:
                        np.copyto(*move)
                    np.copyto(buf, src[first:end, a:b])
                    for weights, x, out in products:
                        np.matmul(weights, x, out=out)
                for part, roll, products, move in narrow:
                    cv2.transpose(part, roll)
                    for weights, x, out in products:
                        np.matmul(weights, x, out=out)
                    if move is not None:
                        np.copyto(*move)
            if len(finish) == 1:
                _transpose(finish[0], dst.reshape(-1, dst.shape[2]))
            else:
                for k, part in enumerate(finish):
                    _transpose(part, dst[k, y0:y1])


def _transpose(src: np.ndarray, dst: np.ndarray) -> None:
    if cv2.transpose(src, dst) is not dst:                             # never: dst is a matching array
        raise RuntimeError("cv2.transpose did not write its output in place")


_local = threading.local()
WORKSPACES = 4              # per thread, the most recent frame sizes' buffers


def _workspace(plan: _Plan, key: tuple) -> _Workspace:
    cache = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    ws = cache.pop(key, None)
    if ws is None:
        ws = _Workspace(plan, key[2], key[3], key[4])
        while len(cache) >= WORKSPACES:
            cache.pop(next(iter(cache)))
    cache[key] = ws                                  # most recent last
    return ws


def _resize_strips(frames: np.ndarray, height: int, width: int, plan: _Plan) -> np.ndarray:
    """[T, h, w, C] -> [T, C, height, width] float32, a fresh array."""
    t, h, w, c = frames.shape
    ws = _workspace(plan, (h, w, c, height, width))
    done = np.empty((t, c, height, width), np.float32)
    for i in range(t):
        ws.run(frames[i].reshape(h, w * c), done[i])
    return done


# --------------------------------------------------------------------------------------------- planar
def _horizontal(rows: np.ndarray, bands: tuple[Band, ...], width: int) -> np.ndarray:
    """rows [R, w] float32 -> [R, width]: one right product per band, rows split to stay below BLAS_SINGLE."""
    out = np.empty((rows.shape[0], width), np.float32)
    for o0, o1, i0, i1, m in bands:
        step = max(1, (BLAS_SINGLE - 1) // m.size)
        for r in range(0, rows.shape[0], step):
            np.matmul(rows[r:r + step, i0:i1], m, out=out[r:r + step, o0:o1])
    return out


def _vertical_planes(planes: np.ndarray, bands: tuple[Band, ...], out: np.ndarray) -> np.ndarray:
    """planes [P, h, w] float32 -> out [P, height, w]: one left product per band and plane."""
    for o0, o1, i0, i1, m in bands:
        np.matmul(m, planes[:, i0:i1], out=out[:, o0:o1])
    return out


def _resize(frames: np.ndarray, height: int, width: int, layout: str | None = None) -> np.ndarray:
    """[T, H, W, C] (uint8 or float) -> [C, T, height, width] float32, torch's antialiased bicubic before rounding:
    a fresh array, or a transposed view of one (strips, T > 1) that the caller's first pass makes contiguous."""
    t, h, w, c = frames.shape
    plan = _plan(t, h, w, c, height, width, layout)
    if plan.layout == "strips":
        return _resize_strips(frames, height, width, plan).transpose(1, 0, 2, 3)
    planes = frames.transpose(3, 0, 1, 2).astype(np.float32).reshape(c * t, h, w)
    out = np.empty((c, t, height, width), np.float32)
    if plan.layout == "planar-vertical":
        rows = _vertical_planes(planes, plan.vertical, np.empty((c * t, height, w), np.float32))
        out.reshape(c * t * height, width)[...] = _horizontal(rows.reshape(-1, w), plan.horizontal, width)
    else:
        cols = _horizontal(planes.reshape(-1, w), plan.horizontal, width).reshape(c * t, h, width)
        _vertical_planes(cols, plan.vertical, out.reshape(c * t, height, width))
    return out


def resize_frames(frames: np.ndarray, height: int, width: int, layout: str | None = None) -> np.ndarray:
    """[T, H, W, C] (uint8 or float) -> [C, T, height, width] float32 C-contiguous: torch's antialiased bicubic
    before rounding. `layout` (one of LAYOUTS) overrides the plan's choice (tests)."""
    return np.ascontiguousarray(_resize(frames, height, width, layout))


def resize_chw(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, 3] (uint8 or float) -> [3, height, width] float32, torch's antialiased bicubic (before rounding)."""
    return resize_frames(frame[None], height, width)[:, 0]


def _per_channel(values, ndim: int) -> np.ndarray:
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * (ndim - 1))


def mllm_pixels(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [1, 3, T, size, size] float32, the vision encoder's input: levels rounded half to
    even and clamped, then (x * (1 / 255) - mean) / std as the GPU kernel and torch (up to float32 ulps)."""
    resized = _resize(frames, size, size)
    out = np.empty(resized.shape, np.float32)
    np.rint(resized, out=out)                          # also makes it contiguous
    np.clip(out, 0, 255, out=out)
    out *= np.float32(1.0 / 255.0)
    out -= _per_channel(mean, out.ndim)
    out /= _per_channel(std, out.ndim)
    return out[None]


def mllm_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [3, size, size] float32 (the vision encoder's input per frame)."""
    return mllm_pixels(frame[None], size, mean, std)[0, :, 0]


def mask_frame(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [1, 3, size, size] float32 (the mask image encoder's input): x * (1 / (255 std))
    - mean / std, in place on the resize (a fresh array); within float32 ulps of /255 then mean/std."""
    out = _resize(frame[None], size, size).reshape(1, 3, size, size)   # one frame: contiguous either layout
    std32 = _per_channel(std, 3)
    out[0] *= np.float32(1.0 / 255.0) / std32
    out[0] -= _per_channel(mean, 3) / std32
    return out


def tef(num_clips: int) -> np.ndarray:
    """[num_clips, 2] float32: each clip's start and end as a fraction of the video."""
    st = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([st, st + np.float32(1.0 / num_clips)], axis=1)
