"""tpo-edge: VideoChat-TPO made deployable.

Subpackages live in top-level folders of the repository and are mapped here by pyproject:
`tpo.model` (PyTorch model), `tpo.train`, `tpo.export`, `tpo.calibration`, `tpo.kernels`,
`tpo.runtime` (numpy/OpenCV/engine only, never torch), `tpo.bench`.
"""

__version__ = "0.1.0"
