"""Inference backends behind one interface: a graph in the manifest -> a callable on numpy arrays.

    backend = open_backend("onnxruntime")          # or "tensorrt", "torch" (a plugin, see `register`)
    runner = backend.load(manifest.graph(G.LLM.name))  # hash already checked by the session
    outputs = runner.run(spec.feed(...))           # name -> np.ndarray, names from tpo.contract.graphs

Backends are found by name in a registry; "onnxruntime" and "tensorrt" are built in and import their
engine lazily, so a missing engine is one clear line (`BackendUnavailable`) and never a silent fallback.
The torch reference backend (`tpo.torch_backend`, beside the model and the runtime) registers itself
through the `tpo.runtime_backends` entry point group, so this package never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

from tpo.contract import GraphEntry
from tpo.errors import CheckpointError, TPOError

# the interface and its error live in .engine, which the backends import (no backend imports this registry);
# re-exported here for the callers that know them from this module
from .engine import NP_DTYPES, Backend, BackendUnavailable, GraphRunner  # noqa: F401


# ---------------------------------------------------------------------------------------- onnxruntime
class OrtGraph:
    """One ONNX graph in an onnxruntime InferenceSession; inputs cast to the graph's declared dtypes."""

    def __init__(self, graph: GraphEntry, session):
        self.name = graph.name
        self.session = session
        self.input_dtypes = {s.name: NP_DTYPES[s.dtype] for s in graph.inputs}
        self.output_names = [s.name for s in graph.outputs]
        self.seconds = 0.0      # graph-execution time, summed (the runtime's latency report reads it)
        self.calls = 0

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_dtypes) - set(inputs)
        if missing:
            raise TPOError(f"graph {self.name}: missing input(s) {sorted(missing)}")
        feed = {k: np.ascontiguousarray(inputs[k], dtype=dt) for k, dt in self.input_dtypes.items()}
        start = time.perf_counter()
        out = self.session.run(self.output_names, feed)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return dict(zip(self.output_names, out, strict=True))


class OnnxRuntimeBackend:
    """ONNX Runtime with the providers asked for (default: CPU). No provider is dropped silently:
    onnxruntime lists CUDA even without a GPU, so a session that did not get a requested provider fails."""

    name = "onnxruntime"

    def __init__(self, providers: list[str] | None = None, threads: int | None = None, device_id: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "backend onnxruntime: not installed (pip install 'tpo-edge[cpu]' or 'tpo-edge[gpu]')"
            ) from None
        self.ort = ort
        self.providers = providers or ["CPUExecutionProvider"]
        unknown = [p for p in self.providers if p not in ort.get_available_providers()]
        if unknown:
            raise BackendUnavailable(
                f"backend onnxruntime: provider(s) {unknown} not in this onnxruntime build "
                f"(has {ort.get_available_providers()})"
            )
        self.threads = threads
        self.device_id = int(device_id)
        gpu = f" (device {self.device_id})" if any(p != "CPUExecutionProvider" for p in self.providers) else ""
        self.description = f"onnxruntime {ort.__version__} {'+'.join(self.providers)}{gpu}"

    def load(self, graph: GraphEntry) -> OrtGraph:
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        provider_options = [{} if p == "CPUExecutionProvider" else {"device_id": self.device_id}
                            for p in self.providers]
        try:
            session = self.ort.InferenceSession(str(graph.path), options, providers=self.providers,
                                                provider_options=provider_options)
        except Exception as e:   # onnxruntime's own exception types: a corrupt or foreign file, one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointError(f"graph {graph.name} ({graph.path}): ONNX Runtime cannot load it: {first}") from e
        got = session.get_providers()
        lost = [p for p in self.providers if p not in got]
        if lost:
            raise BackendUnavailable(f"graph {graph.name}: onnxruntime could not use {lost} (got {got})")
        return OrtGraph(graph, session)


# ------------------------------------------------------------------------------------------- registry
_BUILTIN: dict[str, Callable[..., Backend]] = {"onnxruntime": OnnxRuntimeBackend}
ENTRY_POINT_GROUP = "tpo.runtime_backends"


def register(name: str, factory: Callable[..., Backend]) -> None:
    _BUILTIN[name] = factory


def _tensorrt_factory(**kwargs) -> Backend:
    from .tensorrt_backend import TensorRTBackend  # lazy: imports tensorrt only when asked

    return TensorRTBackend(**kwargs)


register("tensorrt", _tensorrt_factory)


def backend_names() -> list[str]:
    names = set(_BUILTIN)
    names |= {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def open_backend(name: str, **kwargs) -> Backend:
    if name in _BUILTIN:
        return _BUILTIN[name](**kwargs)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()(**kwargs)
    raise BackendUnavailable(f"backend {name!r}: unknown (known: {', '.join(backend_names())})")
