"""runtime.frame_path: the session's choice of frame path, and the kernel path against the CPU path.

On a machine without a GPU `select_frame_path` must take the CPU path and say why in one line; a GPU that is
present but unusable must be reported loudly. The kernel path itself runs here on the kernels' CPU emulation
(the same .cu sources compiled by g++, `tpo.kernels.EmulatedDevice`) and must give what runtime.preprocess and
runtime.postprocess give: mask encoder pixels within 1e-5 at the model's 1024 (5e-5 at odd sizes, see
MASK_TOL), vision encoder pixels equal up to float32 ulps
(x / 255 on the GPU vs x * (1 / 255) in numpy) except where the resize lands on a rounding tie (x.5, counted),
masks with IoU >= 0.999 and equal boxes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from tpo.contract import Preprocess
from tpo.contract.manifest import MaskPreprocess, MllmPreprocess, TemporalPreprocess
from tpo.errors import InputError
from tpo.kernels import EmulatedDevice, GpuUnavailableError, KernelPath, available
from tpo.kernels import reference as ref
from tpo.runtime import postprocess, preprocess
from tpo.runtime.frame_path import CpuFramePath, KernelFramePath, select_frame_path

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
TEMPORAL = TemporalPreprocess("internal", 1.0, 1, 24)
MODEL_PRE = Preprocess(MllmPreprocess(224, 4, **IMAGENET), MaskPreprocess(1024, **IMAGENET), TEMPORAL)
# odd sizes, and mean/std that differ between the two inputs (the kernel path then needs two launches)
ODD_PRE = Preprocess(MllmPreprocess(45, 3, (0.5, 0.4, 0.3), (0.26, 0.27, 0.28)), MaskPreprocess(131, **IMAGENET),
                     TEMPORAL)
PRES = {"model sizes": MODEL_PRE, "odd sizes": ODD_PRE}
# Mask encoder pixels, kernel vs numpy. The kernel computes source positions in float32 as torch does (scale =
# in / out, centre = scale * (i + 0.5)); numpy's taps come from float64. At out = 1024 the scale is exact and
# both stay within ~2e-6 of the float64 resize; at 131 the kernel's positions move values by up to ~3e-5
# (~0.002 of a uint8 level; numpy stays at ~1e-6), as torch's own float32 resize does.
MASK_TOL = {"model sizes": 1e-5, "odd sizes": 5e-5}
SIZES = [(37, 53), (240, 320)]  # (height, width)


@pytest.fixture(scope="module")
def device():
    return EmulatedDevice()


@pytest.fixture
def rng(request):
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def as_format(rgb: np.ndarray, format: str) -> np.ndarray:
    if format == "rgb":
        return rgb
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if format == "bgr":
        return bgr
    alpha = np.full(rgb.shape[:-1] + (1,), 77, np.uint8)  # ignored
    return np.concatenate([bgr, alpha], axis=-1)


def count_launches(device, monkeypatch) -> list:
    launches = []
    launch = device.launch
    monkeypatch.setattr(device, "launch", lambda kernel, *a, **k: (launches.append(kernel.name), launch(kernel, *a, **k)))
    return launches


# ---------------------------------------------------------------------- choosing the path

class TestSelect:
    def test_this_machine_takes_the_cpu_path_and_says_why(self):
        probe = available()
        if probe.gpu:
            pytest.skip(f"this machine has a GPU: {probe.reason}")
        err = io.StringIO()
        path = select_frame_path(MODEL_PRE, stderr=err)
        assert isinstance(path, CpuFramePath) and path.kind == "cpu"
        assert path.describe() == f"frame path: cpu ({probe.reason})"
        assert "\n" not in path.describe() and err.getvalue() == ""

    def test_cpu_requested(self):
        assert select_frame_path(MODEL_PRE, prefer="cpu").describe() == "frame path: cpu (CPU path requested)"

    def test_gpu_present_but_kernels_unavailable_is_loud(self):
        """available() found a GPU but cannot run the kernels there (e.g. NVRTC newer than the driver)."""
        reason = "NVIDIA H200 (sm_90, driver CUDA 12.2) found, but NVRTC 13.0 is newer than the driver"
        err = io.StringIO()
        path = select_frame_path(MODEL_PRE, stderr=err,
                                 probe=lambda _: KernelPath("cpu", reason, "NVIDIA H200", "sm_90"))
        assert path.kind == "cpu"
        assert path.describe() == f"frame path: cpu (WARNING: GPU NVIDIA H200 present but unusable: {reason})"
        line = err.getvalue()
        assert line.startswith("tpo.runtime: WARNING: NVIDIA H200 present but the GPU kernels cannot run: ")
        assert line.count("\n") == 1 and "falls back to the CPU" in line

    def test_kernels_failing_on_a_gpu_is_loud(self):
        """The probe says gpu but the device cannot be opened or the kernels fail: CPU path, never silently.
        (Here GpuDevice itself finds no driver, which stands for any build, load or launch failure.)"""
        if available().gpu:
            pytest.skip("this machine has a GPU")
        gpu = KernelPath("gpu", "NVIDIA H200 (sm_90, driver CUDA 12.8); kernels built with NVRTC 12.9",
                         "NVIDIA H200", "sm_90")
        err = io.StringIO()
        path = select_frame_path(MODEL_PRE, stderr=err, probe=lambda _: gpu)
        assert path.kind == "cpu"
        assert path.describe().startswith("frame path: cpu (WARNING: GPU kernels failed on NVIDIA H200 (sm_90): "
                                          "GpuUnavailableError: ")
        assert err.getvalue().startswith("tpo.runtime: WARNING: the GPU kernels failed on NVIDIA H200 (sm_90): ")
        with pytest.raises(GpuUnavailableError, match="frame path: the GPU kernels failed on NVIDIA H200"):
            select_frame_path(MODEL_PRE, prefer="gpu", stderr=io.StringIO(), probe=lambda _: gpu)

    def test_gpu_required_without_one(self):
        probe = KernelPath("cpu", "no NVIDIA driver: libcuda could not be loaded")
        with pytest.raises(GpuUnavailableError, match="gpu requested but no NVIDIA driver"):
            select_frame_path(MODEL_PRE, prefer="gpu", probe=lambda _: probe)

    def test_given_device(self, device):
        path = select_frame_path(MODEL_PRE, device)
        assert isinstance(path, KernelFramePath) and path.kind == "emulated"
        assert path.describe().startswith("frame path: emulated kernels on the CPU emulation")


# ---------------------------------------------------------------------- kernel path == CPU path

@pytest.mark.parametrize("pre_name", PRES)
@pytest.mark.parametrize("format", ["rgb", "bgr", "bgra"])
@pytest.mark.parametrize("height, width", SIZES)
def test_mask_frame(device, rng, pre_name, format, height, width):
    pre = PRES[pre_name]
    rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
    m = pre.mask
    expected = preprocess.mask_frame(rgb, m.image_size, m.mean, m.std)
    got = KernelFramePath(pre, device, "test").mask_frame(as_format(rgb, format), format)
    assert got.shape == expected.shape == (1, 3, m.image_size, m.image_size) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= MASK_TOL[pre_name]
    np.testing.assert_array_equal(CpuFramePath(pre, "test").mask_frame(as_format(rgb, format), format), expected)


def assert_mllm_equal(got: np.ndarray, expected: np.ndarray, frames: np.ndarray, cfg: MllmPreprocess) -> int:
    """Equal uint8 levels except at rounding ties of the resize (returned: how many), float32 ulps elsewhere."""
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32
    mean = np.asarray(cfg.mean, np.float64)[None, :, None, None, None]
    std = np.asarray(cfg.std, np.float64)[None, :, None, None, None]
    levels = [np.rint((x.astype(np.float64) * std + mean) * 255) for x in (got, expected)]
    differ = levels[0] != levels[1]
    assert np.abs(levels[0] - levels[1]).max() <= 1
    size = cfg.image_size
    exact = np.stack([ref.resize_bicubic_aa(f, size, size).transpose(2, 0, 1) for f in frames], axis=1)[None]
    near_tie = np.abs(exact - np.floor(exact) - 0.5) < 5e-3
    assert not (differ & ~near_tie).any(), "levels differ away from a rounding tie"
    assert differ.mean() < 1e-3, f"{int(differ.sum())} ties of {differ.size} values"
    assert np.abs(got - expected)[~differ].max() <= 1e-6  # ulps: x / 255 (kernel, torch) vs x * (1 / 255) (numpy)
    return int(differ.sum())


@pytest.mark.parametrize("pre_name", PRES)
@pytest.mark.parametrize("format", ["rgb", "bgr", "bgra"])
@pytest.mark.parametrize("height, width", SIZES)
def test_mllm_frames(device, rng, pre_name, format, height, width):
    pre = PRES[pre_name]
    cfg = pre.mllm
    frames = rng.integers(0, 256, (cfg.num_frames, height, width, 3), np.uint8)
    expected = preprocess.mllm_pixels(frames, cfg.image_size, cfg.mean, cfg.std)
    got = KernelFramePath(pre, device, "test").mllm_frames(as_format(frames, format), format)
    assert_mllm_equal(got, expected, frames, cfg)
    np.testing.assert_array_equal(CpuFramePath(pre, "test").mllm_frames(as_format(frames, format), format),
                                  expected)


@pytest.mark.parametrize("pre_name", PRES)
def test_frame_inputs_in_one_launch(device, rng, monkeypatch, pre_name):
    pre = PRES[pre_name]
    rgb = rng.integers(0, 256, (61, 83, 3), np.uint8)
    path = KernelFramePath(pre, device, "test")
    launches = count_launches(device, monkeypatch)
    video, mask = path.frame_inputs(rgb)
    same_norm = pre.mllm.mean == pre.mask.mean and pre.mllm.std == pre.mask.std
    assert launches == (["preprocess"] if same_norm else ["preprocess", "preprocess"])
    np.testing.assert_array_equal(video, path.mllm_frames(rgb[None]))
    np.testing.assert_array_equal(mask, path.mask_frame(rgb))
    cpu_video, cpu_mask = CpuFramePath(pre, "test").frame_inputs(rgb)
    assert np.abs(mask - cpu_mask).max() <= MASK_TOL[pre_name]
    assert_mllm_equal(video, cpu_video, rgb[None], pre.mllm)


def smooth_logits(rng, h, w, bias=-0.5):
    coarse = rng.normal(bias, 2.0, (max(h // 8, 2), max(w // 8, 2)))
    return np.ascontiguousarray(ref.upsample_bilinear(coarse, h, w), np.float32)


@pytest.mark.parametrize("logits_hw", [(256, 256), (64, 48)])
@pytest.mark.parametrize("height, width", SIZES)
def test_mask_and_box(device, rng, logits_hw, height, width):
    path = KernelFramePath(MODEL_PRE, device, "test")
    for bias in (-0.5, 1.0):
        logits = smooth_logits(rng, *logits_hw, bias=bias)
        want_mask, want_box = postprocess.mask_and_box(logits, height, width)
        mask, box = path.mask_and_box(logits, height, width)
        assert mask.dtype == np.bool_ and mask.shape == (height, width)
        assert want_mask.any() and postprocess.mask_iou(mask, want_mask) >= 0.999
        assert box == want_box


def test_mask_and_box_edge_cases(device):
    path = KernelFramePath(MODEL_PRE, device, "test")
    empty = np.full((16, 16), -3.0, np.float32)
    assert path.mask_and_box(empty, 45, 77)[1] is None and postprocess.mask_and_box(empty, 45, 77)[1] is None
    full = np.full((1, 1, 16, 16), 3.0, np.float16)  # SAM2's [1, 1, h, w], half precision
    mask, box = path.mask_and_box(full, 45, 77)
    assert mask.all() and box == [0.0, 0.0, 77.0, 45.0] == CpuFramePath(MODEL_PRE, "test").mask_and_box(full, 45, 77)[1]
    one = np.full((32, 32), -10.0, np.float32)
    one[20, 5] = 10.0
    (mask, box), (want_mask, want_box) = path.mask_and_box(one, 128, 96), postprocess.mask_and_box(one, 128, 96)
    assert (mask == want_mask).all() and box == want_box and 0 < mask.sum() < 20


def test_device_views(device, rng):
    """The device buffers of the last call stay reachable for I/O binding (host memory in the emulation)."""
    path = KernelFramePath(ODD_PRE, device, "test")
    pixels = path.mask_frame(rng.integers(0, 256, (20, 30, 3), np.uint8))
    view = path.device_view("mask")
    assert view.shape == (1, 3, 131, 131) and view.dtype == np.float32 and view.where == "host"
    on_device = np.empty(view.shape, view.dtype)
    device.copy_to_host(on_device, view.ptr)
    np.testing.assert_array_equal(on_device, pixels)
    with pytest.raises(KeyError, match="no device buffer 'mllm' yet"):
        path.device_view("mllm")
    path.close()


@pytest.mark.parametrize("kind", ["cpu", "emulated"])
def test_bad_frames_are_refused(device, kind):
    path = CpuFramePath(MODEL_PRE, "test") if kind == "cpu" else KernelFramePath(MODEL_PRE, device, "test")
    with pytest.raises(InputError, match=r"frame must be a uint8 array \[H, W, 4\] \(bgra\)"):
        path.mask_frame(np.zeros((4, 5, 3), np.uint8), "bgra")
    with pytest.raises(InputError, match="unsupported frame format 'nv21'"):
        path.mask_frame(np.zeros((4, 5, 3), np.uint8), "nv21")
    with pytest.raises(InputError, match=r"frames must be a uint8 array \[T, H, W, 3\] \(rgb\), got uint8 \[4, 5, 3\]"):
        path.mllm_frames(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(InputError, match=r"frame must be a uint8 array \[H, W, 3\]"):
        path.mask_frame(np.zeros((1, 4, 5, 3), np.uint8))
    with pytest.raises(InputError, match=r"mask logits must be \[h, w\]"):
        path.mask_and_box(np.zeros((2, 1, 8, 8), np.float32), 10, 10)
    with pytest.raises(InputError, match="empty array"):
        path.mask_frame(np.zeros((0, 5, 3), np.uint8))
