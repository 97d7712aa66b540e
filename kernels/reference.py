"""Plain numpy references for every kernel (float64 where the kernel uses float32).

These define what the kernels must compute; tests compare the kernels (CPU-emulated, or on a GPU in
tests/gpu) against them. Preprocessing follows torchvision's resize of a uint8 tensor on the GPU (and
torchvision 1.x's functional resize on any device): the image goes to float32, through torch's
interpolate(mode="bicubic", antialias=True) -- separable, PIL's cubic filter with a = -0.5, the
support widened by the downscale factor, weights normalised per output pixel, horizontal pass then
vertical -- then clamp to [0, 255], round half to even, back to uint8. torchvision's v2 resize of a
uint8 tensor on the CPU takes torch's native uint8 kernel instead, whose fixed-point weights move a
pixels by 1, and by more where upsampling overshoots, since it keeps the horizontal pass in uint8.
"""

from __future__ import annotations

import numpy as np

from tpo.kernels.preprocess import IMAGENET_MEAN, IMAGENET_STD


def aa_cubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic filter, a = -0.5 (torch's antialiased bicubic)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def aa_bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight), both [out_size, taps]: output i = sum_t weight[i, t] * input[index[i, t]].
    Padding taps have weight 0. Windows as torch's _compute_weights_aa: [start, stop) around
    center = scale * (i + 0.5), support 2 * scale when downscaling (2 otherwise), int() truncation."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1 else 2.0
    invscale = 1.0 / scale if scale >= 1 else 1.0
    center = scale * (np.arange(out_size) + 0.5)
    start = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    stop = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    index = start[:, None] + np.arange(int((stop - start).max()))[None, :]  # (out, taps)
    weight = np.where(index < stop[:, None], aa_cubic((index - center[:, None] + 0.5) * invscale), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.where(total != 0, weight / np.where(total != 0, total, 1.0), weight)
    return np.minimum(index, in_size - 1), weight


def resize_bicubic_aa(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> [height, width, C] float64, before rounding (torch's float result, up to float error)."""
    iy, wy = aa_bicubic_taps(image.shape[0], height)
    ix, wx = aa_bicubic_taps(image.shape[1], width)
    out = np.empty((height, width, image.shape[2]))
    for c in range(image.shape[2]):
        plane = image[..., c].astype(np.float64)
        rows = np.einsum("hxt,xt->hx", plane[:, ix], wx)  # horizontal pass (H, width)
        out[..., c] = np.einsum(
            "yxt,yt->yx", rows[iy].transpose(0, 2, 1), wy
        )  # vertical pass (height, width)
    return out


def resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's resize of a uint8 image (bicubic, antialias): clamp, round half to even, uint8."""
    return np.rint(np.clip(resize_bicubic_aa(image, height, width), 0, 255)).astype(np.uint8)


def nv12_to_rgb(y_plane: np.ndarray, uv_plane: np.ndarray) -> np.ndarray:
    """OpenCV's COLOR_YUV2RGB_NV12 (BT.601 limited range, 20-bit fixed point), extended to odd sizes:
    pixel (x, y) takes U, V pair x // 2 of chroma row y // 2. y_plane [H, W]; uv_plane [>= ceil(H/2), >= 2*ceil(W/2)]."""
    h, w = y_plane.shape
    xs, ys = np.arange(w) // 2, np.arange(h) // 2
    u = uv_plane[ys][:, 2 * xs].astype(np.int64) - 128
    v = uv_plane[ys][:, 2 * xs + 1].astype(np.int64) - 128
    yy = np.maximum(y_plane.astype(np.int64) - 16, 0) * 1220542
    half = 1 << 19
    r = (yy + half + 1673527 * v) >> 20
    g = (yy + half - 852492 * v - 409993 * u) >> 20
    b = (yy + half + 2116026 * u) >> 20
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def frame_to_rgb(
    buffer: np.ndarray,
    format: str,
    width: int,
    height: int,
    pitch: int,
    uv_offset: int = 0,
    uv_pitch: int = 0,
) -> np.ndarray:
    """[height, width, 3] RGB uint8 from a flat uint8 buffer laid out as the kernel reads it."""
    flat = buffer.reshape(-1)
    rows = np.stack(
        [flat[y * pitch : y * pitch + width * {"nv12": 1, "bgra": 4}.get(format, 3)] for y in range(height)]
    )
    if format == "rgb":
        return rows.reshape(height, width, 3).copy()
    if format == "bgr":
        return rows.reshape(height, width, 3)[..., ::-1].copy()
    if format == "bgra":
        return rows.reshape(height, width, 4)[..., 2::-1].copy()
    if format == "nv12":
        uv_offset = uv_offset or pitch * height
        uv_pitch = uv_pitch or pitch
        pairs = 2 * ((width + 1) // 2)
        uv = np.stack(
            [
                flat[uv_offset + r * uv_pitch : uv_offset + r * uv_pitch + pairs]
                for r in range((height + 1) // 2)
            ]
        )
        return nv12_to_rgb(rows, uv)
    raise ValueError(f"unknown format {format!r}")


def normalize(resized: np.ndarray, dtype: str, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """[h, w, 3] uint8 -> [3, h, w] in `dtype` ("f32", "f16", or "u8" = unchanged), float32 arithmetic
    in the kernel's order: (v / 255 - mean) / std."""
    chw = np.ascontiguousarray(resized.transpose(2, 0, 1))
    if dtype == "u8":
        return chw
    v = chw.astype(np.float32) / np.float32(255)
    out = (v - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    return out.astype(np.float16 if dtype == "f16" else np.float32)


def preprocess_reference(
    rgb: np.ndarray,
    height: int,
    width: int,
    dtype: str = "f32",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    round_u8: bool = True,
) -> np.ndarray:
    """[H, W, 3] RGB uint8 frame -> one [3, height, width] model input. round_u8=False: the float resize
    (no clamp, no rounding) normalised in float32 in the kernel's order, (v / 255 - mean) / std."""
    if round_u8:
        return normalize(resize_uint8(rgb, height, width), dtype, mean, std)
    if dtype == "u8":
        raise ValueError("round_u8=False has no u8 output")
    v = np.ascontiguousarray(resize_bicubic_aa(rgb, height, width).transpose(2, 0, 1), np.float32)
    out = (v / np.float32(255) - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]
    return out.astype(np.float16 if dtype == "f16" else np.float32)


def upsample_bilinear(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's interpolate(mode="bilinear", align_corners=False) of [h, w] to [height, width], float64."""

    def taps(out_size: int, in_size: int):
        src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
        i0 = np.minimum(src.astype(np.int64), in_size - 1)
        i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
        l1 = np.clip(src - i0, 0.0, 1.0)
        return i0, i1, 1.0 - l1, l1

    y0, y1, ly0, ly1 = taps(height, logits.shape[0])
    x0, x1, lx0, lx1 = taps(width, logits.shape[1])
    src = logits.astype(np.float64)
    top = lx0 * src[y0][:, x0] + lx1 * src[y0][:, x1]
    bottom = lx0 * src[y1][:, x0] + lx1 * src[y1][:, x1]
    return ly0[:, None] * top + ly1[:, None] * bottom


def mask_reference(logits: np.ndarray, height: int, width: int, threshold: float = 0.0):
    """(upsampled float64 [height, width], binary mask bool, area, box (x0, y0, x1, y1) inclusive or None)."""
    values = upsample_bilinear(logits, height, width)
    mask = values > threshold
    area = int(mask.sum())
    if area == 0:
        return values, mask, 0, None
    ys, xs = np.nonzero(mask)
    return values, mask, area, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def span_reference(logits: np.ndarray, spans: np.ndarray, duration: float, top_k: int, round_to: float = 0.0):
    """(windows [top_k, 3] float64 (start_s, end_s, score), query index [top_k]); stable descending sort."""
    logits = logits.reshape(-1, 2).astype(np.float64)
    spans = spans.reshape(-1, 2).astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    score = shifted[:, 0] / shifted.sum(axis=1)
    start = np.clip((spans[:, 0] - 0.5 * spans[:, 1]) * duration, 0, duration)
    end = np.clip((spans[:, 0] + 0.5 * spans[:, 1]) * duration, 0, duration)
    if round_to > 0:
        start = np.clip(np.round(start / round_to) * round_to, 0, duration)
        end = np.clip(np.round(end / round_to) * round_to, 0, duration)
    order = np.argsort(-np.where(np.isnan(score), -1.0, score), kind="stable")[:top_k]
    return np.stack([start[order], end[order], score[order]], axis=1), order
