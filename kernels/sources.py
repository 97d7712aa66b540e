"""The CUDA sources of tpo.kernels: which files, which entry points, their constants and hashes.

Sources live beside this file and ship as package data. `common.cuh` is the one place that defines
the format and dtype codes; `constant()` reads them from it so Python never keeps a second copy.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
HEADERS = ("common.cuh",)
EMULATION_HEADER = "cpu_emulation.h"


@dataclass(frozen=True)
class KernelSource:
    """One kernel: its source file, its `extern "C"` entry point and the C name of its parameter struct.

    `name` names the compiled module (and its cached cubin): entries of one file share it."""

    name: str
    file: str
    entry: str
    params: str
    directory: Path = KERNEL_DIR  # where `file` is; headers always come from KERNEL_DIR

    def source(self) -> str:
        return read_source(self.file, self.directory)


PREPROCESS = KernelSource("preprocess", "preprocess.cu", "tpo_preprocess", "PreprocessParams")
MASK_POSTPROCESS = KernelSource(
    "mask_postprocess", "mask_postprocess.cu", "tpo_mask_postprocess", "MaskParams"
)
SPAN_DECODE = KernelSource("span_decode", "span_decode.cu", "tpo_span_decode", "SpanParams")
KERNELS = (PREPROCESS, MASK_POSTPROCESS, SPAN_DECODE)


@functools.cache
def read_source(file: str, directory: Path = KERNEL_DIR) -> str:
    return (directory / file).read_text()


def header_sources(directory: Path = KERNEL_DIR) -> dict[str, str]:
    """Header name -> text, as NVRTC takes them (no include path needed)."""
    return {name: read_source(name, directory) for name in HEADERS}


def define_options(defines: Mapping[str, int] | None) -> list[str]:
    return [f"-D{key}={value}" for key, value in sorted((defines or {}).items())]


def source_hash(kernel: KernelSource, options: list[str]) -> str:
    """sha256 (16 hex digits) over the kernel's source, its headers and the compile options."""
    digest = hashlib.sha256()
    digest.update(kernel.file.encode() + b"\0" + kernel.source().encode() + b"\0")
    for name in HEADERS:
        digest.update(name.encode() + b"\0" + read_source(name).encode() + b"\0")
    digest.update("\0".join(options).encode())
    return digest.hexdigest()[:16]


@functools.cache
def _constants() -> dict[str, int]:
    text = read_source("common.cuh")
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define (TPO_[A-Z0-9_]+) (\d+)\b", text, re.MULTILINE)}


def constant(name: str) -> int:
    """Value of a `#define TPO_<name> <int>` in common.cuh, e.g. constant("FORMAT_NV12")."""
    return _constants()["TPO_" + name]
