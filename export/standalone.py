"""Chosen graphs of a model -> ONNX files at chosen precisions, without the parity gate.

For models whose weights have no task behaviour to check: random weights at a configuration's sizes (the
bench's model-size table), the release's full-size configuration before real weights are converted.

    model = random_model("small")                                        # seed 0
    out = export_standalone(model, G.names((G.VISION_ENCODER, G.LLM)), (Precision.FP32, Precision.FP16),
                            cache, weights="random, seed 0")
    out.defs[G.LLM.name].module                            # the PyTorch module the file was traced from
    out.entries[(G.LLM.name, Precision.FP16)].path         # a typed GraphEntry, bound to the cache folder

Each file goes through the exporter's own steps (`examples.trace_example`, `onnx_export.export_graph`,
`to_fp16`, `exporter.graph_entry`), so it is what `tpo-export` writes for the same module. Files are cached:
one folder per content key (`REVISION`, the configuration, the caller's description of the weights, the
opset), one file per graph and precision, made once. The entry's JSON, written last beside the file, marks it
complete: an interrupted export is redone, never half used.

A model too large to build whole can still give its LLM's cost per layer: `llm_only` builds the LLM alone
(cut to a few layers, optionally with a smaller vocabulary) as a stand-in that `graph_defs(only=(G.LLM.name,))`
wraps like a whole model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from tpo.contract import GraphEntry, Precision
from tpo.contract import graphs as G
from tpo.errors import ConfigError

REVISION = "standalone/1"   # bump to invalidate every cached standalone export


@dataclass
class StandaloneGraphs:
    """The graphs of one model: PyTorch modules (`defs`, by graph name) and ONNX files (`entries`, by graph
    name and precision), in `folder`."""

    folder: Path
    model: object                     # the model (or LLM-only stand-in) the modules wrap
    defs: dict = field(default_factory=dict)                                     # name -> GraphDef
    entries: dict[tuple[str, Precision], GraphEntry] = field(default_factory=dict)


def cache_key(cfg, weights: str, opset: int) -> str:
    """The content key of a model's standalone files: what changes the traced graphs changes the key."""
    text = json.dumps([REVISION, cfg.to_dict(), weights, opset], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def export_standalone(model, graphs: Iterable[str], precisions: Iterable[Precision | str], cache: Path, *,
                      weights: str, opset: int | None = None, log: Callable[[str], None] = print
                      ) -> StandaloneGraphs:
    """Write `graphs` (contract names) of `model` (fp32, eval) at `precisions` into `cache`, once.
    `weights` describes the weights for the cache key (e.g. "random, seed 0"): two models with the same
    configuration and description must have the same weights."""
    from tpo.model.graphs import graph_defs

    from .options import DEFAULT_OPSET, check_opset

    wanted = tuple(graphs)
    unknown = sorted(set(wanted) - set(G.BY_NAME))
    if unknown:
        raise ConfigError(f"graphs {unknown}: not in the contract (known: {', '.join(G.BY_NAME)})")
    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    chosen = tuple(Precision.parse(str(p), "precision") for p in precisions)
    folder = Path(cache) / f"graphs-{model.cfg.name}-{cache_key(model.cfg, weights, opset)}"
    folder.mkdir(parents=True, exist_ok=True)
    out = StandaloneGraphs(folder, model, {d.name: d for d in graph_defs(model, only=wanted)})
    for name, defn in out.defs.items():
        for precision in chosen:
            out.entries[(name, precision)] = _graph_file(defn, folder, precision, opset, log)
    return out


def _graph_file(defn, folder: Path, precision: Precision, opset: int, log: Callable[[str], None]) -> GraphEntry:
    """The cached file of `defn` at `precision`, exported first if it is not complete."""
    from .examples import trace_example
    from .exporter import graph_entry
    from .onnx_export import export_graph, to_fp16

    path = folder / f"{defn.name}.{precision.value}.onnx"
    done = folder / f"{defn.name}.{precision.value}.json"
    if done.is_file():
        return GraphEntry.from_json(defn.name, json.loads(done.read_text()), str(done), root=folder)
    log(f"exporting {defn.name} at {precision} (once, into {folder})")
    export_graph(defn, trace_example(defn), path, opset)
    islands = to_fp16(path) if precision == Precision.FP16 else []
    entry = graph_entry(defn, path, precision, islands)
    done.write_text(json.dumps(entry.to_json(), indent=1) + "\n")
    return entry


# ------------------------------------------------------------------------------------------ models
def random_model(config: str, seed: int = 0, llm_layers: int | None = None):
    """A model of preset `config` with random weights (seed `seed`), fp32 eval; `llm_layers` cuts the LLM."""
    import torch

    from tpo.model.config import load_config
    from tpo.model.tpo_model import build_model

    cfg = load_config(config)
    if llm_layers is not None:
        cfg.llm.num_layers = min(llm_layers, cfg.llm.num_layers)
    torch.manual_seed(seed)
    return build_model(cfg).float().eval()


def llm_only(config: str, layers: int, seed: int = 0, vocab: int | None = None) -> SimpleNamespace:
    """A stand-in for a model of preset `config` holding only its LLM (random weights, seed `seed`), cut to
    `layers` layers and, with `vocab`, to that vocabulary: `.cfg` and `.lm`, all `graph_defs(only=(G.LLM.name,))`
    reads. For the per-layer cost of an LLM too large to build whole (a layer's cost does not depend on the
    vocabulary; the head's does)."""
    import torch

    from tpo.model.config import load_config
    from tpo.model.llm import build_llm

    cfg = load_config(config)
    cfg.llm.num_layers = layers
    if vocab is not None:
        cfg.llm.vocab_size = vocab
    torch.manual_seed(seed)
    return SimpleNamespace(cfg=cfg, lm=build_llm(cfg.llm).float().eval())
