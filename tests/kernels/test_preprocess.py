"""Preprocess kernel, run over its whole grid on the CPU, against the numpy reference.

Frame sizes are odd and distinct on purpose (a swapped axis fails); rows are padded (pitch > width x
bytes per pixel) with random bytes. Tolerance: see assert_matches_reference in conftest.py.
"""

import numpy as np
import pytest

from tpo.kernels import EmulatedDevice, Frame, ImageOutput, preprocess
from tpo.kernels import reference as ref
from tpo.kernels.sources import constant

DTYPES = {"f32": np.float32, "f16": np.float16, "u8": np.uint8}
FORMATS = ("bgr", "rgb", "bgra", "nv12")


def run(device, frame, sizes_and_dtypes, **kw):
    outs = [np.full((3, h, w), 7, DTYPES[dt]) for h, w, dt in sizes_and_dtypes]
    preprocess(device, frame, [ImageOutput.from_array(o) for o in outs], **kw)
    return outs


class TestFormats:
    @pytest.mark.parametrize("format", FORMATS)
    @pytest.mark.parametrize(
        "width, height, pad, outputs",
        [
            (97, 61, 13, [(37, 53, "f32"), (29, 41, "f16")]),  # downscale both axes
            (45, 31, 5, [(67, 83, "u8"), (31, 45, "f32")]),  # upscale; one output at the frame size
            (200, 7, 1, [(3, 17, "f16")]),  # 11.8x downscale in x, upscale in y, one output
        ],
    )
    def test_matches_reference(
        self, emulated, rng, frame_factory, check_reference, format, width, height, pad, outputs
    ):
        frame, rgb, _ = frame_factory(rng, format, width, height, pad)
        results = run(emulated, frame, outputs)
        for (*_, dtype), out in zip(outputs, results, strict=True):
            check_reference(out, rgb, dtype)

    @pytest.mark.parametrize("format", FORMATS)
    def test_model_sizes_in_one_launch(self, emulated, rng, frame_factory, check_reference, format):
        """Both model inputs (224 for the video encoder, 1024 for the mask encoder) from one frame."""
        frame, rgb, _ = frame_factory(rng, format, 321, 179, 3)
        video, mask = run(emulated, frame, [(224, 224, "f16"), (1024, 1024, "f32")])
        check_reference(video, rgb, "f16")
        check_reference(mask, rgb, "f32")


class TestNV12:
    @pytest.mark.parametrize("width, height", [(64, 48), (63, 47), (64, 47), (63, 48), (1, 1)])
    def test_odd_and_even_sizes(self, emulated, rng, frame_factory, check_reference, width, height):
        """Odd widths/heights: pixel (x, y) uses chroma pair x // 2 of chroma row y // 2."""
        frame, rgb, _ = frame_factory(rng, "nv12", width, height, 2)
        (out,) = run(emulated, frame, [(35, 29, "u8")])
        check_reference(out, rgb, "u8")

    def test_decoding_equals_opencv(self, rng):
        import cv2

        buffer = rng.integers(0, 256, (48 * 3 // 2, 64), np.uint8)
        expected = cv2.cvtColor(buffer, cv2.COLOR_YUV2RGB_NV12)
        np.testing.assert_array_equal(ref.frame_to_rgb(buffer, "nv12", 64, 48, 64), expected)

    def test_separate_chroma_plane_with_own_pitch(self, emulated, rng, check_reference):
        width, height = 51, 33
        luma = rng.integers(0, 256, (height, 60), np.uint8)
        chroma = rng.integers(0, 256, ((height + 1) // 2, 70), np.uint8)
        frame = Frame(
            luma.ctypes.data, width, height, 60, "nv12", uv_ptr=chroma.ctypes.data, uv_pitch=70, where="host"
        )
        (out,) = run(emulated, frame, [(40, 24, "u8")])
        rgb = ref.nv12_to_rgb(luma[:, :width], chroma)
        check_reference(out, rgb, "u8")


class TestLayout:
    def test_writes_one_frame_of_a_clip(self, emulated, rng, frame_factory, check_reference):
        """A [3, H, W] slice of a [1, 3, T, H, W] clip: channel planes T*H*W apart, nothing else touched."""
        frame, rgb, _ = frame_factory(rng, "rgb", 50, 40, 0)
        clip = np.full((1, 3, 5, 19, 23), 9.0, np.float32)
        preprocess(emulated, frame, [ImageOutput.from_array(clip[0, :, 2])])
        check_reference(clip[0, :, 2], rgb, "f32")
        others = np.delete(clip[0], 2, axis=1)
        assert (others == 9.0).all()

    def test_identity_size_is_exact(self, emulated, rng, frame_factory):
        frame, rgb, _ = frame_factory(rng, "bgr", 33, 21, 4)
        (out,) = run(emulated, frame, [(21, 33, "u8")])
        np.testing.assert_array_equal(out, rgb.transpose(2, 0, 1))

    def test_ties_round_half_to_even(self, emulated):
        """Halving a 2-pixel row averages the pair exactly; odd sums land on x.5, which torch.round
        (and the kernel's rintf) send to the even neighbour."""
        pairs = np.array([[0, 1], [2, 1], [3, 2], [254, 255], [7, 7]], np.uint8)  # means 0.5 1.5 2.5 254.5 7
        rgb = np.repeat(pairs[:, :, None], 3, axis=2)
        (out,) = run(emulated, Frame.from_array(rgb, "rgb"), [(5, 1, "u8")])
        np.testing.assert_array_equal(out[:, :, 0], [[0, 2, 2, 254, 7]] * 3)

    def test_downscale_past_the_stored_taps(self, emulated, rng, frame_factory, check_reference):
        """Over ~23x in x the kernel recomputes weights per row instead of storing them."""
        max_taps = constant("PREPROCESS_MAX_TAPS")
        width = 3 * (max_taps // 4 + 8)
        frame, rgb, _ = frame_factory(rng, "bgra", width, 9, 0)
        (out,) = run(emulated, frame, [(4, 3, "f32")])
        assert 4.0 * width / 3 + 2 > max_taps
        check_reference(out, rgb, "f32")

    def test_custom_mean_and_std(self, emulated, rng, frame_factory, check_reference):
        frame, rgb, _ = frame_factory(rng, "rgb", 30, 20, 0)
        mean, std = (0.5, 0.25, 0.0), (0.5, 2.0, 1.0)
        (out,) = run(emulated, frame, [(11, 13, "f32")], mean=mean, std=std)
        check_reference(out, rgb, "f32", mean, std)


class TestHalfConversion:
    """The emulation's float -> half stands in for the GPU's cvt.rn.f16.f32: round to nearest even."""

    def test_every_half_round_trips(self, emulated):
        halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
        finite = halves[np.isfinite(halves)]
        np.testing.assert_array_equal(
            emulated.f32_to_f16(finite.astype(np.float32)).view(np.uint16), finite.view(np.uint16)
        )
        np.testing.assert_array_equal(emulated.f16_to_f32(finite), finite.astype(np.float32))

    def test_rounding_matches_numpy(self, emulated, rng):
        bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
        values = bits.view(np.float32)
        values = np.concatenate(
            [
                values[np.isfinite(values)],
                [65504.0, 65519.99, 65520.0, 2.0**-25, 2.0**-24 * 1.5, np.inf, -0.0],
            ]
        ).astype(np.float32)
        with np.errstate(over="ignore"):
            expected = values.astype(np.float16)
        np.testing.assert_array_equal(emulated.f32_to_f16(values).view(np.uint16), expected.view(np.uint16))


class TestTuningOverrides:
    """Kernels compiled with -D overrides (as tests/gpu times them) still cover the whole output."""

    @pytest.mark.parametrize("rows", [1, 3])
    def test_rows_per_thread(self, rng, frame_factory, check_reference, rows):
        device = EmulatedDevice(defines={"TPO_PREPROCESS_ROWS": rows})
        assert device.constant("PREPROCESS_ROWS") == rows
        frame, rgb, _ = frame_factory(rng, "nv12", 91, 57, 3)
        video, mask = run(device, frame, [(23, 31, "f16"), (101, 67, "f32")])
        check_reference(video, rgb, "f16")
        check_reference(mask, rgb, "f32")


class TestFloatResize:
    """round_u8=False (SAM2's mask encoder input): the resize kept in float, neither clamped nor rounded."""

    @staticmethod
    def check_float(out, rgb, dtype, mean=ref.IMAGENET_MEAN, std=ref.IMAGENET_STD):
        """Float32 arithmetic against the float64 resize: 2e-5 on the normalised scale for f32 (a few
        1e-3 of a uint8 level), and for f16 one half-precision step at |x| < 4 (2^-9) on top."""
        _, height, width = out.shape
        expected = ref.preprocess_reference(rgb, height, width, dtype, mean, std, round_u8=False)
        assert out.dtype == expected.dtype
        diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
        assert diff.max() <= (2e-5 if dtype == "f32" else 2e-5 + 2.0**-9), diff.max()

    @pytest.mark.parametrize("format", FORMATS)
    @pytest.mark.parametrize(
        "width, height, outputs",
        [
            (97, 61, [(37, 53, "f32"), (29, 41, "f16")]),  # downscale both axes
            (45, 31, [(67, 83, "f32")]),  # upscale: bicubic overshoots below 0 and above 255, kept
            (200, 7, [(3, 17, "f32")]),  # 67x downscale in x
        ],
    )
    def test_matches_reference(self, emulated, rng, frame_factory, format, width, height, outputs):
        frame, rgb, _ = frame_factory(rng, format, width, height, 3)
        outs = [np.full((3, h, w), 7, DTYPES[dt]) for h, w, dt in outputs]
        preprocess(emulated, frame, [ImageOutput.from_array(o, round_u8=False) for o in outs])
        for (*_, dtype), out in zip(outputs, outs, strict=True):
            self.check_float(out, rgb, dtype)

    def test_upscale_overshoot_is_not_clamped(self, emulated):
        """A hard 0 | 255 edge upscaled 8x rings past both ends; only the rounded output clamps it."""
        rgb = np.zeros((4, 4, 3), np.uint8)
        rgb[:, 2:] = 255
        rounded, unrounded = np.zeros((2, 3, 32, 32), np.float32)
        preprocess(
            emulated,
            Frame.from_array(rgb, "rgb"),
            [ImageOutput.from_array(rounded), ImageOutput.from_array(unrounded, round_u8=False)],
            mean=(0, 0, 0),
            std=(1, 1, 1),
        )
        assert rounded.min() == 0.0 and rounded.max() == 1.0
        assert unrounded.min() < -0.01 and unrounded.max() > 1.01
        self.check_float(unrounded, rgb, "f32", (0, 0, 0), (1, 1, 1))

    def test_model_inputs_in_one_launch(self, emulated, rng, frame_factory, check_reference):
        """The runtime's pair: the video input rounded (torchvision) and the mask input in float, one launch."""
        frame, rgb, _ = frame_factory(rng, "rgb", 123, 77, 0)
        video, mask = np.zeros((3, 56, 56), np.float32), np.zeros((3, 256, 256), np.float32)
        preprocess(
            emulated, frame, [ImageOutput.from_array(video), ImageOutput.from_array(mask, round_u8=False)]
        )
        check_reference(video, rgb, "f32")
        self.check_float(mask, rgb, "f32")
