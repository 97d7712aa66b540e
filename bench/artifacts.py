"""What the bench runs on: exported artifacts (cached), and per-graph ONNX files for the scaling sizes.

- `tiny` (the embedded checkpoint): full `tpo-export` artifacts, one folder per precision, made on first use
  into the cache (`$TPO_BENCH_CACHE`, else `$XDG_CACHE_HOME/tpo-edge/bench`, else `~/.cache/tpo-edge/bench`),
  keyed by the checkpoint's shard hashes; or the folders given with `--artifacts`.
- `small` and `videochat-tpo` (random weights): only the graphs the scaling table times, each exported on its
  own (`export_graph`, no parity gate: random weights have no task behaviour to check) into the cache, keyed
  by the configuration. A `GraphDef` gives the PyTorch module and its ONNX twin the same names and inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tpo.errors import TPOError
from tpo.manifest import MANIFEST_FILE, GraphEntry, Manifest, TensorSpec

EXPORT_REVISION = "bench-artifacts/1"   # bump to invalidate cached per-graph exports


def cache_root() -> Path:
    if os.environ.get("TPO_BENCH_CACHE"):
        return Path(os.environ["TPO_BENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tpo-edge" / "bench"


def checkpoint_key(checkpoint: Path | None) -> str:
    from tpo.manifest import sha256_file
    from tpo.model.checkpoint import default_checkpoint, resolve_checkpoint

    files = resolve_checkpoint(checkpoint if checkpoint is not None else default_checkpoint())
    h = hashlib.sha256()
    for shard in files.shards:
        h.update(sha256_file(shard).encode())
    return h.hexdigest()[:12]


def usable(folder: Path) -> bool:
    """A complete export that passed its gate (hashes are checked when the session opens it)."""
    try:
        Manifest.load(folder)
    except TPOError:
        return False
    return True


def ensure_artifacts(precision: str, cache: Path | None = None, checkpoint: Path | None = None,
                     config: str | None = None, log=print) -> Path:
    """The export of `checkpoint` (default: the embedded tiny) at `precision`, made once into the cache."""
    cache = cache or cache_root()
    folder = cache / f"{config or 'tiny'}-{precision}-{checkpoint_key(checkpoint)}"
    if usable(folder):
        return folder
    from tpo.export.exporter import ExportOptions, export_artifacts

    log(f"exporting {config or 'tiny'} at {precision} into {folder} (once; ~70 s per precision on 2 cores)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    export_artifacts(ExportOptions(out=folder, precision=precision, checkpoint=checkpoint, config=config,
                                   progress=False, force=True))
    return folder


def manifest_precision(folder: Path) -> str:
    return json.loads((Path(folder) / MANIFEST_FILE).read_text())["precision"]


# ------------------------------------------------------------------------------ per-graph (scaling sizes)
@dataclass
class GraphFiles:
    """A model configuration's graphs as PyTorch modules and ONNX files (per precision)."""

    config: str
    defs: dict            # name -> GraphDef (fp32 eval modules)
    onnx: dict            # (name, precision) -> GraphEntry
    model: object         # the TPOModel (random weights)


def entry_for(defn, path: Path, precision: str) -> GraphEntry:
    def specs(ts):
        return tuple(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in ts)

    return GraphEntry(defn.name, path, "", precision, specs(defn.inputs), specs(defn.outputs))


def random_model(config_name: str, seed: int = 0, llm_layers: int | None = None):
    """A model of `config_name` with random weights; `llm_layers` cuts the LLM to that many layers."""
    import torch

    from tpo.model.config import load_config
    from tpo.model.tpo_model import build_model

    cfg = load_config(config_name)
    if llm_layers is not None:
        cfg.llm.num_layers = min(llm_layers, cfg.llm.num_layers)
    torch.manual_seed(seed)
    return build_model(cfg)


def llm_only(config_name: str, layers: int, seed: int = 0, vocab: int | None = None):
    """(a stand-in model with `.cfg`, its LLM `GraphDef`): the LLM of `config_name` cut to `layers` layers
    (and, with `vocab`, its vocabulary cut to that size) and nothing else, for the per-layer cost of an LLM
    too large to build whole."""
    from types import SimpleNamespace

    import torch

    from tpo.model.config import load_config
    from tpo.model.graphs import GraphDef, LLMGraph
    from tpo.model.llm import build_llm

    cfg = load_config(config_name)
    cfg.llm.num_layers = layers
    if vocab is not None:
        cfg.llm.vocab_size = vocab
    template = _llm_template(cfg)
    torch.manual_seed(seed)
    shim = SimpleNamespace(cfg=cfg, lm=build_llm(cfg.llm))
    module = LLMGraph(shim).eval()      # holds its own merged copy of the LLM
    shim.lm = None
    return shim, GraphDef(template.name, module, template.inputs, template.outputs,
                          varargs_from=template.varargs_from)


def _llm_template(cfg):
    """The LLM GraphDef's tensor names and shapes for `cfg`: `graph_defs` of a model on the meta device
    (nothing allocated; the LoRA merge, a deep copy, is skipped for it)."""
    import torch

    import tpo.model.graphs as graphs_mod
    from tpo import manifest as names
    from tpo.model.tpo_model import TPOModel

    with torch.device("meta"):
        meta = TPOModel(cfg)
    real = graphs_mod.merged_llm
    graphs_mod.merged_llm = lambda lm: lm
    try:
        defs = graphs_mod.graph_defs(meta)
    finally:
        graphs_mod.merged_llm = real
    return next(d for d in defs if d.name == names.LLM)


def graph_files(config_name: str, graphs: tuple[str, ...], precisions: tuple[str, ...],
                cache: Path | None = None, llm_layers: int | None = None, log=print, model=None,
                only_llm: bool = False, llm_vocab: int | None = None) -> GraphFiles:
    """Build `config_name` with random weights (seed 0) and export `graphs` at `precisions`, cached.
    `only_llm`: build and export the LLM graph alone (with `llm_layers` layers)."""
    from tpo import manifest as names
    from tpo.export.examples import trace_example
    from tpo.export.onnx_export import DEFAULT_OPSET, export_graph, to_fp16
    from tpo.model.graphs import graph_defs

    if only_llm:
        model, defn = llm_only(config_name, llm_layers or 1, vocab=llm_vocab)
        defs = {names.LLM: defn}
    else:
        model = model if model is not None else random_model(config_name, llm_layers=llm_layers)
        model = model.float().eval()
        defs = None
    cfg = model.cfg
    digest = hashlib.sha256(json.dumps([EXPORT_REVISION, cfg.to_dict()], sort_keys=True, default=str).encode())
    folder = (cache or cache_root()) / f"graphs-{config_name}-{digest.hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    if defs is None:
        import tpo.model.graphs as graphs_mod

        real = graphs_mod.merged_llm
        if names.LLM not in graphs:          # graph_defs builds every wrapper: skip the LLM's merged deep copy
            graphs_mod.merged_llm = lambda lm: lm
        try:
            defs = {d.name: d for d in graph_defs(model) if d.name in graphs}
        finally:
            graphs_mod.merged_llm = real
    onnx = {}
    for name, d in defs.items():
        for precision in precisions:
            path = folder / f"{name}.{precision}.onnx"
            done = folder / f"{name}.{precision}.done"
            if not done.is_file():
                log(f"exporting {config_name} {name} at {precision} (once, into {folder})")
                export_graph(d, trace_example(d, model), path, DEFAULT_OPSET)   # `.done` marks it complete
                if precision == "fp16":
                    to_fp16(path)
                done.write_text("ok\n")
            onnx[(name, precision)] = entry_for(d, path, precision)
    return GraphFiles(config_name, defs, onnx, model)
