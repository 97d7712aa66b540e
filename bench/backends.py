"""The variants the bench compares, behind the runtime's backend interface (`load(graph) -> .run(dict)`).

- `torch-fp32`: PyTorch eager, the runtime's own `torch` backend (`tpo.torch_backend`: each graph's
  `tpo.model.graphs` module on the checkpoint the artifacts were exported from), fp32, under
  `torch.inference_mode()`, `torch.set_num_threads(threads)`; at the scaling sizes, which have no artifacts,
  the same `TorchGraph` on the random-weight modules (`eager_runner`);
- `onnxruntime-<precision>`: the runtime's `OnnxRuntimeBackend` (CPU provider, or those given) on the exported
  graphs, intra-op threads = threads, their spin-wait off (`quiet_onnxruntime`);
- `tensorrt-<precision>`: the runtime's TensorRT backend where it can start (a one-line note otherwise).

Every runner is wrapped in a `CountingRunner`, so a stage splits into engine time (inside the engine's own
call: `OrtGraph.seconds`, the module's forward), adapter time (the runner's input casts and conversions)
and host time (everything outside the runners: numpy state, preprocessing, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tpo.contract import GraphEntry, Manifest, Precision
from tpo.runtime.backend import OnnxRuntimeBackend

from .stages import CountingRunner


class CountingBackend:
    """Wraps a backend; every graph it loads is a `CountingRunner`, kept in `runners` by name."""

    def __init__(self, inner, description: str | None = None):
        self.inner = inner
        self.name = inner.name
        self.description = description or inner.description
        self.runners: dict[str, CountingRunner] = {}

    def load(self, graph: GraphEntry) -> CountingRunner:
        runner = CountingRunner(self.inner.load(graph))
        self.runners[graph.name] = runner
        return runner


@dataclass
class Variant:
    name: str                     # "torch-fp32", "onnxruntime-fp16", ...
    backend: str
    precision: Precision
    description: str
    session: object = None        # a tpo.runtime Session (tiny artifacts)
    counting: CountingBackend | None = None
    manifest: Manifest | None = None         # the artifacts the session runs

    @property
    def runners(self) -> dict[str, CountingRunner]:
        return self.counting.runners if self.counting is not None else {}


def variant_name(backend: str, precision: Precision, providers: tuple[str, ...] | None = None) -> str:
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


# ------------------------------------------------------------------------------------------ PyTorch eager
def eager_backend(manifest: Manifest, threads: int, device: str, note: Callable[[str], None]):
    """The runtime's torch backend for `manifest`'s artifacts, fp32: the export's checkpoint, or the embedded
    one (with a note) when the artifacts name a checkpoint that is not on this machine."""
    from tpo.model.checkpoint import default_checkpoint
    from tpo.torch_backend import TorchBackend

    checkpoint = None
    named = Path(manifest.model["checkpoint"]["path"])
    if not named.exists():
        note(f"{named}: the artifacts' checkpoint is not here; PyTorch runs the embedded checkpoint")
        checkpoint = default_checkpoint()
    return TorchBackend(checkpoint=checkpoint, precision=Precision.FP32.value, threads=threads, device=device)


def eager_description(backend) -> str:
    import torch

    where = f"{torch.get_num_threads()} threads" if backend.device.type == "cpu" else str(backend.device)
    return f"{backend.description}, {where}"


def eager_runner(defn, device: str = "cpu"):
    """A `tpo.model.graphs.GraphDef`'s module run as the torch backend runs a graph (random-weight sizes)."""
    from tpo.torch_backend.backend import TorchGraph

    return TorchGraph.from_def(defn, device)


# ------------------------------------------------------------------------------------------ ONNX Runtime
class _NoSpinning:
    """The onnxruntime module as the runtime's backend sees it, except that `SessionOptions()` come with the
    intra- and inter-op threads' spin-wait switched off (every other attribute is onnxruntime's own)."""

    def __init__(self, ort):
        self._ort = ort

    def __getattr__(self, name: str):
        return getattr(self._ort, name)

    def SessionOptions(self):  # noqa: N802  (onnxruntime's name)
        options = self._ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options


def quiet_onnxruntime(providers: list[str] | None = None, threads: int | None = None,
                      spinning: bool = False) -> OnnxRuntimeBackend:
    """The runtime's `OnnxRuntimeBackend`, with its threads' spin-wait switched off unless asked.

    In one process that alternates engines, an idle ONNX Runtime pool keeps spinning on the cores after each
    call (its default) and starves the next variant (PyTorch's OpenMP regions then wait for a core), which
    on a 2-core machine makes eager look 10-50x slower than it is. Off, each engine gets the machine to itself."""
    backend = OnnxRuntimeBackend(providers, threads=threads)
    if not spinning:
        backend.ort = _NoSpinning(backend.ort)
        backend.description += " (intra-op spinning off)"
    return backend
