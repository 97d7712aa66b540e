"""Errors of tpo.kernels a user can cause or fix: no GPU to run on, or kernels that cannot be built.

Bad inputs raise `tpo.errors.InputError`. Both classes here are `TPOError`s, so commands print the
one-line message and exit non-zero.
"""

from tpo.errors import TPOError


class GpuUnavailableError(TPOError):
    """No usable GPU: cuda-bindings, the NVIDIA driver or a CUDA device is missing."""


class KernelBuildError(TPOError):
    """A kernel cannot be built: NVRTC (or g++ for the CPU emulation) is missing or refused the source."""
