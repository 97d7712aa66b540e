"""GPU checks, for a session that has a GPU lent: each kernel against its numpy reference, timed against
the CPU path (OpenCV/numpy) and a naive multi-launch version, printed as one table, in under 5 minutes.

    python tests/gpu/run_gpu_checks.py                     # every section on CUDA device 0
    python tests/gpu/run_gpu_checks.py --sections kernels  # some sections
    python tests/gpu/run_gpu_checks.py --emulate           # dry run on the CPU emulation: small frames,
                                                           # timings meaningless; checks this script itself

Sections are functions in SECTIONS taking a Context and adding Rows; later checks (export, runtime,
bench) become new sections. A section that raises becomes a FAIL row and the others still run.
GPU times are per call, from CUDA events around a CUDA graph of `repeat` captured calls, so Python's
launch overhead is not in them (it has its own rows). Exit status: 0 when every correctness check
passed (performance goals are reported, not enforced), 1 when one failed, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpo.kernels import ArrayView, Frame, ImageOutput, available, decode_spans, postprocess_mask, preprocess
from tpo.kernels import reference as ref
from tpo.kernels.mask_postprocess import STATS_COUNT, decode_stats, launch_mask_postprocess
from tpo.kernels.preprocess import FORMATS, IMAGENET_MEAN, IMAGENET_STD
from tpo.kernels.sources import KERNELS, SPAN_DECODE, KernelSource, constant
from tpo.kernels.span_decode import plan_span_decode

HERE = Path(__file__).resolve().parent
BUDGET_S = 280.0  # the whole script, device start-up excluded, stays under 5 minutes
MODEL_INPUTS = [(224, 224, "f16"), (1024, 1024, "f32")]  # video encoder input, mask image encoder input
ITEM = {"f16": 2, "f32": 4, "u8": 1}


class NaiveParams(ctypes.Structure):
    _fields_ = [
        ("src", ctypes.c_void_p),
        ("dst", ctypes.c_void_p),
        ("stats", ctypes.c_void_p),
        ("src_pitch", ctypes.c_int64),
        ("dst_stride", ctypes.c_int64),
        ("src_uv", ctypes.c_void_p),
        ("uv_pitch", ctypes.c_int64),
        ("in_w", ctypes.c_int32),
        ("in_h", ctypes.c_int32),
        ("out_w", ctypes.c_int32),
        ("out_h", ctypes.c_int32),
        ("format", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("mean", ctypes.c_float * 3),
        ("std", ctypes.c_float * 3),
        ("threshold", ctypes.c_float),
        ("pad_", ctypes.c_int32),
    ]


NAIVE_ENTRIES = ("unpack", "resize_h", "resize_v", "normalize", "upsample", "threshold", "box")
NAIVE = {e: KernelSource("naive", "naive.cu", f"naive_{e}", "NaiveParams", HERE) for e in NAIVE_ENTRIES}


@dataclass
class Row:
    section: str
    check: str
    path: str
    ms: float | None = None
    vs_cpu: float | None = None  # CPU time / this time
    vs_floor: float | None = None  # this time / bandwidth floor
    error: str = ""
    result: str = "ok"  # ok, FAIL, goal met, goal MISSED, info, skipped


@dataclass
class Context:
    device: object
    emulate: bool
    deadline: float
    rows: list[Row] = field(default_factory=list)
    bandwidth: float | None = None  # bytes/s of a device-to-device copy (read + write counted)
    stream: int = 0

    def __post_init__(self):
        if not self.emulate:
            from cuda.bindings import driver

            err, stream = driver.cuStreamCreate(int(driver.CUstream_flags.CU_STREAM_NON_BLOCKING))
            check(err, "cuStreamCreate")
            self.stream = int(stream)

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def time_ms(self, fn, repeat: int) -> float:
        """Device ms per fn(stream) call. GPU: `repeat` calls captured into a CUDA graph, replayed
        between two events (so Python's launch overhead is excluded). Emulation: wall time."""
        fn(self.stream), fn(self.stream)
        self.device.synchronize(self.stream)
        if self.emulate:
            start = time.perf_counter()
            for _ in range(repeat):
                fn(self.stream)
            return (time.perf_counter() - start) * 1e3 / repeat
        from cuda.bindings import driver

        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
        check(driver.cuStreamBeginCapture(self.stream, mode)[0], "cuStreamBeginCapture")
        for _ in range(repeat):
            fn(self.stream)
        err, graph = driver.cuStreamEndCapture(self.stream)
        check(err, "cuStreamEndCapture")
        err, graph_exec = driver.cuGraphInstantiate(graph, 0)
        check(err, "cuGraphInstantiate")
        _, begin = driver.cuEventCreate(0)
        _, end = driver.cuEventCreate(0)
        try:
            check(driver.cuGraphLaunch(graph_exec, self.stream)[0], "cuGraphLaunch")  # warm
            driver.cuEventRecord(begin, self.stream)
            check(driver.cuGraphLaunch(graph_exec, self.stream)[0], "cuGraphLaunch")
            driver.cuEventRecord(end, self.stream)
            check(driver.cuEventSynchronize(end)[0], "cuEventSynchronize")
            err, ms = driver.cuEventElapsedTime(begin, end)
            check(err, "cuEventElapsedTime")
        finally:
            driver.cuEventDestroy(begin), driver.cuEventDestroy(end)
            driver.cuGraphExecDestroy(graph_exec), driver.cuGraphDestroy(graph)
        return ms / repeat

    def host_us(self, fn) -> float:
        """Host microseconds per fn(stream) call (validation, parameter packing, launch), median."""
        samples = []
        for _ in range(3 if self.emulate else 50):
            start = time.perf_counter()
            fn(self.stream)
            samples.append((time.perf_counter() - start) * 1e6)
        self.device.synchronize(self.stream)
        return statistics.median(samples)


def check(err, what: str) -> None:
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {getattr(err, 'name', err)}")


def cpu_ms(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def upload(ctx: Context, array: np.ndarray) -> int:
    ptr = ctx.device.alloc(array.nbytes)
    ctx.device.copy_to_device(ptr, array)
    return ptr


def download(ctx: Context, ptr: int, shape, dtype) -> np.ndarray:
    out = np.empty(shape, dtype)
    ctx.device.copy_to_host(out, ptr)
    return out


def measure_bandwidth(ctx: Context) -> float:
    """Bytes per second moved by a large device-to-device copy, read and write both counted."""
    nbytes = (16 if ctx.emulate else 1024) << 20
    src, dst = ctx.device.alloc(nbytes), ctx.device.alloc(nbytes)
    ms = ctx.time_ms(lambda s: ctx.device.copy_device(dst, src, nbytes, s), 3 if ctx.emulate else 10)
    ctx.device.free(src), ctx.device.free(dst)
    return 2 * nbytes / (ms * 1e-3)


def within_one_level(out: np.ndarray, expected: np.ndarray, dtype: str) -> tuple[str, bool]:
    """Max difference, and whether it is at most one uint8 level in at most 0.2% of the values
    (float32 rounding-boundary cases, as tests/kernels/conftest.py explains)."""
    diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
    level = 1.0 if dtype == "u8" else 1.0 / (255 * min(IMAGENET_STD)) + (4e-3 if dtype == "f16" else 1e-5)
    off = float((diff > 0).mean())
    return f"{diff.max():.3g} ({off:.3%} off)", bool(diff.max() <= level and off <= 2e-3)


# ---------------------------------------------------------------- section: kernels


def launch_naive(dev, entry: str, threads: int, stream: int, **fields) -> None:
    dev.launch(NAIVE[entry], (-(-threads // 256), 1, 1), (256, 1, 1), NaiveParams(**fields), stream)


def naive_preprocess(dev, frame: Frame, outputs, scratch, stream: int) -> None:
    """The multi-launch baseline: unpack to float RGB, then horizontal, vertical, normalise per output."""
    f = frame
    launch_naive(dev, "unpack", f.width * f.height, stream, src=f.ptr, dst=scratch["rgb"], src_pitch=f.pitch,
                 src_uv=f.uv_ptr, uv_pitch=f.uv_pitch or f.pitch, in_w=f.width, in_h=f.height,
                 format=constant("FORMAT_" + f.format.upper()))  # fmt: skip
    mean, std = (ctypes.c_float * 3)(*IMAGENET_MEAN), (ctypes.c_float * 3)(*IMAGENET_STD)
    for i, out in enumerate(outputs):
        h, w = out.height, out.width
        hpass, vpass = scratch[f"h{i}"], scratch[f"v{i}"]
        launch_naive(
            dev,
            "resize_h",
            3 * f.height * w,
            stream,
            src=scratch["rgb"],
            dst=hpass,
            in_w=f.width,
            in_h=f.height,
            out_w=w,
        )
        launch_naive(
            dev, "resize_v", 3 * h * w, stream, src=hpass, dst=vpass, in_h=f.height, out_w=w, out_h=h
        )
        launch_naive(dev, "normalize", 3 * h * w, stream, src=vpass, dst=out.ptr, dst_stride=h * w, out_w=w, out_h=h,
                     dtype=constant("DTYPE_" + out.dtype.upper()), mean=mean, std=std)  # fmt: skip


def opencv_preprocess(host_frame: np.ndarray, format: str, outputs) -> list[np.ndarray]:
    """The CPU path: OpenCV colour conversion and resize (INTER_AREA down, INTER_CUBIC up), numpy normalise."""
    import cv2

    codes = {"bgr": cv2.COLOR_BGR2RGB, "bgra": cv2.COLOR_BGRA2RGB, "nv12": cv2.COLOR_YUV2RGB_NV12}
    rgb = host_frame if format == "rgb" else cv2.cvtColor(host_frame, codes[format])
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    results = []
    for out in outputs:
        down = out.width < rgb.shape[1]
        resized = cv2.resize(
            rgb, (out.width, out.height), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC
        )
        chw = ((resized.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)
        results.append(np.ascontiguousarray(chw, np.float16 if out.dtype == "f16" else np.float32))
    return results


def check_preprocess(ctx: Context, format: str, size, rng) -> None:
    import cv2

    width, height = size
    dev = ctx.device
    channels = FORMATS[format]
    pitch = width * channels + 64  # padded rows, as decoders and allocators give them
    rows = height + (height + 1) // 2 if format == "nv12" else height
    host = rng.integers(0, 256, (rows, pitch), np.uint8)
    ptr = upload(ctx, host)
    frame = Frame(ptr, width, height, pitch, format, uv_ptr=ptr + pitch * height if format == "nv12" else 0)
    rgb = ref.frame_to_rgb(host, format, width, height, pitch)
    outs = [ImageOutput(dev.alloc(3 * h * w * ITEM[dt]), h, w, dt) for h, w, dt in MODEL_INPUTS]
    naive_outs = [ImageOutput(dev.alloc(3 * h * w * ITEM[dt]), h, w, dt) for h, w, dt in MODEL_INPUTS]
    scratch = {"rgb": dev.alloc(3 * width * height * 4)}
    for i, (h, w, _) in enumerate(MODEL_INPUTS):
        scratch[f"h{i}"], scratch[f"v{i}"] = dev.alloc(3 * height * w * 4), dev.alloc(3 * h * w * 4)
    name = f"preprocess {format} {width}x{height} -> 224 f16 + 1024 f32"

    preprocess(dev, frame, outs, stream=ctx.stream)
    naive_preprocess(dev, frame, naive_outs, scratch, ctx.stream)
    dev.synchronize(ctx.stream)
    checked = {}
    for label, group in (("fused", outs), ("naive", naive_outs)):
        texts, good = [], True
        for (h, w, dt), out in zip(MODEL_INPUTS, group, strict=True):
            got = download(ctx, out.ptr, (3, h, w), np.float16 if dt == "f16" else np.float32)
            text, fine = within_one_level(got, ref.preprocess_reference(rgb, h, w, dt), dt)
            texts.append(text)
            good = good and fine
        checked[label] = (" / ".join(texts), "ok" if good else "FAIL")

    repeat = 3 if ctx.emulate else 200
    fused_ms = ctx.time_ms(lambda s: preprocess(dev, frame, outs, stream=s), repeat)
    naive_ms = ctx.time_ms(
        lambda s: naive_preprocess(dev, frame, naive_outs, scratch, s), max(repeat // 10, 2)
    )
    host_frame = (
        host[:, : width * channels].reshape(rows, width, channels) if channels > 1 else host[:, :width]
    )
    host_frame = np.ascontiguousarray(host_frame)
    cpu = cpu_ms(lambda: opencv_preprocess(host_frame, format, outs), 3 if ctx.emulate else 10)
    moved = rows * width * channels + sum(
        3 * h * w * ITEM[dt] for h, w, dt in MODEL_INPUTS
    )  # bytes read + written
    floor_ms = moved / ctx.bandwidth * 1e3
    add = ctx.rows.append
    add(
        Row(
            "kernels",
            name,
            "fused, 1 launch",
            fused_ms,
            cpu / fused_ms,
            fused_ms / floor_ms,
            *checked["fused"],
        )
    )
    add(
        Row(
            "kernels",
            name,
            "naive, 7 launches",
            naive_ms,
            cpu / naive_ms,
            naive_ms / floor_ms,
            *checked["naive"],
        )
    )
    add(Row("kernels", name, f"CPU: OpenCV ({cv2.getNumThreads()} threads) + numpy", cpu, 1.0, cpu / floor_ms,
            "not torchvision-exact", "info"))  # fmt: skip
    if format == "bgr":
        host = ctx.host_us(lambda s: preprocess(dev, frame, outs, stream=s))
        add(Row("kernels", name, "fused: Python launch overhead (host)", host / 1e3, None, None, "", "info"))
        if not ctx.emulate:
            floor = f"{floor_ms * 1e3:.1f} us = {moved / 1e6:.1f} MB at {ctx.bandwidth / 1e9:.0f} GB/s"
            add(Row("kernels", f"goal: within 10x of the bandwidth floor ({floor})", "fused", fused_ms, None,
                    fused_ms / floor_ms, "", "goal met" if fused_ms <= 10 * floor_ms else "goal MISSED"))  # fmt: skip
            add(Row("kernels", "goal: at least 20x faster than the CPU path", "fused", fused_ms, cpu / fused_ms, None,
                    "", "goal met" if cpu >= 20 * fused_ms else "goal MISSED"))  # fmt: skip
    for p in [ptr, *(o.ptr for o in outs + naive_outs), *scratch.values()]:
        dev.free(p)


def check_preprocess_tuning(ctx: Context, size, rng) -> None:
    """Time the fused kernel compiled with other TPO_PREPROCESS_ROWS (rows per thread) values."""
    width, height = size
    host = rng.integers(0, 256, (height, width * 3), np.uint8)
    for rows in (1, 4) if ctx.emulate else (1, 2, 4, 8):  # the dry run only shows the rows work
        label = f"preprocess bgr {width}x{height}, TPO_PREPROCESS_ROWS={rows} (default {constant('PREPROCESS_ROWS')})"
        if ctx.left_s() < 60:
            ctx.rows.append(Row("kernels", label, "fused", result="skipped: time budget"))
            continue
        both, alone = time_rows_variant(ctx, rows, host, width, height)
        error = f"224 alone {alone[0]:.4f} ms, 1024 alone {alone[1]:.4f} ms"
        ctx.rows.append(Row("kernels", label, "fused", both, error=error, result="info"))


def time_rows_variant(ctx: Context, rows: int, host: np.ndarray, width: int, height: int):
    """(ms for both model inputs in one launch, [ms for each alone]) with TPO_PREPROCESS_ROWS=rows."""
    if rows == ctx.device.constant("PREPROCESS_ROWS"):
        dev, sub = ctx.device, ctx
    else:
        dev = make_device(ctx.emulate, {"TPO_PREPROCESS_ROWS": rows})
        sub = Context(dev, ctx.emulate, ctx.deadline)
    ptr = upload(sub, host)
    frame = Frame(ptr, width, height, width * 3, "bgr")
    outs = [ImageOutput(dev.alloc(3 * h * w * ITEM[dt]), h, w, dt) for h, w, dt in MODEL_INPUTS]
    repeat = 3 if ctx.emulate else 100
    alone = [sub.time_ms(lambda s, o=o: preprocess(dev, frame, [o], stream=s), repeat) for o in outs]
    both = sub.time_ms(lambda s: preprocess(dev, frame, outs, stream=s), repeat)
    for p in (ptr, *(o.ptr for o in outs)):
        dev.free(p)
    return both, alone


def check_mask(ctx: Context, size, rng) -> None:
    import cv2

    width, height = size
    dev = ctx.device
    yy, xx = np.mgrid[0:256, 0:256]
    blob = 8 * np.exp(-((xx - 150) ** 2 + (yy - 90) ** 2) / (2 * 30.0**2)) - 4  # one object off centre
    logits = np.ascontiguousarray(blob + rng.normal(0, 0.5, blob.shape), np.float32)
    logits_ptr = upload(ctx, logits)
    logits_view = ArrayView.raw(logits_ptr, logits.shape, np.float32)
    mask_ptr, naive_mask = dev.alloc(width * height), dev.alloc(width * height)
    mask_view = ArrayView.raw(mask_ptr, (height, width), np.uint8)
    values, stats_ptr, naive_stats = (
        dev.alloc(4 * width * height),
        dev.alloc(4 * STATS_COUNT),
        dev.alloc(4 * STATS_COUNT),
    )
    name = f"mask 256x256 f32 -> {width}x{height} + box"
    _, expected, area, box = ref.mask_reference(logits, height, width)

    def naive(stream):
        n = width * height
        launch_naive(
            dev,
            "upsample",
            n,
            stream,
            src=logits_ptr,
            dst=values,
            in_w=256,
            in_h=256,
            out_w=width,
            out_h=height,
        )
        launch_naive(
            dev, "threshold", n, stream, src=values, dst=naive_mask, out_w=width, out_h=height, threshold=0.0
        )
        dev.memset_d32(naive_stats, 0, STATS_COUNT, stream)
        launch_naive(dev, "box", n, stream, src=naive_mask, stats=naive_stats, out_w=width, out_h=height)

    fused_stats = postprocess_mask(
        dev, logits_view, height=height, width=width, mask=mask_view, stream=ctx.stream
    )
    naive(ctx.stream)
    dev.synchronize(ctx.stream)
    naive_result = decode_stats(download(ctx, naive_stats, (STATS_COUNT,), np.int32), height, width)
    repeat = 3 if ctx.emulate else 200

    def fused(stream):
        launch_mask_postprocess(
            dev, logits_view, height=height, width=width, stats_ptr=stats_ptr, mask=mask_view, stream=stream
        )

    fused_ms = ctx.time_ms(fused, repeat)
    naive_ms = ctx.time_ms(naive, max(repeat // 10, 2))

    def cpu():
        up = cv2.resize(logits, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = (up > 0).astype(np.uint8)
        points = cv2.findNonZero(mask)
        return cv2.countNonZero(mask), (cv2.boundingRect(points) if points is not None else None)

    cpu_time = cpu_ms(cpu, 3 if ctx.emulate else 10)
    floor_ms = (logits.nbytes + width * height) / ctx.bandwidth * 1e3
    for path, ms, result, ptr in (
        ("fused, 1 launch", fused_ms, fused_stats, mask_ptr),
        ("naive, 3 launches + memset", naive_ms, naive_result, naive_mask),
    ):
        got = download(ctx, ptr, (height, width), np.uint8)
        wrong = int(((got == 1) != expected).sum())
        good = (
            wrong <= 2
            and result.area == int(got.sum())
            and abs(result.area - area) <= 2
            and (box is None) == (result.box is None)
        )
        error = f"{wrong} px differ; box {result.box} vs {box}"
        ctx.rows.append(
            Row("kernels", name, path, ms, cpu_time / ms, ms / floor_ms, error, "ok" if good else "FAIL")
        )
    ctx.rows.append(Row("kernels", name, "CPU: OpenCV", cpu_time, 1.0, cpu_time / floor_ms, "", "info"))
    for p in (logits_ptr, mask_ptr, naive_mask, values, stats_ptr, naive_stats):
        dev.free(p)


def check_spans(ctx: Context, rng) -> None:
    dev = ctx.device
    logits = rng.normal(0, 2, (10, 2)).astype(np.float32)
    spans = rng.uniform(0, 1, (10, 2)).astype(np.float32)
    lp, sp = upload(ctx, logits), upload(ctx, spans)
    lv, sv = ArrayView.raw(lp, (10, 2), np.float32), ArrayView.raw(sp, (10, 2), np.float32)
    got = decode_spans(dev, lv, sv, duration=31.5, top_k=5, round_to=1.0, stream=ctx.stream)
    windows, order = ref.span_reference(logits, spans, 31.5, 5, 1.0)
    good = (got.queries == order).all() and np.allclose(got.windows, windows, atol=1e-4)
    out = dev.alloc(16 * 5)
    params, grid, block = plan_span_decode(lv, sv, 31.5, 5, 1.0, out, out + 60)
    ms = ctx.time_ms(lambda s: dev.launch(SPAN_DECODE, grid, block, params, s), 3 if ctx.emulate else 200)
    cpu = cpu_ms(lambda: ref.span_reference(logits, spans, 31.5, 5, 1.0), 10)
    error = f"{np.abs(got.windows - windows).max():.2g}"
    name = "span decode 10 queries -> top 5"
    ctx.rows.append(
        Row("kernels", name, "fused, 1 launch", ms, cpu / ms, None, error, "ok" if good else "FAIL")
    )
    ctx.rows.append(Row("kernels", name, "CPU: numpy reference", cpu, 1.0, None, "", "info"))
    for p in (lp, sp, out):
        dev.free(p)


def section_kernels(ctx: Context) -> None:
    rng = np.random.default_rng(0)
    size = (320, 180) if ctx.emulate else (1920, 1080)
    ctx.bandwidth = measure_bandwidth(ctx)
    for format in FORMATS:
        check_preprocess(ctx, format, size, rng)
    check_mask(ctx, size, rng)
    check_spans(ctx, rng)
    check_preprocess_tuning(ctx, size, rng)


# ---------------------------------------------------------------- section: frame_path


def frame_path_pre():
    """The manifest's preprocessing section at the release's sizes (224 px, 4 frames; 1024 px masks)."""
    from tpo.contract import Preprocess
    from tpo.contract.manifest import MaskPreprocess, MllmPreprocess, TemporalPreprocess

    mean, std = tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    return Preprocess(MllmPreprocess(224, 4, mean, std), MaskPreprocess(1024, mean, std),
                      TemporalPreprocess("internal", 1.0, 1, 80))


def section_frame_path(ctx: Context) -> None:
    """tpo.runtime.frame_path as a session uses it: host RGB frames in, host arrays out (copies included), the
    GPU kernel path against the CPU path (numpy/OpenCV), wall-clock per call; plus which path a session picks."""
    from tpo.runtime.frame_path import CpuFramePath, KernelFramePath, select_frame_path

    pre = frame_path_pre()
    if ctx.emulate:
        gpu = KernelFramePath(pre, ctx.device, "the CPU emulation")
    else:
        gpu = select_frame_path(pre)  # as a session would: NVRTC build or cache, self-check
        ok = gpu.kind == "gpu"
        ctx.rows.append(Row("frame_path", "select_frame_path", gpu.describe(), result="ok" if ok else "FAIL"))
        if not ok:
            return
    cpu = CpuFramePath(pre, "numpy")
    rng = np.random.default_rng(1)
    for width, height in [(320, 240)] if ctx.emulate else [(320, 240), (1920, 1080)]:
        check_frame_path(ctx, gpu, cpu, width, height, rng)
    gpu.close()


def check_frame_path(ctx: Context, gpu, cpu, width: int, height: int, rng) -> None:
    from tpo.runtime import postprocess

    t = gpu.mllm_cfg.num_frames
    frames = rng.integers(0, 256, (t, height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:256, 0:256]
    logits = (8 * np.exp(-((xx - 150) ** 2 + (yy - 90) ** 2) / (2 * 30.0**2)) - 4).astype(np.float32)
    logits += rng.normal(0, 0.5, logits.shape).astype(np.float32)
    repeat = 2 if ctx.emulate else 20
    checks = {
        "mask_frame -> [1,3,1024,1024]": (lambda p: p.mask_frame(frames[0]), "mask"),
        f"mllm_frames {t} frames -> [1,3,{t},224,224]": (lambda p: p.mllm_frames(frames), "mllm"),
        "frame_inputs (224 + 1024, one launch)": (lambda p: p.frame_inputs(frames[0]), "both"),
        f"mask_and_box 256x256 -> {width}x{height}": (lambda p: p.mask_and_box(logits, height, width), "box"),
    }
    for label, (fn, kind) in checks.items():
        name = f"frame {width}x{height} {label}"
        if ctx.left_s() < 20:
            ctx.rows.append(Row("frame_path", name, "gpu", result="skipped: time budget"))
            continue
        got, want = fn(gpu), fn(cpu)
        if kind == "box":
            iou = postprocess.mask_iou(got[0], want[0])
            error, good = f"mask IoU {iou:.5f}, box {got[1]} vs {want[1]}", iou >= 0.999 and got[1] == want[1]
        else:
            pairs = list(zip(got, want, strict=True)) if kind == "both" else [(got, want)]
            diffs = [np.abs(a - b) for a, b in pairs]
            ties = sum(int((d > 1e-3).sum()) for d in diffs)  # one uint8 level at a rounding tie (mllm only)
            worst = max(float(d[d <= 1e-3].max(initial=0)) for d in diffs)
            error = f"max {worst:.2g} off ties, {ties} ties"
            level = 1 / (255 * min(IMAGENET_STD)) + 1e-5
            good = worst <= 1e-5 and max(float(d.max()) for d in diffs) <= level
            good = good and ties <= 2e-3 * sum(d.size for d in diffs) and (kind != "mask" or ties == 0)
        gpu_ms = cpu_ms(lambda f=fn: f(gpu), repeat)
        host_ms = cpu_ms(lambda f=fn: f(cpu), max(repeat // 4, 2))
        ctx.rows.append(Row("frame_path", name, f"{gpu.kind} kernels + copies", gpu_ms, host_ms / gpu_ms, None,
                            error, "ok" if good else "FAIL"))  # fmt: skip
        ctx.rows.append(Row("frame_path", name, "CPU: runtime numpy/OpenCV", host_ms, 1.0, None, "", "info"))


SECTIONS = {"kernels": section_kernels, "frame_path": section_frame_path}


# ---------------------------------------------------------------- driver


def make_device(emulate: bool, defines=None, ordinal: int = 0):
    from tpo.kernels import EmulatedDevice, GpuDevice
    from tpo.kernels.params import STRUCTS

    if emulate:
        kernels, structs = (*KERNELS, *NAIVE.values()), {**STRUCTS, "NaiveParams": NaiveParams}
        return EmulatedDevice(defines=defines, kernels=kernels, structs=structs)
    return GpuDevice(ordinal, defines=defines)


def print_table(rows: list[Row]) -> None:
    def num(v, fmt):
        return "" if v is None else format(v, fmt)

    header = ("section", "check", "path", "ms", "x vs CPU", "x floor", "max error", "result")
    table = [header]
    for r in rows:
        table.append(
            (
                r.section,
                r.check,
                r.path,
                num(r.ms, ".4f"),
                num(r.vs_cpu, ".1f"),
                num(r.vs_floor, ".1f"),
                r.error,
                r.result,
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--emulate", action="store_true", help="dry run on the CPU emulation (timings meaningless)"
    )
    parser.add_argument("--device", type=int, default=0, help="CUDA device ordinal")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run")
    args = parser.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        print(
            f"run_gpu_checks: unknown section {unknown[0]!r}; sections are {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2

    start = time.monotonic()
    if args.emulate:
        print("device: CPU emulation (dry run; timings say nothing about a GPU)")
    else:
        path = available(args.device)
        print(path)
        if not path.gpu:
            print(f"run_gpu_checks: no GPU: {path.reason}", file=sys.stderr)
            return 2
    ctx = Context(make_device(args.emulate, ordinal=args.device), args.emulate, start + args.budget)
    for name in names:
        try:
            SECTIONS[name](ctx)
        except Exception as e:  # one broken section must not hide the others' results
            error = f"{type(e).__name__}: {e}".splitlines()[0]
            ctx.rows.append(Row(name, "section raised", "", error=error, result="FAIL"))
    if ctx.bandwidth:
        print(f"device copy bandwidth: {ctx.bandwidth / 1e9:.1f} GB/s (read + write)")
    print_table(ctx.rows)
    failed = [r for r in ctx.rows if r.result == "FAIL"]
    print(
        f"{len(ctx.rows) - len(failed)} rows fine, {len(failed)} failed, in {time.monotonic() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
