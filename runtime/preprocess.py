"""Frame sampling and pixel preprocessing on the host, numpy only: the CPU path of the runtime.

Same arithmetic as `tpo.model.preprocess` (the PyTorch reference) so that backends agree:
- MLLM frames: bicubic antialiased resize of the uint8 frame (torch's separable filter, a = -0.5, support
  widened when downscaling), rounded half to even and clamped to uint8, then /255 and mean/std.
- mask frames: the same resize in float (no rounding), then /255 and mean/std (folded: x / (255 std) - mean / std).

The filter taps come from `tpo.kernels.reference` (the CUDA kernels' reference). An output reads only a short
contiguous run of inputs (about 4 x the scale), so one dense [out, in] matrix per axis is >90% zeros at camera
sizes (two dense products took 20-70 ms for a 720p-1080p frame). Each axis is cut into *bands* instead: a block
of consecutive outputs, the contiguous input range they read and their small dense weight matrix (cached per
size); a pass is one BLAS product per band, float32. Two layouts (`_plan`):
- interleaved (camera frames; one frame at a time): pass 1 (vertical) multiplies the frame's rows [h, w * C], as
  decoded, from the left; each band converts only the input rows it reads to float32, into a cache-sized buffer
  (column strips when the frame is wide), never the whole frame. Pass 2 multiplies the rows [height, w * C]
  from the right by the band's weights expanded to interleaved channels (kron with I_C: 3x the multiply-adds
  of one channel, cheaper here than transposing to planes); the caller's first elementwise pass (normalising,
  rounding) writes the planes [C, height, width];
- planar (small inputs, upscaling; all frames at once): the whole input to float32 planes [C * T, h, w] first,
  then both passes on the planes, the cheaper order first, the second writing the output in place.
Block sizes come from a cost model (`_cut`). The sums are the dense matrices' in another order: the results
agree with them and with torch to float32 rounding (bounds: tests/runtime/test_preprocess.py, docs/runtime.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tpo.kernels.reference import aa_bicubic_taps
from tpo.sampling import clip_frame_indices, middle_frame_indices  # noqa: F401  (the session's)

# The cost model of a pass, in multiply-adds: a fixed overhead per product (numpy and BLAS call, panel packing)
# and, per input value a band reads, its float32 conversion (interleaved pass 1) or operand packing. Tuned on
# the project's 2-core machine (tiny: 97x61 to 1920x1080 frames to 112 and 256); timings are flat around them.
PRODUCT_OVERHEAD = 400_000
CONVERT_COST = 4.0
PACK_COST = 1.0
BUFFER_VALUES = 1 << 17     # pass 1's band buffer (interleaved), float32 values: half a core's L2 (512 KiB)
# Planar while the whole input as float32 planes stays cache-sized: measured faster up to 200x150 frames and
# 8 frames of 97x61 (90K, 142K values), slower from 320x240 (230K) on, where converting and re-reading the
# whole frame costs more than the interleaved path's band-wise conversion and its final transpose.
PLANAR_VALUES = 160_000
BLOCK_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)

Band = tuple[int, int, int, int, np.ndarray]   # out0, out1, in0, in1, weights


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


@lru_cache(maxsize=256)
def _cut(in_size: int, out_size: int, n: int, per_input: float, calls: int = 1, buffer: int = 0
         ) -> tuple[tuple[tuple[int, int, int, int], ...], float]:
    """Outputs cut into equal blocks (out0, out1, in0, in1), the size minimising the modelled cost of products
    [outputs, inputs] x [inputs, n]: per block `calls` * PRODUCT_OVERHEAD + (outputs + per_input) * inputs * n
    (big blocks multiply zeros, small ones pay the overhead more often); with `buffer`, a block's products run
    in column strips of at most `buffer` input values. Returns the blocks and their cost."""
    _, _, lo, hi = _taps(in_size, out_size)
    best, best_cost = (), np.inf
    for b in BLOCK_CANDIDATES:
        b = min(b, out_size)
        starts = np.arange(0, out_size, b)
        ends = np.minimum(starts + b, out_size)
        blo = np.minimum.reduceat(lo, starts)
        inputs = np.maximum(np.maximum.reduceat(hi, starts), blo) - blo
        strips = _ceil_div(int(inputs.max()) * n, buffer) if buffer else 1
        cost = float(np.sum(calls * strips * PRODUCT_OVERHEAD + (ends - starts + per_input) * inputs * float(n)))
        if cost < best_cost:
            best_cost = cost
            best = tuple((int(s), int(e), int(a), int(a + k)) for s, e, a, k in zip(starts, ends, blo, inputs))
        if b == out_size:
            break
    return best, best_cost


def _band_weights(in_size: int, out_size: int, block: tuple[int, int, int, int]) -> np.ndarray:
    """[out1 - out0, in1 - in0] float64: the taps of outputs out0..out1 on inputs in0..in1."""
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
    m = m.astype(np.float32)
    m.flags.writeable = False
    return m


@dataclass(frozen=True)
class _Plan:
    """How [T, h, w, C] frames resize to [height, width]. layout: "interleaved" (vertical pass first, on the
    decoded rows) or "planar-vertical" / "planar-horizontal" (planes, that pass first). vertical: left factors
    [outputs, inputs]; horizontal: right factors [inputs, outputs], kron I_C when interleaved (ranges in
    pixels either way). strip: pass 1's column strip (interleaved)."""

    layout: str
    vertical: tuple[Band, ...]
    horizontal: tuple[Band, ...]
    strip: int = 0


LAYOUTS = ("interleaved", "planar-vertical", "planar-horizontal")


@lru_cache(maxsize=32)
def _plan(t: int, h: int, w: int, c: int, height: int, width: int, layout: str | None = None) -> _Plan:
    """Planar for small inputs (the cheaper order by the cost model: usually the axis reduced most first, an axis
    that grows last), else interleaved; each pass's cut by the cost model. `layout` forces one (tests)."""
    planes = c * t
    cuts = {
        "interleaved": lambda: (_cut(h, height, w * c, CONVERT_COST, buffer=BUFFER_VALUES),
                                _cut(w, width, height * c * c, PACK_COST / c)),
        "planar-vertical": lambda: (_cut(h, height, w, PACK_COST, calls=planes),
                                    _cut(w, width, planes * height, PACK_COST)),
        "planar-horizontal": lambda: (_cut(h, height, width, PACK_COST, calls=planes),
                                      _cut(w, width, planes * h, PACK_COST)),
    }
    if layout is None:
        if planes * h * w > PLANAR_VALUES:
            layout = "interleaved"
        else:
            layout = min(LAYOUTS[1:], key=lambda k: sum(cut[1] for cut in cuts[k]()))
    vcut, hcut = cuts[layout]()
    expand = np.eye(c) if layout == "interleaved" else np.eye(1)
    vertical = tuple(b + (_frozen(_band_weights(h, height, b)),) for b in vcut[0])
    horizontal = tuple(b + (_frozen(np.kron(_band_weights(w, width, b).T, expand)),) for b in hcut[0])
    strip = 0
    if layout == "interleaved":
        rows = max((b[3] - b[2] for b in vertical), default=1)
        strip = _ceil_div(w * c, _ceil_div(rows * w * c, BUFFER_VALUES))
    return _Plan(layout, vertical, horizontal, strip)


def _vertical_interleaved(src: np.ndarray, bands: tuple[Band, ...], height: int, strip: int) -> np.ndarray:
    """src [h, n] (uint8 or float) -> [height, n] float32: per column strip and band, only the rows the band
    reads are converted, into a buffer that stays in cache, then one left product."""
    n = src.shape[1]
    buf = np.empty(max(b[3] - b[2] for b in bands) * min(strip, n), np.float32)
    rows = np.empty((height, n), np.float32)
    for s0 in range(0, n, strip):
        s1 = min(s0 + strip, n)
        for o0, o1, i0, i1, m in bands:
            part = buf[: (i1 - i0) * (s1 - s0)].reshape(i1 - i0, s1 - s0)
            np.copyto(part, src[i0:i1, s0:s1])
            np.matmul(m, part, out=rows[o0:o1, s0:s1])
    return rows


def _horizontal(rows: np.ndarray, bands: tuple[Band, ...], width: int, c: int) -> np.ndarray:
    """rows [R, w * c] float32 -> [R, width * c]: one right product per band (c = 1: planes)."""
    out = np.empty((rows.shape[0], width * c), np.float32)
    for o0, o1, i0, i1, m in bands:
        np.matmul(rows[:, i0 * c:i1 * c], m, out=out[:, o0 * c:o1 * c])
    return out


def _vertical_planes(planes: np.ndarray, bands: tuple[Band, ...], out: np.ndarray) -> np.ndarray:
    """planes [P, h, w] float32 -> out [P, height, w]: one left product per band and plane."""
    for o0, o1, i0, i1, m in bands:
        np.matmul(m, planes[:, i0:i1], out=out[:, o0:o1])
    return out


def _resize(frames: np.ndarray, height: int, width: int, layout: str | None = None) -> np.ndarray:
    """[T, H, W, C] (uint8 or float) -> [C, T, height, width] float32, torch's antialiased bicubic before rounding:
    a view (interleaved: channels last in memory) that the caller's first elementwise pass makes contiguous."""
    t, h, w, c = frames.shape
    plan = _plan(t, h, w, c, height, width, layout)
    if plan.layout == "interleaved":
        done = np.empty((t, height, width * c), np.float32)
        for i in range(t):
            rows = _vertical_interleaved(frames[i].reshape(h, w * c), plan.vertical, height, plan.strip)
            done[i] = _horizontal(rows, plan.horizontal, width, c)                   # [height, width * C]
        return done.reshape(t, height, width, c).transpose(3, 0, 1, 2)
    planes = frames.transpose(3, 0, 1, 2).astype(np.float32).reshape(c * t, h, w)
    out = np.empty((c, t, height, width), np.float32)
    if plan.layout == "planar-vertical":
        rows = _vertical_planes(planes, plan.vertical, np.empty((c * t, height, w), np.float32))
        out.reshape(c * t * height, width)[...] = _horizontal(rows.reshape(-1, w), plan.horizontal, width, 1)
    else:
        cols = _horizontal(planes.reshape(-1, w), plan.horizontal, width, 1).reshape(c * t, h, width)
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
    - mean / std, two passes (the first also makes the resize contiguous); within float32 ulps of /255 then
    mean/std."""
    resized = _resize(frame[None], size, size)         # [3, 1, size, size]
    std32 = _per_channel(std, 4)
    out = np.empty(resized.shape, np.float32)
    np.multiply(resized, np.float32(1.0 / 255.0) / std32, out=out)
    out -= _per_channel(mean, 4) / std32
    return out.reshape(1, 3, size, size)


def tef(num_clips: int) -> np.ndarray:
    """[num_clips, 2] float32: each clip's start and end as a fraction of the video."""
    st = np.arange(num_clips, dtype=np.float32) / num_clips
    return np.stack([st, st + np.float32(1.0 / num_clips)], axis=1)
