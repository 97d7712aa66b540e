"""The frame path of a session: pixels in (model inputs) and masks out, on the GPU kernels or on the CPU.

    path = select_frame_path(manifest.preprocess)              # once per session
    print(path.describe())   # "frame path: gpu kernels on NVIDIA H200 (sm_90; ...)" / "frame path: cpu (...)"
    pixels = path.mask_frame(rgb)                              # [1, 3, S, S] float32, the mask encoder's input
    clip = path.mllm_frames(rgb_frames)                        # [1, 3, T, s, s] float32, the vision encoder's
    video, pixels = path.frame_inputs(rgb)                     # both from one frame: one launch on the GPU
    mask, box = path.mask_and_box(logits, height, width)       # bool [H, W], [x1, y1, x2, y2] pixel edges or None

Both paths compute what `runtime.preprocess` and `runtime.postprocess` define (the CPU path *is* them):
- vision encoder input: antialiased bicubic on the uint8 frame, rounded to uint8, /255, mean/std;
- mask encoder input: the same resize kept in float (no clamp, no rounding), /255, mean/std;
- masks: bilinear upsampling with half-pixel centres, logit > 0; boxes as pixel edges (x2 = last + 1).
The GPU path runs `tpo.kernels` (preprocess.cu: both inputs in one launch, the mask input with
`round_u8=False`; mask_postprocess.cu: upsampling, threshold, box and area in one pass). The engines take
host numpy arrays for now, so results are copied back; `device_view` gives the device buffers of the last
call for I/O binding later.

`select_frame_path` takes the GPU kernels whenever `tpo.kernels.available()` says a GPU can run them, and
checks them once on a tiny frame against the CPU path. It never falls back silently: a GPU that is present
but whose kernels cannot be built, loaded or trusted gives the CPU path with a WARNING line on stderr and in
`describe()`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from tpo.contract import Preprocess
from tpo.errors import InputError

from . import postprocess, preprocess

FORMATS = {"rgb": 3, "bgr": 3, "bgra": 4}  # channels; the runtime's frames are RGB


def check_frames(frames: np.ndarray, format: str, ndim: int = 3) -> np.ndarray:
    """One frame [H, W, C] (ndim 3) or frames [T, H, W, C] (ndim 4), uint8 in `format` -> C-contiguous,
    or InputError naming what is wrong."""
    if format not in FORMATS:
        raise InputError(f"unsupported frame format {format!r}: use one of {', '.join(FORMATS)}")
    channels = FORMATS[format]
    name, dims = ("frame", f"[H, W, {channels}]") if ndim == 3 else ("frames", f"[T, H, W, {channels}]")
    if (not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != ndim
            or frames.shape[-1] != channels):
        raise InputError(f"{name} must be a uint8 array {dims} ({format}), got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {list(getattr(frames, 'shape', []))}")
    if 0 in frames.shape:
        raise InputError(f"{name}: empty array {list(frames.shape)}")
    return np.ascontiguousarray(frames)


def _squeeze_logits(logits) -> np.ndarray:
    """[h, w], or [1, ..., 1, h, w] as SAM2's decoder returns it -> [h, w]."""
    logits = np.asarray(logits)
    if logits.ndim < 2 or any(n != 1 for n in logits.shape[:-2]):
        raise InputError(f"mask logits must be [h, w] (or [1, 1, h, w]), got shape {list(logits.shape)}")
    return logits.reshape(logits.shape[-2:])


def _to_rgb(frame: np.ndarray, format: str) -> np.ndarray:
    if format == "rgb":
        return frame
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB if format == "bgr" else cv2.COLOR_BGRA2RGB)


class FramePath:
    """One session's frame pre/post-processing. kind: "gpu", "cpu", or "emulated" (the kernels on the CPU
    emulation, for tests); reason: one line saying why this path."""

    kind = ""

    def __init__(self, pre: Preprocess, reason: str):
        self.mllm_cfg, self.mask_cfg = pre.mllm, pre.mask
        self.mllm_size, self.mask_size = int(self.mllm_cfg.image_size), int(self.mask_cfg.image_size)
        self.reason = reason

    def describe(self) -> str:
        return f"frame path: {self.kind} ({self.reason})"

    def __str__(self) -> str:
        return self.describe()

    def mask_frame(self, frame: np.ndarray, format: str = "rgb") -> np.ndarray:
        """[H, W, C] uint8 -> [1, 3, S, S] float32, the mask image encoder's input (runtime.preprocess.mask_frame)."""
        raise NotImplementedError

    def mllm_frames(self, frames: np.ndarray, format: str = "rgb") -> np.ndarray:
        """[T, H, W, C] uint8 -> [1, 3, T, s, s] float32, the vision encoder's input (runtime.preprocess.mllm_pixels)."""
        raise NotImplementedError

    def frame_inputs(self, frame: np.ndarray, format: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
        """[H, W, C] uint8 -> (vision encoder input [1, 3, 1, s, s], mask encoder input [1, 3, S, S])."""
        raise NotImplementedError

    def mask_and_box(self, logits: np.ndarray, height: int, width: int) -> tuple[np.ndarray, list[float] | None]:
        """Low-res logits [h, w] -> (bool mask [height, width], [x1, y1, x2, y2] pixel edges or None if empty)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release device memory (nothing on the CPU)."""


class CpuFramePath(FramePath):
    """numpy and OpenCV on the host: runtime.preprocess and runtime.postprocess."""

    kind = "cpu"

    def mask_frame(self, frame, format="rgb"):
        frame = _to_rgb(check_frames(frame, format), format)
        m = self.mask_cfg
        return preprocess.mask_frame(frame, self.mask_size, m.mean, m.std)

    def mllm_frames(self, frames, format="rgb"):
        frames = check_frames(frames, format, ndim=4)
        if format != "rgb":
            frames = np.stack([_to_rgb(f, format) for f in frames])
        m = self.mllm_cfg
        return preprocess.mllm_pixels(frames, self.mllm_size, m.mean, m.std)

    def frame_inputs(self, frame, format="rgb"):
        rgb = _to_rgb(check_frames(frame, format), format)
        return self.mllm_frames(rgb[None]), self.mask_frame(rgb)

    def mask_and_box(self, logits, height, width):
        return postprocess.mask_and_box(_squeeze_logits(logits), height, width)


class KernelFramePath(FramePath):
    """tpo.kernels on `device` (a GpuDevice, or an EmulatedDevice in tests). Device buffers are kept per
    session and grow as needed; every call synchronises (results go back to the host)."""

    def __init__(self, pre: Preprocess, device, reason: str):
        super().__init__(pre, reason)
        self.device = device
        self.kind = "gpu" if device.kind == "gpu" else "emulated"
        self.stream = 0  # the legacy default stream; I/O binding will bring the engine's
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (ptr, bytes)
        self._views: dict[str, object] = {}  # name -> ArrayView of the last call's result on the device
        same = self.mllm_cfg.mean == self.mask_cfg.mean and self.mllm_cfg.std == self.mask_cfg.std
        self.one_launch = same  # both inputs share one launch only if they share mean and std

    def describe(self) -> str:
        return f"frame path: {self.kind} kernels on {self.reason}"

    # ------------------------------------------------------------------ device memory
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.device.free(ptr)
            ptr, size = self.device.alloc(nbytes), nbytes
            self._buffers[name] = (ptr, size)
        return ptr

    def _view(self, name: str, ptr: int, shape, dtype):
        from tpo.kernels import ArrayView

        view = ArrayView.raw(ptr, shape, dtype, where=self.device.memory)
        self._views[name] = view
        return view

    def device_view(self, name: str):
        """The device buffer of the last call's result as a tpo.kernels.ArrayView (ptr, shape, strides, dtype):
        "frames" (the uploaded frames), "mllm" ([1, 3, T, s, s] f32), "mask" ([1, 3, S, S] f32), "logits",
        "mask_out" ([H, W] uint8). Valid until the next call that writes it (buffers grow, so may move)."""
        if name not in self._views:
            raise KeyError(f"no device buffer {name!r} yet (have {', '.join(self._views) or 'none'})")
        return self._views[name]

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.device.free(ptr)
        self._buffers.clear()
        self._views.clear()

    # ------------------------------------------------------------------ preprocess
    def _upload_frames(self, frames: np.ndarray, format: str):
        """[T, H, W, C] host uint8 -> a Frame per image, in one device buffer."""
        from tpo.kernels import Frame

        t, h, w, c = frames.shape
        ptr = self._buffer("frames", frames.nbytes)
        self.device.copy_to_device(ptr, frames, self.stream)
        self._view("frames", ptr, frames.shape, np.uint8)
        step = h * w * c
        return [Frame(ptr + i * step, w, h, w * c, format, nbytes=step, where=self.device.memory) for i in range(t)]

    def _mllm_output(self, t: int):
        s = self.mllm_size
        ptr = self._buffer("mllm", 4 * 3 * t * s * s)
        view = self._view("mllm", ptr, (1, 3, t, s, s), np.float32)
        return view, ptr

    def _mask_output(self):
        from tpo.kernels import ImageOutput

        s = self.mask_size
        ptr = self._buffer("mask", 4 * 3 * s * s)
        view = self._view("mask", ptr, (1, 3, s, s), np.float32)
        return view, ImageOutput(ptr, s, s, "f32", nbytes=4 * 3 * s * s, where=self.device.memory, round_u8=False)

    def _mllm_slot(self, ptr: int, t: int, i: int):
        from tpo.kernels import ImageOutput

        s = self.mllm_size
        return ImageOutput(ptr + 4 * i * s * s, s, s, "f32", channel_stride=t * s * s, where=self.device.memory)

    def _launch(self, frame, outputs, cfg) -> None:
        from tpo.kernels import preprocess as launch_preprocess

        launch_preprocess(self.device, frame, outputs, mean=cfg.mean, std=cfg.std, stream=self.stream)

    def _download(self, view) -> np.ndarray:
        out = np.empty(view.shape, view.dtype)
        self.device.copy_to_host(out, view.ptr, self.stream)
        return out

    def mask_frame(self, frame, format="rgb"):
        frame = check_frames(frame, format)
        (src,) = self._upload_frames(frame[None], format)
        view, out = self._mask_output()
        self._launch(src, [out], self.mask_cfg)
        return self._download(view)

    def mllm_frames(self, frames, format="rgb"):
        frames = check_frames(frames, format, ndim=4)
        t = frames.shape[0]
        sources = self._upload_frames(frames, format)
        view, ptr = self._mllm_output(t)
        for i, src in enumerate(sources):  # one launch per frame, each writing its slice of the clip
            self._launch(src, [self._mllm_slot(ptr, t, i)], self.mllm_cfg)
        return self._download(view)

    def frame_inputs(self, frame, format="rgb"):
        frame = check_frames(frame, format)
        (src,) = self._upload_frames(frame[None], format)
        mllm_view, ptr = self._mllm_output(1)
        mask_view, mask_out = self._mask_output()
        if self.one_launch:
            self._launch(src, [self._mllm_slot(ptr, 1, 0), mask_out], self.mllm_cfg)
        else:
            self._launch(src, [self._mllm_slot(ptr, 1, 0)], self.mllm_cfg)
            self._launch(src, [mask_out], self.mask_cfg)
        return self._download(mllm_view), self._download(mask_view)

    # ------------------------------------------------------------------ postprocess
    def mask_and_box(self, logits, height, width):
        from tpo.kernels import postprocess_mask

        logits = _squeeze_logits(logits)
        if logits.dtype != np.float16:
            logits = logits.astype(np.float32, copy=False)
        logits = np.ascontiguousarray(logits)
        height, width = int(height), int(width)
        lptr = self._buffer("logits", logits.nbytes)
        self.device.copy_to_device(lptr, logits, self.stream)
        lview = self._view("logits", lptr, logits.shape, logits.dtype)
        mview = self._view("mask_out", self._buffer("mask_out", height * width), (height, width), np.uint8)
        stats = postprocess_mask(self.device, lview, height=height, width=width, threshold=0.0, mask=mview,
                                 stream=self.stream)
        mask = self._download(mview).view(np.bool_)  # the kernel writes 0 / 1
        if stats.box is None:
            return mask, None
        x0, y0, x1, y1 = stats.box  # inclusive pixel indices -> pixel edges, as runtime.postprocess
        return mask, [float(x0), float(y0), float(x1 + 1), float(y1 + 1)]


# ---------------------------------------------------------------------- choosing the path

def self_check(path: FramePath, pre: Preprocess) -> str | None:
    """Run `path` once on a tiny frame and logits against the CPU path; None if they agree, else one line."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (7, 9, 3), np.uint8)
    logits = rng.normal(0, 2, (5, 6)).astype(np.float32)
    small = replace(pre, mllm=replace(pre.mllm, image_size=6), mask=replace(pre.mask, image_size=11))
    cpu = CpuFramePath(small, "self-check")
    probe = KernelFramePath(small, path.device, "self-check")
    try:
        video, mask = probe.frame_inputs(frame)
        want_video, want_mask = cpu.frame_inputs(frame)
        got_mask, got_box = probe.mask_and_box(logits, 13, 17)
        want, want_box = cpu.mask_and_box(logits, 13, 17)
    finally:
        probe.close()
    level = 1.0 / (255 * min(pre.mllm.std))
    if np.abs(video - want_video).max() > level + 1e-5 or np.abs(mask - want_mask).max() > 1e-4:
        return (f"self-check: kernel pixels differ from the CPU path by up to "
                f"{max(np.abs(video - want_video).max(), np.abs(mask - want_mask).max()):.3g}")
    if (got_mask != want).sum() > 2 or (got_box is None) != (want_box is None):
        return f"self-check: kernel mask differs from the CPU path ({int((got_mask != want).sum())} pixels)"
    return None


def _warn(line: str, stderr) -> None:
    print(f"tpo.runtime: WARNING: {line}", file=stderr if stderr is not None else sys.stderr, flush=True)


def select_frame_path(pre: Preprocess, device=None, *, prefer: str = "auto", ordinal: int = 0, stderr=None,
                      probe: Callable | None = None) -> FramePath:
    """The session's frame path, chosen once.

    pre: the manifest's `Preprocess`.
    device: a tpo.kernels Device to use as is (a GpuDevice shared with other code, or an EmulatedDevice in
    tests). prefer: "auto" (the kernels when a GPU can run them), "cpu" (the CPU path, e.g. to compare) or
    "gpu" (the kernels or GpuUnavailableError). probe: stands in for tpo.kernels.available (tests).
    A GPU that is present but unusable gives the CPU path and a WARNING line on `stderr` (default sys.stderr).
    """
    if prefer not in ("auto", "cpu", "gpu"):
        raise InputError(f"frame path preference {prefer!r}: use auto, cpu or gpu")
    if device is not None:
        where = "the CPU emulation of the CUDA sources (tests; slow)" if device.kind != "gpu" else \
            f"{getattr(device, 'name', 'GPU')} ({getattr(device, 'arch', '?')})"
        return KernelFramePath(pre, device, f"{where}, device given by the caller")
    if prefer == "cpu":
        return CpuFramePath(pre, "CPU path requested")

    from tpo.kernels import GpuDevice
    from tpo.kernels.errors import GpuUnavailableError

    if probe is None:
        from tpo.kernels import available as probe
    kernel_path = probe(ordinal)
    if not kernel_path.gpu:
        if prefer == "gpu":
            raise GpuUnavailableError(f"frame path: gpu requested but {kernel_path.reason}")
        if kernel_path.device:  # a GPU is there but the kernels cannot run on it: say so loudly
            _warn(f"{kernel_path.device} present but the GPU kernels cannot run: {kernel_path.reason}; "
                  "the frame path falls back to the CPU", stderr)
            return CpuFramePath(pre, f"WARNING: GPU {kernel_path.device} present but unusable: {kernel_path.reason}")
        return CpuFramePath(pre, kernel_path.reason)

    name = f"{kernel_path.device} ({kernel_path.arch})"
    try:
        dev = GpuDevice(ordinal)
        path = KernelFramePath(pre, dev, kernel_path.reason)
        problem = self_check(path, pre)
    except Exception as e:  # a build, load or launch failure of any kind: report it, never hide it
        problem = f"{type(e).__name__}: {e}".splitlines()[0]
    if problem:
        if prefer == "gpu":
            raise GpuUnavailableError(f"frame path: the GPU kernels failed on {name}: {problem}")
        _warn(f"the GPU kernels failed on {name}: {problem}; the frame path falls back to the CPU", stderr)
        return CpuFramePath(pre, f"WARNING: GPU kernels failed on {name}: {problem}")
    return path
