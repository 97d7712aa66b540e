"""Banded antialiased-bicubic resampling on the host (numpy BLAS products, cv2.transpose): the engine behind
`runtime.preprocess`.

The filter taps come from `tpo.kernels.reference` (torch's separable filter, a = -0.5, support widened when
downscaling). An output reads only a short contiguous run of inputs (about 4 x the scale), so each axis is cut
into *bands* of BLOCK outputs, each with the contiguous input window it reads and its small dense weights.
Consecutive bands whose windows sit at a near-uniform stride form a *run*: one batched product (weights
[bands, BLOCK, taps] @ windows [bands, taps, n], the windows a strided view, a few zero taps of slack)
instead of one numpy call per band. BLOCK = 4 suits OpenBLAS's small-matrix kernels (4 columns at a time;
2 or 8 measured slower), and every product keeps M * N * K below BLAS_SINGLE, under which OpenBLAS runs a
product on one thread whatever its thread count (interface/gemm.c: one thread per 262144 multiply-adds).

Two layouts (`plan`):
- strips (camera frames; one frame at a time), output rows in slabs and, per slab, the input in column
  strips of about STRIP_VALUES values (shorter row segments convert slower). Pass 1 (vertical) multiplies
  the decoded rows [h, w * C] from the left, run by run; each input row is converted to float32 once, into
  a cache-sized buffer (rows the next run also reads move to the buffer's front). The slab's strip result
  [slab rows, strip] is cut into sub-strips, each transposed (cv2.transpose, in cache) into a rolling buffer
  of pixel rows [pixels, C * slab rows]; pass 2 (horizontal) multiplies those from the left as well, for
  the outputs whose inputs are all there, and the rows the next outputs need move to the buffer's front.
  A finished slab [width, C * slab rows] is transposed into the output. Both passes thus multiply with the
  long axis contiguous (1/3 of the multiply-adds of pass 2 on interleaved channels) and every buffer stays
  in cache: the frame itself is the only full-size array read.
- planar (small inputs, upscaling; all frames at once): the whole input to float32 planes [C * T, h, w],
  then both passes on the planes (`_cut`'s blocks), the cheaper order first.
The strips layout's buffers and the views its products use are built once per frame size and thread
(`_Workspace`, weights shared read-only). The sums are the dense matrices' in another order (zero taps
add exact zeros): results agree with them and with torch to float32 rounding.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from tpo.kernels.reference import aa_bicubic_taps

BLOCK = 4                   # outputs per band
SLACK = 1.15                # a run's window may be this much longer than its widest band's (+1 tap)
BLAS_SINGLE = 1 << 19       # M * N * K below this: OpenBLAS runs a product on one thread, whatever its setting
# strips layout, tuned on the project's 2-core machine (L2 1.25 MiB per core; 1280x720 and 1920x1080 frames
# to 256 and 112): the landscape is flat around these (within noise for 0.5-2x each)
STRIP_VALUES = 1920         # pass 1's column strip, values (whole pixels)
BUFFER_BYTES = 512 << 10    # pass 1's float32 row buffer (a run's input rows): at least this many bytes
SLAB_BYTES = 600_000        # a slab's strip result [slab rows, strip] float32: at most this many bytes
NARROW_BYTES = 200_000      # a transposed sub-strip [pixels * C, slab rows] float32: at most this many bytes
WORKSPACES = 4              # per thread, the buffers of the most recent frame sizes
# planar layout: cost model in multiply-adds (a fixed overhead per product, operand packing per input value
# a band reads); planar while the input as float32 planes stays cache-sized (measured faster up to 200x150
# frames and 8 frames of 97x61, 90K and 142K values; slower from 320x240, 230K, on)
PRODUCT_OVERHEAD = 400_000
PACK_COST = 1.0
PLANAR_VALUES = 160_000
BLOCK_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
LAYOUTS = ("strips", "planar-vertical", "planar-horizontal")

Band = tuple[int, int, int, int, np.ndarray]   # planar layout: out0, out1, in0, in1, weights


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
    """[out1 - out0, in1 - in0] float64: the taps of outputs out0..out1 on inputs in0..in1 (which hold all of
    their nonzero taps)."""
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


# ------------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class _Run:
    """Bands i < count of `rows` outputs from out0 + i * rows; band i reads inputs start + i * step .. + taps
    (weights [count, rows, taps] float32, zero outside the band's own taps)."""

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
    """Outputs cut into bands of BLOCK (the last two 3 and 2 rather than leaving 1: a one-row product may go
    to gemv, which OpenBLAS splits across threads far earlier): out0, size and [lo, hi) input range per band."""
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
    none = i0 >= i1                                   # a band without any tap reads one input, weight 0
    i0[none] = np.minimum(i1[none], in_size - 1).clip(0)
    i1[none] = i0[none] + 1
    sizes = np.asarray(sizes, np.int64)
    for a in (out0, sizes, i0, i1):
        a.flags.writeable = False                     # cached, shared
    return out0, sizes, i0, i1


def _fit(i0: np.ndarray, i1: np.ndarray) -> tuple[int, int, int]:
    """(start, step, taps): uniform-stride windows start + j * step .. + taps holding [i0[j], i1[j])."""
    k = len(i0)
    step = int(round((int(i0[-1]) - int(i0[0])) / (k - 1))) if k > 1 else 0
    j = np.arange(k)
    start = int((i0 - step * j).min())
    return start, step, int((i1 - start - step * j).max())


def _runs(in_size: int, out_size: int, b0: int, b1: int, lo: int, hi: int, max_span: int,
          columns: int) -> list[_Run]:
    """Bands b0..b1 grouped greedily into runs: same band size, windows within inputs [lo, hi) and at most
    SLACK longer than the widest band's, the run's inputs at most `max_span` and its products (a band times
    `columns`) below BLAS_SINGLE, unless a band alone exceeds these."""
    out0, sizes, i0, i1 = _bands(in_size, out_size)

    def fits(a: int, e: int) -> bool:
        start, step, taps = _fit(i0[a:e], i1[a:e])
        span = step * (e - a - 1) + taps
        return (sizes[a:e].min() == sizes[a:e].max() and start >= lo and start + span <= hi
                and taps <= SLACK * int((i1[a:e] - i0[a:e]).max()) + 1 and span <= max_span
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


# ------------------------------------------------------------------------------------------------ plans
@dataclass(frozen=True)
class _Narrow:
    """A sub-strip of pass 2: strip values v0..v1 transposed into rows `row` .. of the rolling buffer
    (pixel rows), then `runs` (windows relative to the buffer's first pixel), then the buffer's pixel rows
    carry[0]..carry[1] moved to its front (None: nothing to keep)."""

    v0: int
    v1: int
    row: int
    runs: tuple[_Run, ...]
    carry: tuple[int, int] | None


@dataclass(frozen=True)
class Plan:
    """How [T, h, w, C] frames resize to [height, width]. layout: one of LAYOUTS.
    strips: slabs = output row ranges; vertical = per slab, its pass-1 runs; strips = pass-1 column strips
    (value ranges); narrow = per strip, its sub-strips (the same for every slab); span = pass-1 buffer rows;
    roll = rolling buffer pixel rows.
    planar: vertical / horizontal = bands (left factors [outputs, inputs] / right factors [inputs, outputs])."""

    layout: str
    vertical: tuple
    horizontal: tuple = ()
    slabs: tuple[tuple[int, int], ...] = ()
    strips: tuple[tuple[int, int], ...] = ()
    narrow: tuple[tuple[_Narrow, ...], ...] = ()
    span: int = 0
    roll: int = 0


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
            best = tuple((int(s), int(e), int(a), int(a + k)) for s, e, a, k in zip(starts, ends, blo, inputs, strict=True))
        if b == out_size:
            break
    return best, best_cost


def _even(total: int, parts: int, unit: int = 1) -> list[int]:
    """Edges cutting total (a multiple of unit) into `parts` near-equal multiples of unit."""
    return [round(total // unit * i / parts) * unit for i in range(parts + 1)]


def _strips_plan(h: int, w: int, c: int, height: int, width: int) -> Plan:
    """The strips layout of [h, w, C] -> [height, width] (see the module docstring)."""
    n = w * c
    out0, _, i0, i1 = _bands(h, height)
    widest = int((i1 - i0).max())
    # pass-1 strips: a band's product [BLOCK, taps] x [taps, strip] stays below BLAS_SINGLE
    values = max(c, min(STRIP_VALUES, (BLAS_SINGLE - 1) // (BLOCK * widest)))
    edges = _even(n, _ceil_div(n, values), c)
    strips = tuple((a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a)
    columns = max(b - a for a, b in strips)
    step = max(1, round(BLOCK * h / height))
    span = max(BUFFER_BYTES // (4 * columns), widest + step)    # at least two bands a run
    cuts = np.searchsorted(out0, _even(height, _ceil_div(height, max(1, SLAB_BYTES // (4 * columns)))))
    slab_bands = [(int(b), int(e)) for b, e in zip(cuts, cuts[1:], strict=False) if e > b]
    slabs = tuple((int(out0[b]), int(out0[e]) if e < len(out0) else height) for b, e in slab_bands)
    vertical = tuple(tuple(_runs(h, height, b, e, 0, h, span, columns)) for b, e in slab_bands)
    # pass 2: sub-strips of at most NARROW_BYTES transposed into one rolling buffer per slab
    slab_values = c * max(y1 - y0 for y0, y1 in slabs)
    narrow_px = max(1, NARROW_BYTES // (4 * slab_values))
    _, _, j0, j1 = _bands(w, width)
    margin = int((SLACK - 1) * int((j1 - j0).max())) + 1   # room below the next band for a run's window
    narrow, base, done, roll = [], 0, 0, 1
    for a, b in strips:
        subs = []
        cuts = [a + v for v in _even(b - a, _ceil_div((b - a) // c, narrow_px), c)]
        for v0, v1 in zip(cuts, cuts[1:], strict=False):
            px1 = v1 // c
            ready = len(j0) if v1 == n else int(np.searchsorted(np.maximum.accumulate(j1), px1, side="right"))
            runs = _runs(w, width, done, ready, base, px1, 1 << 62, slab_values) if ready > done else []
            runs = [_Run(r.out0, r.rows, r.count, r.start - base, r.step, r.taps, r.weights) for r in runs]
            roll = max(roll, px1 - base)
            row, carry, done = (v0 // c - base) * c, None, ready
            if done < len(j0) and int(j0[done]) - margin > base:
                keep = int(j0[done]) - margin
                carry, base = (keep - base, px1 - base), keep
            subs.append(_Narrow(v0, v1, row, tuple(runs), carry))
        narrow.append(tuple(subs))
    rows = max(r.end - r.start for runs in vertical for r in runs)
    return Plan("strips", vertical, (), slabs, strips, tuple(narrow), rows, roll)


@lru_cache(maxsize=32)
def plan(t: int, h: int, w: int, c: int, height: int, width: int, layout: str | None = None) -> Plan:
    """Planar for small inputs (the cheaper order by the cost model: usually the axis reduced most first, an
    axis that grows last), else strips. `layout` forces one (tests)."""
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
    return Plan(layout, vertical, horizontal)


# ------------------------------------------------------------------------------------------------ strips
def _windows(buf: np.ndarray, run: _Run, first: int) -> np.ndarray:
    """run's windows in buf [R, n] (row 0 = input `first`): a strided view [count, taps, n]."""
    n, item = buf.shape[1], buf.itemsize
    return np.ndarray((run.count, run.taps, n), buf.dtype, buf, (run.start - first) * n * item,
                      (run.step * n * item, n * item, item))


def _products(run: _Run, x: np.ndarray, out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(weights, windows, out) for np.matmul, columns split so that each BLAS product stays below BLAS_SINGLE."""
    cols = max(1, (BLAS_SINGLE - 1) // (run.rows * run.taps))
    return [(run.weights, x[:, :, a:a + cols], out[:, :, a:a + cols]) for a in range(0, x.shape[2], cols)]


class _Arena:
    """float32 buffers carved from one zeroed allocation, 4 KiB aligned and staggered by a cache line each (so
    that they do not all alias in the cache), starting 2 MiB aligned in an allocation of at least 4 MiB,
    which numpy marks for transparent huge pages: their cache placement, and speed, then no longer depend on
    where the allocator's pages fall (separately allocated buffers varied up to 15% from run to run)."""

    ALIGN, STAGGER, HUGE = 4096, 64, 2 << 20

    def __init__(self, sizes: list[int]):
        need = sum(_ceil_div(4 * n + 16 * self.STAGGER, self.ALIGN) * self.ALIGN for n in sizes)
        self.raw = np.zeros(max(need + self.HUGE, 2 * self.HUGE), np.uint8)
        self.at = -self.raw.__array_interface__["data"][0] % self.HUGE
        self.count = 0

    def take(self, n: int) -> np.ndarray:
        start = self.at + self.STAGGER * (self.count % 16)
        self.at += _ceil_div(4 * n + 16 * self.STAGGER, self.ALIGN) * self.ALIGN
        self.count += 1
        return self.raw[start:start + 4 * n].view(np.float32)


def _transpose(src: np.ndarray, dst: np.ndarray) -> None:
    if cv2.transpose(src, dst) is not dst:                             # never: dst is a matching array
        raise RuntimeError("cv2.transpose did not write its output in place")


class _Workspace:
    """One thread's buffers for a strips plan, and every view its products use, built once."""

    def __init__(self, p: Plan, c: int, width: int):
        rows = max(y1 - y0 for y0, y1 in p.slabs)
        widths = sorted({b - a for a, b in p.strips})
        arena = _Arena([p.roll * c * rows, width * c * rows] + [n for cw in widths for n in (p.span * cw, rows * cw)])
        roll_flat, out_flat = arena.take(p.roll * c * rows), arena.take(width * c * rows)
        bufs = {cw: (arena.take(p.span * cw).reshape(p.span, cw), arena.take(rows * cw).reshape(rows, cw))
                for cw in widths}
        self.slabs = []
        for (y0, y1), runs in zip(p.slabs, p.vertical, strict=True):
            sh = y1 - y0
            roll = roll_flat[:p.roll * c * sh].reshape(p.roll * c, sh)      # rows: (pixel, C); columns: y
            roll_px = roll.reshape(p.roll, c * sh)
            out = out_flat[:width * c * sh].reshape(width, c * sh)           # [width, (C, y in slab)]
            strips = []
            for (a, b), subs in zip(p.strips, p.narrow, strict=True):
                buf, result = bufs[b - a]
                steps, lo, hi = [], 0, 0
                for run in runs:
                    move, first = None, run.start
                    if lo <= run.start < hi:            # rows the previous run read: move, don't convert
                        move, first = (buf[:hi - run.start], buf[run.start - lo:hi - lo]), hi
                    o = result[run.out0 - y0:run.out0 - y0 + run.count * run.rows].reshape(run.count, run.rows, b - a)
                    steps.append((move, buf[first - run.start:run.end - run.start], first, run.end,
                                  _products(run, _windows(buf, run, run.start), o)))
                    lo, hi = run.start, run.end
                narrow = []
                for sub in subs:
                    products = []
                    for run in sub.runs:
                        o = out[run.out0:run.out0 + run.count * run.rows].reshape(run.count, run.rows, c * sh)
                        products += _products(run, _windows(roll_px, run, 0), o)
                    move = None
                    if sub.carry is not None:
                        move = (roll_px[:sub.carry[1] - sub.carry[0]], roll_px[sub.carry[0]:sub.carry[1]])
                    narrow.append((result[:sh, sub.v0 - a:sub.v1 - a], roll[sub.row:sub.row + sub.v1 - sub.v0],
                                   products, move))
                strips.append((a, b, steps, narrow))
            finish = [out] if len(p.slabs) == 1 else [out[:, k * sh:(k + 1) * sh] for k in range(c)]
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


_local = threading.local()


def _workspace(p: Plan, key: tuple[int, ...]) -> _Workspace:
    """This thread's workspace for plan p (key: h, w, C, height, width), the most recent WORKSPACES kept."""
    cache = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    ws = cache.pop(key, None)
    if ws is None:
        ws = _Workspace(p, key[2], key[4])
        while len(cache) >= WORKSPACES:
            cache.pop(next(iter(cache)))
    cache[key] = ws
    return ws


# ------------------------------------------------------------------------------------------------ planar
def _horizontal(rows: np.ndarray, bands: tuple[Band, ...], width: int) -> np.ndarray:
    """rows [R, w] float32 -> [R, width]: one right product per band (rows split below BLAS_SINGLE)."""
    out = np.empty((rows.shape[0], width), np.float32)
    for o0, o1, i0, i1, m in bands:
        step = max(1, (BLAS_SINGLE - 1) // m.size)
        for r in range(0, rows.shape[0], step):
            np.matmul(rows[r:r + step, i0:i1], m, out=out[r:r + step, o0:o1])
    return out


def _vertical(planes: np.ndarray, bands: tuple[Band, ...], out: np.ndarray) -> np.ndarray:
    """planes [P, h, w] float32 -> out [P, height, w]: one left product per band and plane."""
    for o0, o1, i0, i1, m in bands:
        np.matmul(m, planes[:, i0:i1], out=out[:, o0:o1])
    return out


def resize(frames: np.ndarray, height: int, width: int, layout: str | None = None) -> np.ndarray:
    """[T, H, W, C] (uint8 or float) -> [C, T, height, width] float32, torch's antialiased bicubic before
    rounding: a fresh array, C-contiguous but for strips with T > 1 (a transposed view of [T, C, ...])."""
    t, h, w, c = frames.shape
    p = plan(t, h, w, c, height, width, layout)
    if p.layout == "strips":
        ws = _workspace(p, (h, w, c, height, width))
        done = np.empty((t, c, height, width), np.float32)
        for i in range(t):
            ws.run(frames[i].reshape(h, w * c), done[i])
        return done.transpose(1, 0, 2, 3)
    planes = frames.transpose(3, 0, 1, 2).astype(np.float32).reshape(c * t, h, w)
    out = np.empty((c, t, height, width), np.float32)
    if p.layout == "planar-vertical":
        rows = _vertical(planes, p.vertical, np.empty((c * t, height, w), np.float32))
        out.reshape(c * t * height, width)[...] = _horizontal(rows.reshape(-1, w), p.horizontal, width)
    else:
        cols = _horizontal(planes.reshape(-1, w), p.horizontal, width).reshape(c * t, h, width)
        _vertical(cols, p.vertical, out.reshape(c * t, height, width))
    return out
