"""The streamed export: a release-size checkpoint -> graphs, embeddings, tokenizer, manifest, in a few GB.

`export_artifacts` comes here when the model's fp32 weights exceed `STREAM_FP32_BYTES` (or `--stream on`).
The model is never built with weights: a skeleton (parameters on meta) gives the graph modules and the
provenance of every tensor; the graphs are traced with fake weights and their initializers written from the
shards one row block at a time (`streamed.py`, `weights.py`).

Before anything is written: every shard present and complete, every tensor at the configuration's name, shape
and kind (a checkpoint of other dimensions is refused with the first tensor that differs), and the free space
for the graphs, the tables and the gate's scratch graphs. Then, into `.<out>.partial-<pid>` beside `--out`:
1. graphs (per graph: seconds and peak resident memory, `memory.RssMonitor`);
2. embeddings.safetensors (token table and task embeddings, streamed), the tokenizer;
3. the gate: (a) every written initializer against the checkpoint (`weight_check.py`); (b) graph numerics:
   the classic gate (`exporter.run_gate`: parity on real clips, then the task-level check) when the fp32
   model fits under `FULL_GATE_FP32_BYTES`, else every graph of the model cut in depth (`depth_gate.py`);
4. manifest.json, then a rename into place that never replaces an `--out` that appeared meanwhile (without
   --force). Ctrl-C, a failure or a failed gate removes the partial folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from tpo.contract import EMBEDDINGS, TASK_EMBEDDING, TOKEN_TABLE, TOKENIZER, FileEntry, Manifest, Precision
from tpo.contract import tasks as T
from tpo.errors import CheckpointError

from .memory import RssMonitor
from .options import ExportOptions
from .weights import BLOCK_BYTES, CheckpointTensors, Provenance, Recipe, float_blocks

STREAM_FP32_BYTES = 4 << 30          # auto: stream a model whose fp32 weights exceed this
FULL_GATE_FP32_BYTES = 3 << 30       # the classic gate loads the fp32 model: only under this
FREE_MARGIN = 512 << 20


def fp32_bytes(cfg) -> int:
    from tpo.model.checkpoint import expected_layout

    return sum(i.nbytes for i in expected_layout(cfg, torch.float32).values())


def wants_stream(opts: ExportOptions, cfg) -> bool:
    if opts.stream == "on":
        return True
    if opts.stream == "off":
        return False
    return fp32_bytes(cfg) > STREAM_FP32_BYTES


# ------------------------------------------------------------------------------------------ checks first
def check_checkpoint(files, cfg, config_flag: str | None) -> None:
    """Shards present and complete, tensors at the configuration's names, shapes and kinds: one line each."""
    from tpo.model.checkpoint import expected_layout, read_safetensors_header

    missing = [s for s in files.shards if not s.is_file()]
    if missing:
        raise CheckpointError(f"{missing[0]}: shard missing ({len(missing)} of {len(files.shards)} absent); "
                              "nothing exported")
    found = {}
    for shard in files.shards:
        found.update(read_safetensors_header(shard))      # a truncated shard is refused here, naming the tensor
    stored = next((i.dtype for i in found.values() if i.dtype.is_floating_point), torch.float32)
    expected = expected_layout(cfg, stored)
    which = f"--config {config_flag}" if config_flag else f"config {cfg.name!r}"
    absent = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    for name, exp in expected.items():
        got = found.get(name)
        if got is not None and got.shape != exp.shape:
            raise CheckpointError(f"{got.file}: tensor {name} has shape {list(got.shape)}, {which} expects "
                                  f"{list(exp.shape)} (the checkpoint is not at this configuration's dimensions)")
        if got is not None and got.dtype.is_floating_point != exp.dtype.is_floating_point:
            raise CheckpointError(f"{got.file}: tensor {name} is {got.dtype}, {which} expects a {exp.dtype} tensor")
    if absent:
        raise CheckpointError(f"{files.root}: tensor {absent[0]} is missing ({len(absent)} missing in all; "
                              f"{which})")
    if extra:
        raise CheckpointError(f"{files.root}: unexpected tensor {extra[0]} ({len(extra)} unexpected in all; "
                              f"{which})")


def planned_bytes(defs_recipes: list[tuple[object, dict[str, Recipe]]], cfg, precision: Precision) -> int:
    """Bytes the export writes: each graph's weights at the precision (shared weights once per graph),
    the token table and task embeddings, and the largest gate scratch graph (written and removed in turn)."""
    item = 2 if precision == Precision.FP16 else 4
    graphs = sum(_numel(r.shape) * item for _, recipes in defs_recipes for r in recipes.values())
    tables = (cfg.llm.vocab_size + len(T.TASKS)) * cfg.llm.hidden_size * item
    return graphs + tables


def gate_scratch_bytes(cfg, precision: Precision) -> int:
    """The largest graph of the depth gate's truncated model (its scratch folder holds one at a time)."""
    from tpo.model.checkpoint import build_skeleton
    from tpo.model.graphs import graph_defs

    from .depth_gate import truncated_config

    model = build_skeleton(truncated_config(cfg))
    item = 2 if precision == Precision.FP16 else 4
    return max(sum(p.numel() for p in d.module.parameters()) * item for d in graph_defs(model))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ------------------------------------------------------------------------------------------ tables
def write_embeddings(prov: Provenance, model, reader: CheckpointTensors, path: Path, precision: Precision
                     ) -> tuple[FileEntry, dict[str, str]]:
    """embeddings.safetensors, streamed: the token table row block by row block, then the task embeddings.
    Returns the entry and each table's checkpoint source (for the weight check)."""
    import struct

    from tpo.contract import sha256_file

    np_dtype = np.float16 if precision == Precision.FP16 else np.float32
    st = "F16" if precision == Precision.FP16 else "F32"
    table = prov.recipe(prov.our_of[id(model.lm.get_input_embeddings().weight)])
    items: list[tuple[str, Recipe, tuple[int, ...]]] = [(TOKEN_TABLE, table, tuple(table.shape))]
    for task in T.TASKS:
        r = prov.recipe(prov.our_of[id(model.task_embedding(task))])
        items.append((TASK_EMBEDDING.format(task=task), r, (int(r.shape[-1]),)))
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, _, shape in items:
        n = _numel(shape) * np.dtype(np_dtype).itemsize
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, recipe, _ in items:
            for block in float_blocks(recipe, reader, BLOCK_BYTES):
                f.write(block.numpy().astype(np_dtype).tobytes())
    tensors = {name: {"dtype": np.dtype(np_dtype).name, "shape": list(shape)} for name, _, shape in items}
    entry = FileEntry(EMBEDDINGS, path.name, sha256_file(path), path.stat().st_size, tensors=tensors)
    return entry, {name: recipe.sources[0] for name, recipe, _ in items}


# ------------------------------------------------------------------------------------------ the export
def export_streamed(opts: ExportOptions) -> Manifest:
    from tpo.contract import sha256_file
    from tpo.model.checkpoint import build_skeleton, checkpoint_config, default_checkpoint, resolve_checkpoint
    from tpo.model.graphs import graph_defs
    from tpo.model.tokenizer import load_tokenizer, resolve_tokenizer_dir

    from .depth_gate import DERIVED
    from .exporter import build_manifest, check_free_space, finish, graph_entry, save_tokenizer
    from .streamed import fake_weights, write_graph

    start = time.perf_counter()
    ckpt = Path(opts.checkpoint) if opts.checkpoint is not None else default_checkpoint()
    files = resolve_checkpoint(ckpt)
    cfg = checkpoint_config(files, opts.config)
    check_checkpoint(files, cfg, opts.config)
    has_tokenizer = ckpt.is_dir() and (ckpt / "tokenizer.model").is_file()
    tokenizer_dir = ckpt if has_tokenizer else resolve_tokenizer_dir(cfg.tokenizer)
    tokenizer = load_tokenizer(tokenizer_dir)
    reader = CheckpointTensors(files.shards)
    model = build_skeleton(cfg)
    prov = Provenance(model)
    prov.make_real(DERIVED, reader)
    defs = graph_defs(model, only=opts.graphs)
    recipes = [prov.graph_recipes(d) for d in defs]
    full_gate = _full_gate(opts, cfg)
    out = Path(opts.out)
    parent = out.absolute().parent
    need = planned_bytes(list(zip(defs, recipes, strict=True)), cfg, opts.precision) + FREE_MARGIN
    if not full_gate:
        need += gate_scratch_bytes(cfg, opts.precision)
    check_free_space(parent, need)
    fake_weights([d.module for d in defs], recipes)
    tmp = parent / f".{out.name}.partial-{os.getpid()}"
    failed_report = parent / f"{out.name}.parity-failed.json"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        with RssMonitor() as monitor:
            with monitor.phase("hash checkpoint"):
                checkpoint = {"path": str(ckpt), "shards": {p.name: sha256_file(p) for p in files.shards}}
            manifest = build_manifest(cfg, tokenizer, checkpoint, opts).rebase(tmp)
            written = {}
            for d, r in zip(defs, recipes, strict=True):
                with monitor.phase(d.name):
                    w = write_graph(d, r, reader, tmp / f"{d.name}.onnx", opts.precision, opts.opset)
                    manifest.graphs[d.name] = graph_entry(d, w.path, opts.precision, w.islands)
                written[d.name] = w
                _say(opts, f"{d.name}: {w.weight_bytes / 1e9:.2f} GB of weights, "
                           f"{monitor.phases[d.name]['seconds']:.0f} s, peak {monitor.phases[d.name]['peak_rss_mb']:.0f} MB")
            del defs
            with monitor.phase("embeddings"):
                manifest.files[EMBEDDINGS], table_sources = write_embeddings(
                    prov, model, reader, tmp / f"{EMBEDDINGS}.safetensors", opts.precision)
            manifest.files[TOKENIZER] = save_tokenizer(tokenizer, tokenizer_dir, tmp)
            del model, prov
            gate = _gate(opts, cfg, ckpt, files, tokenizer, written, table_sources, reader, monitor, tmp, manifest,
                         full_gate)
        reader.close()
        gate["passed"] = not gate["failures"]
        res = monitor.report()
        res.update(mode="streamed", wall_s=round(time.perf_counter() - start, 1),
                   graphs={n: monitor.phases[n] for n in written})
        gate["export"] = res
        gate["export_seconds"] = {n: monitor.phases[n]["seconds"] for n in written}
        manifest.parity = gate
        finish(manifest, tmp, out, failed_report, opts.force)
    finally:
        reader.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _gate(opts: ExportOptions, cfg, ckpt: Path, files, tokenizer, written: dict, table_sources, reader, monitor,
          tmp: Path, manifest: Manifest, full_gate: bool) -> dict:
    """Gate (a), every written weight against the checkpoint, then gate (b), the numerics: the classic gate
    when the fp32 model fits (`full_gate`), else the model cut in depth. The report, with its `failures`."""
    from .depth_gate import depth_gate
    from .weight_check import ShardSlices, check_embeddings, check_graph

    gate: dict = {"mode": "streamed", "graphs": {}, "tasks": None, "failures": []}
    with monitor.phase("gate: weights"):
        slices = ShardSlices(files.shards)
        weights = {name: check_graph(w.path, w.initializers, slices) for name, w in written.items()}
        weights[EMBEDDINGS] = check_embeddings(tmp / f"{EMBEDDINGS}.safetensors", table_sources, slices)
        del slices
    gate["weights"] = weights
    for name, r in weights.items():
        gate["failures"] += [f"weights {name}: {m}" for m in r["mismatches"] + r.get("not_in_file", [])]
    if full_gate:
        with monitor.phase("gate: numerics (full model)"):
            classic = _classic_gate(ckpt, opts, tokenizer, tmp, manifest)
        gate["numerics"] = "the full model: graph parity on clips and the task-level check (parity.py, task_parity.py)"
        gate["graphs"], gate["tasks"] = classic["graphs"], classic["tasks"]
        gate["clips"] = classic["clips"]
        gate["failures"] += classic["failures"]
        return gate
    depth = depth_gate(cfg, reader, opts.precision, opts.opset, tmp / ".depth-gate", opts.graphs, phase=monitor.phase)
    shutil.rmtree(tmp / ".depth-gate", ignore_errors=True)
    gate["numerics"] = (f"a model cut in depth ({depth['config']['vision_blocks']} ViT blocks, "
                        f"{depth['config']['llm_layers']} LLM layers, everything else whole), "
                        "written by the same streamed code from the same checkpoint, against PyTorch")
    gate["depth"] = depth
    gate["graphs"] = depth["graphs"]
    gate["failures"] += depth["failures"]
    gate["tasks_skipped"] = "the task-level check needs the whole model in PyTorch: not run at this size"
    return gate


def _full_gate(opts: ExportOptions, cfg) -> bool:
    if opts.gate == "full":
        return True
    if opts.gate == "depth":
        return False
    return fp32_bytes(cfg) <= FULL_GATE_FP32_BYTES


def _classic_gate(ckpt: Path, opts: ExportOptions, tokenizer, folder: Path, manifest: Manifest) -> dict:
    """The classic gate on the streamed files: the fp32 model loaded whole (small models only)."""
    from tpo.model.checkpoint import load_checkpoint
    from tpo.model.graphs import export_copy, graph_defs

    from .exporter import run_gate

    torch.manual_seed(0)
    model, _ = load_checkpoint(ckpt, config=opts.config, dtype="fp32")
    model = export_copy(model)
    defs = graph_defs(model, only=opts.graphs)
    return run_gate(model, tokenizer, defs, folder, opts, manifest)


def _say(opts: ExportOptions, text: str) -> None:
    if opts.progress:
        print(f"tpo-export: {text}", flush=True)

