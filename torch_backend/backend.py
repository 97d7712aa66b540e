"""The runtime's `torch` backend: the PyTorch reference model behind the runtime's backend interface.

    backend = open_backend("torch")                          # found through the `tpo.runtime_backends` entry point
    backend = open_backend("torch", checkpoint="ckpt/", precision="bf16", threads=4, device="cuda")
    session = Session(manifest, backend)                     # or tpo.runtime.open(folder, backend="torch")

The runtime itself never imports torch: this module is loaded only through the entry point
(`torch = "tpo.torch_backend:TorchBackend"` in pyproject), so it is the only place where the
runtime meets torch. A "graph" here is the `nn.Module` of `tpo.model.graphs` with the same name as the
exported graph, run eagerly on the checkpoint the artifacts were exported from: the baseline for latency
and the reference for parity (the runtime's host logic + this backend reproduce `tpo.model.generate`).

Which weights: the manifest names the export's checkpoint (`model.checkpoint.path`) and the sha256 of
each shard. By default that checkpoint is loaded and every shard must be present with the manifest's
hash (else one line naming the shard and suggesting `checkpoint=`). An explicit `checkpoint=` is used
as given, hashes matching or not; the description says which. The model is always built with the
manifest's configuration (what the graphs implement), so a checkpoint without its own tpo_config.json
loads too. The manifest is found through the first graph's folder, or given with `bind(manifest)`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tpo.contract import MANIFEST_FILE, GraphEntry, Manifest, sha256_file
from tpo.errors import CheckpointError, ConfigError, TPOError
from tpo.runtime.backend import NP_DTYPES, BackendUnavailable

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
                "bool": torch.bool}


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Parameters and persistent float buffers to `dtype`, in place, as `load_checkpoint(dtype=...)` does:
    non-persistent tables (rotary frequencies, position tables) stay fp32 and are cast where they are used."""
    for m in module.modules():
        for p in m.parameters(recurse=False):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
        for n, b in list(m._buffers.items()):
            if b is not None and b.is_floating_point() and n not in m._non_persistent_buffers_set:
                m._buffers[n] = b.to(dtype)
    return module


class TorchGraph:
    """One `tpo.model.graphs` module: numpy in (cast to the declared dtypes), numpy out (floats as float32)."""

    def __init__(self, graph: GraphEntry, module: torch.nn.Module, dtype: torch.dtype, device: torch.device):
        self.name = graph.name
        self.module = module
        self.dtype, self.device = dtype, device
        self.inputs = [(s.name, s.dtype) for s in graph.inputs]
        self.output_names = [s.name for s in graph.outputs]
        self.output_dtypes = [NP_DTYPES[s.dtype] for s in graph.outputs]
        self.seconds = 0.0      # module time incl. the copies to and from the device (like OrtGraph's)
        self.calls = 0

    @classmethod
    def from_def(cls, defn, device: str = "cpu") -> TorchGraph:
        """A `tpo.model.graphs.GraphDef`'s fp32 module, for graphs with no artifacts (the bench's random-weight
        sizes): its resolved tensors stand in for the manifest entry's."""
        dev = torch.device(device)
        return cls(defn, defn.module.to(dev).eval(), torch.float32, dev)

    def _tensor(self, name: str, dtype: str, value) -> torch.Tensor:
        a = np.ascontiguousarray(value, dtype=NP_DTYPES[dtype])
        if not a.flags.writeable:
            a = a.copy()
        t = torch.from_numpy(a)
        if t.is_floating_point():
            t = t.to(self.dtype)
        return t.to(self.device)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n, _ in self.inputs if n not in inputs]
        if missing:
            raise TPOError(f"graph {self.name}: missing input(s) {sorted(missing)}")
        args = [self._tensor(n, dt, inputs[n]) for n, dt in self.inputs]
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.module(*args)
            if isinstance(out, torch.Tensor):
                out = (out,)
            host = [t.float().cpu() if t.is_floating_point() else t.cpu() for t in out]
        self.seconds += time.perf_counter() - start
        self.calls += 1
        if len(host) != len(self.output_names):
            raise TPOError(f"graph {self.name}: the module returned {len(host)} outputs, the manifest "
                           f"declares {len(self.output_names)}")
        return {n: (t.numpy() if t.is_floating_point() else t.numpy().astype(dt, copy=False))
                for n, t, dt in zip(self.output_names, host, self.output_dtypes, strict=True)}


class TorchBackend:
    """The PyTorch reference model as a runtime backend (see the module docstring)."""

    name = "torch"

    def __init__(self, checkpoint: str | Path | None = None, precision: str | None = None,
                 threads: int | None = None, device: str = "cpu"):
        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise ConfigError(f"backend torch: precision {precision!r} unknown (choose {', '.join(PRECISIONS)})")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"backend torch: device {device!r} is not a torch device ({e})") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"backend torch: device {device!r} asked for but torch sees no CUDA GPU")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"backend torch: threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)     # process-wide: torch has no per-module thread pool
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.threads = threads
        self.manifest: Manifest | None = None
        self.checkpoint_used: Path | None = None
        self.checkpoint_note = ""
        self.modules: dict[str, torch.nn.Module] = {}
        self._update_description()

    def _update_description(self) -> None:
        d = f"torch {torch.__version__} eager {self.precision} {self.device}"
        if self.checkpoint_used is not None:
            d += f", checkpoint {self.checkpoint_used}{self.checkpoint_note}"
        self.description = d

    # ---------------------------------------------------------------------------------- weights
    def bind(self, manifest: Manifest) -> TorchBackend:
        """Load the model for `manifest`'s artifacts (once; `load` calls this with the graph's folder)."""
        if self.manifest is not None:
            if Path(self.manifest.root).resolve() != Path(manifest.root).resolve():
                raise TPOError(f"backend torch: bound to {self.manifest.root}, asked for graphs of {manifest.root} "
                               "(open one backend per artifacts folder)")
            return self
        ckpt, note = self._checkpoint_for(manifest)
        model = self._load_model(ckpt, manifest)
        from tpo.model.graphs import graph_defs

        defs = graph_defs(model)     # the fp32 eval model we own: no export_copy needed
        del model                    # the LLM graph holds its own merged copy; drop the LoRA one
        modules = {}
        for d in defs:
            self._check_io(d, manifest)
            modules[d.name] = cast(d.module, self.dtype).to(self.device).eval()
        self.modules, self.manifest = modules, manifest
        self.checkpoint_used, self.checkpoint_note = ckpt, note
        self._update_description()
        return self

    def _checkpoint_for(self, manifest: Manifest) -> tuple[Path, str]:
        from tpo.model.checkpoint import resolve_checkpoint

        where = Path(manifest.root) / MANIFEST_FILE
        info = manifest.model["checkpoint"]
        expected: dict[str, str] = dict(info.get("shards", {}))
        if self.checkpoint is not None:       # the user's choice: used as given, hashes only reported
            files = resolve_checkpoint(self.checkpoint)
            actual = {p.name: sha256_file(p) for p in files.shards if p.is_file()}
            same = actual == expected
            return self.checkpoint, (" (the export's weights)" if same else
                                     " (given; its shards differ from the ones the artifacts were exported from)")
        path = Path(info["path"])
        if not path.exists():
            raise CheckpointError(f"{path}: the checkpoint named by {where} is missing; "
                                  "pass checkpoint=DIR to the torch backend to give its location")
        files = resolve_checkpoint(path)
        shard_names = sorted({p.name for p in files.shards} | set(expected))
        for shard in shard_names:
            file = files.root / shard
            if shard not in expected:
                raise CheckpointError(f"{file}: shard not listed in {where}; the checkpoint is not the one exported "
                                      "from (pass checkpoint=DIR to use it anyway)")
            if not file.is_file():
                raise CheckpointError(f"{file}: shard missing (listed in {where}); pass checkpoint=DIR to the torch "
                                      "backend to use other weights")
            actual = sha256_file(file)
            if actual != expected[shard]:
                raise CheckpointError(
                    f"{file}: sha256 {actual[:12]}... does not match {where}'s {expected[shard][:12]}...; "
                    "these are not the weights the artifacts were exported from (pass checkpoint=DIR to use them anyway)")
        return path, ""

    def _load_model(self, ckpt: Path, manifest: Manifest):
        from tpo.model.checkpoint import load_checkpoint

        # the manifest's configuration is what the graphs implement; load_checkpoint takes it as a JSON file
        with tempfile.TemporaryDirectory(prefix="tpo-torch-backend-") as tmp:
            config = Path(tmp) / "tpo_config.json"
            config.write_text(json.dumps(manifest.model["config"]))
            model, _ = load_checkpoint(ckpt, config=str(config), dtype="fp32")
        return model.float().eval()

    @staticmethod
    def _check_io(d, manifest: Manifest) -> None:
        if d.name not in manifest.graphs:
            return
        g = manifest.graph(d.name)
        ours = ([t.name for t in d.inputs], [t.name for t in d.outputs])
        theirs = ([s.name for s in g.inputs], [s.name for s in g.outputs])
        if ours != theirs:
            raise CheckpointError(f"{manifest.root / MANIFEST_FILE}: graph {d.name} has tensors {theirs}, "
                                  f"this tpo.model builds {ours} (artifacts from another version; re-export)")

    # ---------------------------------------------------------------------------------- graphs
    def load(self, graph: GraphEntry) -> TorchGraph:
        if self.manifest is None:
            self.bind(Manifest.load(graph.path.parent))
        elif Path(self.manifest.root).resolve() != graph.path.parent.resolve():
            raise TPOError(f"backend torch: bound to {self.manifest.root}, asked for graph {graph.path} "
                           "(open one backend per artifacts folder)")
        module = self.modules.get(graph.name)
        if module is None:
            raise TPOError(f"backend torch: no module for graph {graph.name!r} (has {sorted(self.modules)})")
        return TorchGraph(graph, module, self.dtype, self.device)
