"""Compile the kernels with NVRTC (through cuda-bindings) and cache the cubins.

A cubin is named `<kernel>-<arch>-<source hash>-nvrtc<major>.<minor>.cubin`; the hash covers the
kernel's source, its headers and any -D overrides, so editing a source or upgrading NVRTC builds anew.
The cache directory is $TPO_KERNELS_CACHE, else $XDG_CACHE_HOME/tpo-edge/kernels, else
~/.cache/tpo-edge/kernels. `tpo-kernels build` fills it ahead of time; a box without NVRTC can load
cubins copied there (any NVRTC version of the same source hash).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tpo.kernels.errors import KernelBuildError
from tpo.kernels.sources import KERNELS, KernelSource, define_options, header_sources, source_hash

DEFAULT_ARCHS = ("sm_87", "sm_90")  # Jetson Orin, Hopper


@dataclass(frozen=True)
class BuiltCubin:
    kernel: KernelSource
    arch: str
    path: Path
    nbytes: int
    log: str  # NVRTC's messages (warnings); empty for a clean build


def cache_dir() -> Path:
    if os.environ.get("TPO_KERNELS_CACHE"):
        return Path(os.environ["TPO_KERNELS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tpo-edge" / "kernels"


def _module():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        raise KernelBuildError(
            "cuda-bindings is not installed, so NVRTC cannot be used (pip install 'tpo-edge[gpu]')"
        ) from e
    return nvrtc


def nvrtc_package() -> str:
    """The pip package that provides the NVRTC library matching the installed cuda-bindings."""
    try:
        from cuda.bindings import __version__
    except ImportError:
        return "nvidia-cuda-nvrtc-cu12"
    major = int(__version__.split(".")[0])
    return "nvidia-cuda-nvrtc" if major >= 13 else f"nvidia-cuda-nvrtc-cu{major}"


def nvrtc_version() -> tuple[int, int]:
    nvrtc = _module()
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except (OSError, RuntimeError) as e:  # cuda-pathfinder raises DynamicLibNotFoundError (a RuntimeError)
        raise KernelBuildError(f"the NVRTC library was not found (pip install {nvrtc_package()})") from e
    _check(nvrtc, err, "nvrtcVersion")
    return int(major), int(minor)


def supported_archs() -> tuple[str, ...]:
    nvrtc = _module()
    nvrtc_version()
    err, archs = nvrtc.nvrtcGetSupportedArchs()
    _check(nvrtc, err, "nvrtcGetSupportedArchs")
    return tuple(f"sm_{a}" for a in archs)


def parse_archs(text: str) -> tuple[str, ...]:
    """ "sm_87,sm_90" -> ("sm_87", "sm_90"); each must be sm_<digits> (optionally with an "a" suffix)."""
    archs = tuple(a.strip() for a in text.split(",") if a.strip())
    for arch in archs:
        if not re.fullmatch(r"sm_\d{2,3}a?", arch):
            raise KernelBuildError(f"architecture {arch!r} is not of the form sm_87 or sm_90a")
    if not archs:
        raise KernelBuildError("no architecture given: pass e.g. --arch sm_87,sm_90")
    return archs


def compile_cubin(
    kernel: KernelSource, arch: str, defines: Mapping[str, int] | None = None
) -> tuple[bytes, str]:
    """Compile one kernel for one architecture: (cubin bytes, NVRTC log)."""
    nvrtc = _module()
    version = nvrtc_version()
    base_arch = arch.rstrip("a")
    if base_arch not in supported_archs():
        raise KernelBuildError(
            f"NVRTC {version[0]}.{version[1]} cannot compile for {arch}; it supports {', '.join(supported_archs())}"
        )
    headers = header_sources()
    err, prog = nvrtc.nvrtcCreateProgram(
        kernel.source().encode(),
        kernel.file.encode(),
        len(headers),
        [text.encode() for text in headers.values()],
        [name.encode() for name in headers],
    )
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        options = [f"--gpu-architecture={arch}", "--std=c++17", *define_options(defines)]
        encoded = [o.encode() for o in options]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        log = _program_log(nvrtc, prog)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            first = next((line for line in log.splitlines() if "error" in line), log.strip()[:200])
            raise KernelBuildError(
                f"NVRTC {version[0]}.{version[1]} failed to compile {kernel.file} for {arch}: {first.strip()}"
            )
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _check(nvrtc, err, "nvrtcGetCUBINSize")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _check(nvrtc, err, "nvrtcGetCUBIN")
        return cubin, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def cubin_filename(
    kernel: KernelSource, arch: str, defines: Mapping[str, int] | None, version: tuple[int, int]
) -> str:
    digest = source_hash(kernel, define_options(defines))
    return f"{kernel.name}-{arch}-{digest}-nvrtc{version[0]}.{version[1]}.cubin"


def find_prebuilt(
    kernel: KernelSource, arch: str, defines: Mapping[str, int] | None = None, directory=None
) -> Path | None:
    """A cached cubin of this exact source for `arch`, whichever NVRTC built it (newest first)."""
    directory = Path(directory) if directory else cache_dir()
    digest = source_hash(kernel, define_options(defines))
    found = sorted(
        directory.glob(f"{kernel.name}-{arch}-{digest}-nvrtc*.cubin"), key=_version_key, reverse=True
    )
    return found[0] if found else None


def load_cubin(kernel: KernelSource, arch: str, defines: Mapping[str, int] | None = None) -> bytes:
    """The cubin for `arch`: from the cache when present, else compiled now and cached."""
    try:
        version = nvrtc_version()
    except KernelBuildError:
        prebuilt = find_prebuilt(kernel, arch, defines)
        if prebuilt is None:
            raise
        return prebuilt.read_bytes()
    path = cache_dir() / cubin_filename(kernel, arch, defines, version)
    if path.is_file():
        return path.read_bytes()
    cubin, _ = compile_cubin(kernel, arch, defines)
    _write_atomically(path, cubin)
    return cubin


def build_cubins(
    archs: Iterable[str], out_dir: str | Path | None = None, kernels: Iterable[KernelSource] = KERNELS
) -> list[BuiltCubin]:
    """Compile every kernel for every architecture into `out_dir` (default: the cache directory). All or
    nothing: every architecture is checked and every cubin compiled before the first file is written, so a
    bad architecture in the list leaves no files of the good ones behind."""
    out = Path(out_dir) if out_dir else cache_dir()
    version = nvrtc_version()
    archs, kernels = tuple(archs), tuple(kernels)
    unsupported = [a for a in archs if a.rstrip("a") not in supported_archs()]
    if unsupported:
        raise KernelBuildError(f"NVRTC {version[0]}.{version[1]} cannot compile for {', '.join(unsupported)}; it "
                               f"supports {', '.join(supported_archs())}; nothing was built")
    compiled = [(kernel, arch, *compile_cubin(kernel, arch)) for arch in archs for kernel in kernels]
    built = []
    for kernel, arch, cubin, log in compiled:
        path = out / cubin_filename(kernel, arch, None, version)
        _write_atomically(path, cubin)
        built.append(BuiltCubin(kernel, arch, path, len(cubin), log))
    return built


def why_not_loadable(arch: str, driver_version: int) -> str | None:
    """None if every kernel can be had for `arch` under this driver; else one line saying why not."""
    driver_major = driver_version // 1000
    try:
        major, minor = nvrtc_version()
    except KernelBuildError as e:
        missing = [k.name for k in KERNELS if find_prebuilt(k, arch) is None]
        if not missing:
            return None
        return f"{e} and {cache_dir()} holds no prebuilt {arch} cubins for {', '.join(missing)} (tpo-kernels build --arch {arch})"
    if major > driver_major:
        return (
            f"NVRTC {major}.{minor} is newer than the driver (CUDA {driver_major}.x), whose loader would refuse "
            f"its cubins: install cuda-bindings {driver_major}.x and nvidia-cuda-nvrtc-cu{driver_major}"
        )
    if arch.rstrip("a") not in supported_archs():
        return f"NVRTC {major}.{minor} cannot compile for {arch}"
    return None


def describe_build(arch: str) -> str:
    try:
        major, minor = nvrtc_version()
        return f"kernels built with NVRTC {major}.{minor} for {arch}, cached in {cache_dir()}"
    except KernelBuildError:
        return f"prebuilt {arch} kernels from {cache_dir()} (NVRTC not installed)"


def _program_log(nvrtc, prog) -> str:
    err, size = nvrtc.nvrtcGetProgramLogSize(prog)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS or size <= 1:
        return ""
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    return log.rstrip(b"\0").decode(errors="replace").strip()


def _check(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise KernelBuildError(f"{what} failed: {err.name}")


def _version_key(path: Path) -> tuple[int, int]:
    m = re.search(r"nvrtc(\d+)\.(\d+)\.cubin$", path.name)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
