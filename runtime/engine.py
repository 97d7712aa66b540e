"""What every inference backend shares: the interface (`Backend.load(graph) -> GraphRunner`), the one error
a backend that cannot run here raises, and the manifest's dtype names as numpy types.

Its own module so that the registry (`backend.py`, which knows every backend) and each backend
(`tensorrt_backend.py`, `tpo.torch_backend`) import it without importing each other: the registry loads a
backend lazily by name, a backend never imports the registry.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tpo.contract import GraphEntry
from tpo.errors import TPOError

__all__ = ["NP_DTYPES", "Backend", "BackendUnavailable", "GraphRunner"]

# a TensorSpec's dtype (tpo.contract.graphs.DTYPES) -> the numpy type of the arrays fed and returned
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


class BackendUnavailable(TPOError):
    """The backend asked for cannot run here (not installed, no GPU, ...)."""


class GraphRunner(Protocol):
    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str
    description: str   # what actually runs, e.g. "onnxruntime 1.22 CPUExecutionProvider"

    def load(self, graph: GraphEntry) -> GraphRunner: ...
