"""The variants the bench compares, behind the runtime's backend interface (`load(graph) -> .run(dict)`).

- `torch-fp32`: PyTorch eager, the `tpo.model.graphs` module of each graph (what the `torch` runtime backend
  wraps; built here from `graph_defs` so the bench does not depend on that plugin), fp32, numpy in and out
  through `torch.from_numpy` (zero copy), under `torch.inference_mode()`, `torch.set_num_threads(threads)`;
- `onnxruntime-<precision>`: the runtime's `OnnxRuntimeBackend` (CPU provider, or those given) on the exported
  graphs, intra-op threads = threads;
- `tensorrt-<precision>`: the runtime's TensorRT backend where it can start (a one-line note otherwise).

Every runner is wrapped in a `CountingRunner`, so a stage splits into engine time (inside the engine's own
call: `OrtGraph.seconds`, the module's forward), adapter time (the runner's input casts and conversions)
and host time (everything outside the runners: numpy state, preprocessing, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tpo.manifest import GraphEntry
from tpo.runtime.backend import NP_DTYPES

from .stages import CountingRunner


class TorchGraph:
    """One `GraphDef` module run eagerly on numpy inputs; `.seconds` is the time inside the forward."""

    def __init__(self, defn, device: str = "cpu"):
        self.name = defn.name
        self.device = device
        self.module = defn.module if device == "cpu" else defn.module.to(device)
        self.inputs = [(t.name, NP_DTYPES[t.dtype]) for t in defn.inputs]
        self.output_names = [t.name for t in defn.outputs]
        self.seconds = 0.0
        self.calls = 0

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(_writable(np.ascontiguousarray(inputs[n], dtype=dt))) for n, dt in self.inputs]
        if self.device != "cpu":
            args = [a.to(self.device) for a in args]
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.module(*args)
            if self.device != "cpu":
                torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        if isinstance(out, torch.Tensor):
            out = (out,)
        return {n: o.cpu().numpy() for n, o in zip(self.output_names, out)}


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()     # torch.from_numpy warns on read-only arrays


class TorchDefsBackend:
    """A backend whose graphs are `GraphDef` modules (by name), so a runtime `Session` runs on PyTorch."""

    name = "torch"

    def __init__(self, defs: dict, threads: int | None = None, device: str = "cpu"):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.defs, self.device = defs, device
        where = f"{torch.get_num_threads()} threads" if device == "cpu" else device
        self.description = f"torch {torch.__version__} eager fp32, {where}"

    def load(self, graph: GraphEntry) -> TorchGraph:
        return TorchGraph(self.defs[graph.name], self.device)


class CountingBackend:
    """Wraps a backend; every graph it loads is a `CountingRunner`, kept in `runners` by name."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.runners: dict[str, CountingRunner] = {}

    def load(self, graph: GraphEntry) -> CountingRunner:
        runner = CountingRunner(self.inner.load(graph))
        self.runners[graph.name] = runner
        return runner


@dataclass
class Variant:
    name: str                     # "torch-fp32", "onnxruntime-fp16", ...
    backend: str
    precision: str
    description: str
    session: object = None        # a tpo.runtime Session (tiny artifacts)
    counting: CountingBackend | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def runners(self) -> dict[str, CountingRunner]:
        return self.counting.runners if self.counting is not None else {}


def variant_name(backend: str, precision: str, providers: tuple[str, ...] | None = None) -> str:
    if backend == "onnxruntime" and providers:
        first = providers[0].replace("ExecutionProvider", "").lower()
        if first != "cpu":
            return f"onnxruntime-{first}-{precision}"
    return f"{backend}-{precision}"


class EngineClock:
    """Reads and resets the time a set of runners spent: runner calls (graph) and engine calls (engine)."""

    def __init__(self, runners: dict[str, CountingRunner]):
        self.runners = runners
        self._engine_last = {n: self._engine(r) for n, r in runners.items()}

    @staticmethod
    def _engine(r: CountingRunner) -> float:
        return float(getattr(r.runner, "seconds", 0.0) or 0.0)

    def take(self) -> dict[str, float]:
        graph = sum(r.seconds for r in self.runners.values())
        engine = 0.0
        for n, r in self.runners.items():
            now = self._engine(r)
            engine += now - self._engine_last[n]
            self._engine_last[n] = now
            r.seconds, r.calls = 0.0, 0
        return {"graph_s": graph, "engine_s": engine}


def quiet_onnxruntime(providers=None, threads: int | None = None, spinning: bool = False):
    """The runtime's `OnnxRuntimeBackend`, with its intra-op threads' spin-wait switched off unless asked.

    In one process that alternates engines, an idle ONNX Runtime pool keeps spinning on the cores after each
    call (its default) and starves the next variant (PyTorch's OpenMP regions then wait for a core), which
    on a 2-core machine makes eager look 10-50x slower than it is. Off, each engine gets the machine to itself."""
    from tpo.runtime.backend import OnnxRuntimeBackend, OrtGraph

    class _Backend(OnnxRuntimeBackend):
        def load(self, graph: GraphEntry) -> OrtGraph:
            ort = self.ort
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            session = ort.InferenceSession(str(graph.path), options, providers=self.providers)
            lost = [p for p in self.providers if p not in session.get_providers()]
            if lost:
                from tpo.runtime.backend import BackendUnavailable

                raise BackendUnavailable(f"graph {graph.name}: onnxruntime could not use {lost}")
            return OrtGraph(graph, session)

    backend = _Backend(providers, threads=threads)
    if not spinning:
        backend.description += " (intra-op spinning off)"
    return backend
