"""Gate (b) of the streamed export when the model is too large to run in PyTorch here: the graph numerics on a
model of the same widths cut in depth, written by the same streamed code from the same checkpoint.

`truncated_config`: the vision encoder keeps `VISION_BLOCKS` blocks and the LLM `LLM_LAYERS` layers (their
first ones: the checkpoint's names for them are the full model's); every width, the vocabulary, the Q-Former,
the SAM2 Hiera-L image encoder, decoders and memory, the task adapters and the temporal head stay whole. Each
graph is written with `streamed.write_graph` into a scratch folder, then checked against its PyTorch module
built from the same checkpoint (fp32), on inputs made from the contract's tensor domains at realistic sizes
(`GATE_SIZES`; the LLM on a prefill with an empty past and a decode step over a past). PyTorch runs first and
its weights are dropped before ONNX Runtime loads the graph, so the gate's peak is one graph, not two.
Budgets are the classic gate's (`parity.py`: fp32 1e-4 relative, fp16 0.1 and finite).
"""

from __future__ import annotations

import copy
import gc
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tpo.contract import Precision
from tpo.contract import graphs as G
from tpo.signals import stop_point

from .parity import FP16_MAX_REL, FP32_MAX_REL, OutputParity, compare
from .weights import CheckpointTensors, Provenance

VISION_BLOCKS = 2
LLM_LAYERS = 2
# model tensors a graph module computes from at construction (the tracked decoder's empty prompt): real first
DERIVED = ("sam.prompt_encoder.", "sam.no_object_pointer")
GATE_SIZES = {"batch": 1, "num_vision_tokens": None, "sequence": 16, "past_sequence": 0, "total_sequence": 16,
              "boxes": 2, "text_tokens": 12, "clips": 24, "objects": 1}


def truncated_config(cfg):
    """`cfg` with VISION_BLOCKS ViT blocks and LLM_LAYERS LLM layers (never more than it has)."""
    t = copy.deepcopy(cfg)
    blocks = min(VISION_BLOCKS, cfg.vision.num_blocks)
    t.vision.depth = blocks - cfg.vision.return_index - 1
    t.llm.num_layers = min(LLM_LAYERS, cfg.llm.num_layers)
    return t


def gate_samples(defn, cfg, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Inputs at GATE_SIZES in each tensor's domain (the connector on a video's token count); the LLM gets a
    prefill over an empty past and a decode step over a past."""
    from .examples import example_tensor

    g = torch.Generator().manual_seed(seed)
    sizes = dict(GATE_SIZES, num_vision_tokens=cfg.vision.num_frames * cfg.vision.grid ** 2)
    variants = [sizes]
    if defn.spec.kv is not None:
        n = sizes["sequence"]
        variants = [dict(sizes, past_sequence=0, total_sequence=n),
                    dict(sizes, sequence=1, past_sequence=n, total_sequence=n + 1)]
    return [{t.name: example_tensor(t, v, g) for t in defn.inputs} for v in variants]


def check_graph(ref_defn, cfg, path: Path, precision: Precision) -> dict:
    """PyTorch (ref_defn, real weights) first, its weights dropped, then ONNX Runtime on `path`."""
    import onnxruntime as ort

    samples = gate_samples(ref_defn, cfg)
    refs = []
    with torch.no_grad():
        for s in samples:
            stop_point()
            out = ref_defn.module(*[s[t.name] for t in ref_defn.inputs])
            refs.append([o.float().numpy() for o in (out if isinstance(out, tuple) else (out,))])
    outputs = [t.name for t in ref_defn.outputs]
    inputs = [t.name for t in ref_defn.inputs]
    ref_defn.module = None
    gc.collect()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst: dict[str, OutputParity] = {}
    for s, ref in zip(samples, refs, strict=True):
        got = session.run(outputs, {k: s[k].numpy() for k in inputs})
        for name, g, r in zip(outputs, got, ref, strict=True):
            p = compare(g, r)
            if name not in worst or p.max_rel > worst[name].max_rel or not p.finite:
                worst[name] = p
    del session
    budget = FP32_MAX_REL if precision == Precision.FP32 else FP16_MAX_REL
    failures = [f"{n}: max_rel {p.max_rel:.2e} > {budget:.0e}" for n, p in worst.items() if p.max_rel > budget]
    failures += [f"{n}: non-finite values" for n, p in worst.items() if not p.finite]
    return {"samples": len(samples), "max_rel": max((p.max_rel for p in worst.values()), default=0.0),
            "outputs": {n: {"max_abs": p.max_abs, "max_rel": p.max_rel, "finite": p.finite} for n, p in worst.items()},
            "budget_max_rel": budget, "passed": not failures, "failures": failures}


def depth_gate(cfg, reader: CheckpointTensors, precision: Precision, opset: int, scratch: Path,
               only: tuple[str, ...] | None = None, phase: Callable | None = None) -> dict:
    """Write and check every graph of the truncated model; the per-graph reports."""
    from tpo.model.checkpoint import build_skeleton
    from tpo.model.graphs import graph_defs

    from .streamed import fake_weights, write_graph
    from .weights import materialise

    tcfg = truncated_config(cfg)
    names = [s.name for s in G.GRAPHS if only is None or s.name in only]
    report: dict = {"config": {"vision_blocks": tcfg.vision.num_blocks, "llm_layers": tcfg.llm.num_layers,
                               "rest": "full (every width, vocabulary, Q-Former, SAM2 Hiera-L, heads)"},
                    "sizes": {k: v for k, v in GATE_SIZES.items() if v is not None}, "graphs": {}, "failures": []}
    scratch.mkdir(parents=True, exist_ok=True)
    for name in names:
        ctx = phase(f"gate:{name}") if phase is not None else _null()
        with ctx:
            model = build_skeleton(tcfg)
            prov = Provenance(model)
            prov.make_real(DERIVED, reader)
            (defn,) = graph_defs(model, only=(name,))
            recipes = prov.graph_recipes(defn)
            fake_weights([defn.module], [recipes])
            folder = scratch / name
            written = write_graph(defn, recipes, reader, folder / f"{name}.onnx", precision, opset)
            del model, prov, defn
            ref_model = build_skeleton(tcfg)
            ref_prov = Provenance(ref_model)
            ref_prov.make_real(DERIVED, reader)
            (ref,) = graph_defs(ref_model, only=(name,))
            materialise(ref.module, ref_prov.graph_recipes(ref), reader)
            del ref_model, ref_prov
            r = check_graph(ref, tcfg, written.path, precision)
            shutil.rmtree(folder, ignore_errors=True)
            gc.collect()
        report["graphs"][name] = r
        report["failures"] += [f"truncated {name}.{f}" for f in r["failures"]]
    report["passed"] = not report["failures"]
    return report


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
