"""NVRTC builds for Jetson Orin (sm_87) and Hopper (sm_90), the cubin cache, the CLI, and the GPU probe.

NVRTC compiles without a GPU, so these run in CI (cuda-bindings and the NVRTC wheel come with the
`dev` extra). The probe is tested against a stand-in driver module, since no driver is here.
"""

import ctypes
import struct
import subprocess
import sys

import pytest

import tpo.kernels.nvrtc as nvrtc
import tpo.kernels.path as kpath
from tpo.kernels import EmulatedDevice, KernelBuildError, available
from tpo.kernels.cli import main
from tpo.kernels.sources import KERNELS, SPAN_DECODE


def elf_arch(cubin: bytes) -> int:
    """The SM number a cubin was built for (low byte of the ELF header's e_flags)."""
    assert cubin[:4] == b"\x7fELF" and struct.unpack_from("<H", cubin, 18)[0] == 190  # EM_CUDA
    return struct.unpack_from("<I", cubin, 48)[0] & 0xFF


class TestNvrtcBuild:
    def test_cli_builds_every_kernel_for_orin_and_hopper(self, tmp_path, capsys):
        assert main(["build", "--arch", "sm_87,sm_90", "--out", str(tmp_path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 * len(KERNELS), "one line per kernel x arch, and no NVRTC warnings"
        for kernel in KERNELS:
            for arch in ("sm_87", "sm_90"):
                (path,) = tmp_path.glob(f"{kernel.name}-{arch}-*.cubin")
                cubin = path.read_bytes()
                assert elf_arch(cubin) == int(arch[3:])
                assert kernel.entry.encode() in cubin
                assert any(
                    kernel.name in line and arch in line and f"{len(cubin):,} bytes" in line for line in lines
                )

    def test_cache_compiles_once(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TPO_KERNELS_CACHE", str(tmp_path))
        first = nvrtc.load_cubin(SPAN_DECODE, "sm_90")
        (cached,) = tmp_path.glob("span_decode-sm_90-*-nvrtc*.cubin")
        assert cached.read_bytes() == first

        def refuse(*args, **kwargs):
            raise AssertionError("compiled again although the cubin is cached")

        monkeypatch.setattr(nvrtc, "compile_cubin", refuse)
        assert nvrtc.load_cubin(SPAN_DECODE, "sm_90") == first

    def test_cache_key_covers_defines(self):
        version = (12, 9)
        plain = nvrtc.cubin_filename(SPAN_DECODE, "sm_90", None, version)
        tuned = nvrtc.cubin_filename(SPAN_DECODE, "sm_90", {"TPO_PREPROCESS_ROWS": 2}, version)
        assert plain != tuned and plain.endswith("-nvrtc12.9.cubin")

    def test_unsupported_arch_is_refused(self):
        with pytest.raises(KernelBuildError, match="cannot compile for sm_30"):
            nvrtc.compile_cubin(SPAN_DECODE, "sm_30")

    def test_a_bad_architecture_in_the_list_builds_nothing(self, tmp_path, capsys):
        """All or nothing: sm_87 would compile, sm_10 cannot; no sm_87 file is left behind."""
        assert main(["build", "--arch", "sm_87,sm_10", "--out", str(tmp_path)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "sm_10" in err[0] and "nothing was built" in err[0]
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("text", ["sm87", "compute_90", "", "sm_9"])
    def test_bad_arch_text(self, text):
        with pytest.raises(KernelBuildError):
            nvrtc.parse_archs(text)


class TestCliFailures:
    def test_without_cuda_bindings(self, monkeypatch, capsys):
        hide_module(monkeypatch, "nvrtc")
        assert main(["build", "--arch", "sm_90"]) == 1
        err = capsys.readouterr().err.strip()
        assert (
            err
            == "tpo-kernels: error: cuda-bindings is not installed, so NVRTC cannot be used (pip install 'tpo-edge[gpu]')"
        )

    def test_without_the_nvrtc_library(self, monkeypatch, capsys):
        from cuda.bindings import nvrtc as bindings

        def missing():
            raise RuntimeError("libnvrtc.so.12 not found")

        monkeypatch.setattr(bindings, "nvrtcVersion", missing)
        assert main(["build", "--arch", "sm_90"]) == 1
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and "the NVRTC library was not found (pip install nvidia-cuda-nvrtc" in err
        )

    def test_path_command(self, capsys):
        assert main(["path"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("kernel path: ") and out.count("\n") == 1


def hide_module(monkeypatch, name):
    """Make `from cuda.bindings import <name>` fail as if cuda-bindings were not installed."""
    import cuda.bindings

    monkeypatch.setitem(sys.modules, f"cuda.bindings.{name}", None)
    monkeypatch.delattr(cuda.bindings, name, raising=False)


class FakeDriver:
    """The few cuda.bindings.driver calls `available()` makes, answering like a machine with one GPU."""

    def __init__(self, count=1, cc=(9, 0), version=12060, init_error=None):
        from cuda.bindings import driver

        self.CUresult, self.CUdevice_attribute = driver.CUresult, driver.CUdevice_attribute
        self.count, self.cc, self.version, self.init_error = count, cc, version, init_error

    def cuInit(self, flags):
        if isinstance(self.init_error, Exception):
            raise self.init_error
        return (self.init_error or self.CUresult.CUDA_SUCCESS,)

    def cuDeviceGetCount(self):
        return self.CUresult.CUDA_SUCCESS, self.count

    def cuDeviceGet(self, ordinal):
        return self.CUresult.CUDA_SUCCESS, ordinal

    def cuDeviceGetName(self, length, dev):
        return self.CUresult.CUDA_SUCCESS, b"NVIDIA Fake GPU\0\0"

    def cuDeviceGetAttribute(self, attr, dev):
        major = attr == self.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        return self.CUresult.CUDA_SUCCESS, self.cc[0] if major else self.cc[1]

    def cuDriverGetVersion(self):
        return self.CUresult.CUDA_SUCCESS, self.version


class TestAvailable:
    def use(self, monkeypatch, fake):
        import cuda.bindings

        monkeypatch.setitem(sys.modules, "cuda.bindings.driver", fake)
        monkeypatch.setattr(cuda.bindings, "driver", fake, raising=False)

    def test_this_machine(self):
        path = available()
        assert path.kind in ("gpu", "cpu") and path.reason and "\n" not in path.reason

    def test_without_cuda_bindings_and_without_gpu_no_install_hint(self, monkeypatch):
        """The README's install (cpu extra: no cuda-bindings) on a machine with no GPU: say so, and that
        the CPU path runs; telling that user to install GPU packages would be wrong."""
        hide_module(monkeypatch, "driver")
        for answer, why in ((kpath.NO_DRIVER, "no NVIDIA driver"), (0, "reports no CUDA device"),
                            ("the NVIDIA driver did not initialise (cuInit error 999)", "cuInit error 999")):
            monkeypatch.setattr(kpath, "driver_device_count", lambda answer=answer: answer)
            path = available()
            assert not path.gpu and why in path.reason and "pip install" not in path.reason
        monkeypatch.setattr(kpath, "driver_device_count", lambda: kpath.NO_DRIVER)
        assert str(available()) == (
            "kernel path: cpu (no GPU present: no NVIDIA driver (libcuda could not be loaded), so the CPU path runs)"
        )

    def test_without_cuda_bindings_on_a_gpu_machine_gives_the_hint(self, monkeypatch):
        hide_module(monkeypatch, "driver")
        monkeypatch.setattr(kpath, "driver_device_count", lambda: 2)
        path = available()
        assert not path.gpu
        assert path.reason == "2 NVIDIA GPU(s) present but cuda-bindings is not installed (pip install 'tpo-edge[gpu]')"

    def test_without_cuda_bindings_on_this_machine(self, monkeypatch):
        hide_module(monkeypatch, "driver")
        count = kpath.driver_device_count()
        reason = available().reason
        assert "\n" not in reason
        assert ("pip install 'tpo-edge[gpu]'" in reason) == (isinstance(count, int) and count > 0)

    def test_driver_asked_through_ctypes(self):
        """`driver_device_count` calls libcuda's cuInit and cuDeviceGetCount (no cuda-bindings needed)."""

        class Lib:
            def __init__(self, init, count):
                self.init, self.count, self.calls = init, count, []

            def cuInit(self, flags):  # noqa: N802  (the driver's name)
                self.calls.append("cuInit")
                return self.init

            def cuDeviceGetCount(self, ref):  # noqa: N802
                self.calls.append("cuDeviceGetCount")
                ref._obj.value = self.count
                return 0

        def missing(name):
            raise OSError(f"{name}: cannot open shared object file")

        assert kpath.driver_device_count(missing) == kpath.NO_DRIVER
        lib = Lib(0, 3)
        assert kpath.driver_device_count(lambda name: lib) == 3 and lib.calls == ["cuInit", "cuDeviceGetCount"]
        assert kpath.driver_device_count(lambda name: Lib(100, 0)) == 0          # CUDA_ERROR_NO_DEVICE
        assert "cuInit error 999" in kpath.driver_device_count(lambda name: Lib(999, 0))

    def test_without_driver(self, monkeypatch):
        self.use(
            monkeypatch, FakeDriver(init_error=RuntimeError("libcuda.so.1: cannot open shared object file"))
        )
        path = available()
        assert not path.gpu and path.reason == (
            "no GPU present: no NVIDIA driver (libcuda could not be loaded), so the CPU path runs"
        )

    def test_without_device(self, monkeypatch):
        from cuda.bindings import driver

        no_device = "no GPU present: the NVIDIA driver reports no CUDA device, so the CPU path runs"
        self.use(monkeypatch, FakeDriver(init_error=driver.CUresult.CUDA_ERROR_NO_DEVICE))
        assert available().reason == no_device
        self.use(monkeypatch, FakeDriver(count=0))
        assert available().reason == no_device

    def test_gpu_found(self, monkeypatch):
        self.use(monkeypatch, FakeDriver(cc=(8, 7)))
        path = available()
        assert path.gpu and path.arch == "sm_87" and path.device == "NVIDIA Fake GPU"
        assert str(path).startswith(
            "kernel path: gpu (NVIDIA Fake GPU (sm_87, driver CUDA 12.6); kernels built with NVRTC"
        )

    def test_driver_older_than_nvrtc(self, monkeypatch):
        self.use(monkeypatch, FakeDriver(version=11080))
        path = available()
        assert not path.gpu and "is newer than the driver (CUDA 11.x)" in path.reason

    def test_arch_nvrtc_cannot_target(self, monkeypatch):
        self.use(monkeypatch, FakeDriver(cc=(3, 0)))
        assert available().reason.endswith("cannot compile for sm_30")

    def test_prebuilt_cubins_without_nvrtc(self, monkeypatch, tmp_path):
        self.use(monkeypatch, FakeDriver())
        hide_module(monkeypatch, "nvrtc")
        monkeypatch.setenv("TPO_KERNELS_CACHE", str(tmp_path))
        path = available()
        assert (
            not path.gpu
            and "holds no prebuilt sm_90 cubins for preprocess, mask_postprocess, span_decode" in path.reason
        )
        for kernel in KERNELS:  # names as `tpo-kernels build` writes them
            (tmp_path / nvrtc.cubin_filename(kernel, "sm_90", None, (12, 9))).write_bytes(b"\x7fELF")
        path = available()
        assert path.gpu and "prebuilt sm_90 kernels" in path.reason


class TestEmulationBuild:
    def test_struct_mirrors_are_checked(self):
        from tpo.kernels.params import SpanParams

        class Swapped(ctypes.Structure):
            _fields_ = [(name, kind) for name, kind in SpanParams._fields_[::-1]]

        with pytest.raises(RuntimeError, match="tpo.kernels.params.SpanParams does not match the C struct"):
            EmulatedDevice(structs={"SpanParams": Swapped})


def test_package_imports_neither_torch_nor_cuda_bindings():
    """The runtime imports tpo.kernels on numpy-only boxes; cuda-bindings loads when a GPU is probed.
    (cuda-bindings' .pth file imports the bare `cuda` namespace at startup, which is harmless.)"""
    code = (
        "import sys, tpo.kernels, tpo.kernels.reference, tpo.kernels.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('cuda.bindings')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
