"""`export_artifacts`: a checkpoint -> graphs, embeddings, tokenizer, manifest, through the parity gate.

Steps, all into a temporary folder beside `out` that is renamed only when the gate passes:
1. load the checkpoint (fp32 copy), build every `GraphDef`;
2. per graph: trace and write ONNX (fp32), convert to fp16 with fp32 islands when asked;
3. save the host-side pieces: the token embedding table and task embeddings (safetensors), the tokenizer;
4. the gate: graph parity on inputs from real clips (`parity.py`), then the whole chain in task terms
   (`task_parity.py`: the runtime's onnxruntime backend against the PyTorch pipeline);
5. write `manifest.json` (hashes of everything), rename the folder into place.
A failed gate leaves no folder at `out`, only `<out>.parity-failed.json` with the report.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from tpo.contract import (
    EMBEDDINGS,
    LLM,
    TASK_EMBEDDING,
    TOKEN_TABLE,
    TOKENIZER,
    Dim,
    FileEntry,
    GraphEntry,
    Manifest,
    Precision,
    Preprocess,
    Tokens,
    Tracker,
    sha256_file,
)
from tpo.contract import graphs as G
from tpo.contract import tasks as T
from tpo.contract.manifest import MaskPreprocess, MllmPreprocess, TemporalPreprocess
from tpo.errors import ConfigError, TPOError
from tpo.model.graphs import GraphDef, export_copy, graph_defs

from .onnx_export import export_graph, external_files, to_fp16
from .options import TARGETS, ExportOptions, check_options  # noqa: F401  (TARGETS: re-exported)
from .parity import graph_parity


class ParityFailed(TPOError):
    """The exported graphs disagree with PyTorch beyond budget."""


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tpo-edge"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _sha_files(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def load_for_export(opts: ExportOptions):
    from tpo.model.checkpoint import default_checkpoint, load_checkpoint, resolve_checkpoint
    from tpo.model.tokenizer import load_tokenizer, resolve_tokenizer_dir

    ckpt = Path(opts.checkpoint) if opts.checkpoint is not None else default_checkpoint()
    model, cfg = load_checkpoint(ckpt, config=opts.config, dtype="fp32")
    has_tokenizer = ckpt.is_dir() and (ckpt / "tokenizer.model").is_file()
    tokenizer_dir = ckpt if has_tokenizer else resolve_tokenizer_dir(cfg.tokenizer)
    tokenizer = load_tokenizer(tokenizer_dir)
    files = resolve_checkpoint(ckpt)
    shards = {str(p.name): sha256_file(p) for p in files.shards}
    return export_copy(model), cfg, tokenizer, {"path": str(ckpt), "shards": shards}, tokenizer_dir


def dims_profile(cfg) -> dict[str, Dim]:
    """min/opt/max of every dynamic dimension (TensorRT profiles; the runtime's limits)."""
    from tpo.model.prompt import MAX_PROMPT_TOKENS

    gv = cfg.vision.grid
    prompt = cfg.num_visual_tokens + 40
    max_new = 64
    return {
        "batch": Dim(1, 1, 4),
        "num_vision_tokens": Dim(gv * gv, cfg.vision.num_frames * gv * gv, cfg.vision.num_frames * gv * gv),
        "sequence": Dim(1, prompt, MAX_PROMPT_TOKENS),
        "past_sequence": Dim(0, prompt, MAX_PROMPT_TOKENS + max_new),
        "total_sequence": Dim(1, prompt + 1, MAX_PROMPT_TOKENS + max_new),
        "boxes": Dim(1, 1, 8),
        "text_tokens": Dim(1, 12, cfg.temporal_head.max_text_len),
        "clips": Dim(1, 32, 512),
        "objects": Dim(1, 1, 8),
    }


def save_embeddings(model, path: Path, precision: Precision) -> FileEntry:
    """Token table [V, H] and every task's embedding [H], for the host-side splice."""
    from safetensors.numpy import save_file

    dtype = np.float16 if precision == Precision.FP16 else np.float32
    table = model.lm.get_input_embeddings().weight.detach().float().numpy().astype(dtype)
    tensors = {TOKEN_TABLE: table}
    for task in T.TASKS:
        tensors[TASK_EMBEDDING.format(task=task)] = model.task_embedding(task)[0, 0].detach().float().numpy().astype(dtype)
    save_file(tensors, str(path))
    return FileEntry(EMBEDDINGS, path.name, sha256_file(path), path.stat().st_size,
                     tensors={k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()})


# questions whose prompts (video and image) the saved tokenizer.json must tokenise as sentencepiece does
TOKENIZER_PROBES = ("track the red circle", "how  many shapes? 12", "At which timestamp does it appear? <track_box>")


def save_tokenizer(tokenizer, tokenizer_dir: Path, folder: Path) -> FileEntry:
    """tokenizer.json is what the runtime reads (the same Rust tokenizer the PyTorch side runs: SentencePiece's
    ids, `tpo.model.tokenizer`); the SentencePiece files travel along for the PyTorch side. The saved file is
    read back and checked against the `sentencepiece` library on the chunks of a few prompts."""
    from tokenizers import Tokenizer

    from tpo.contract.prompt import prompt_chunks
    from tpo.contract.tasks import MEDIA
    from tpo.errors import CheckpointError
    from tpo.model.tokenizer import slow_tokenizer_ids

    tok_dir = folder / TOKENIZER
    tok_dir.mkdir()
    tokenizer.backend_tokenizer.save(str(tok_dir / "tokenizer.json"))
    saved = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    added = {t.content: i for i, t in tokenizer.backend_tokenizer.get_added_tokens_decoder().items()}
    chunks = [c for q in TOKENIZER_PROBES for media in MEDIA for c in prompt_chunks(q, media, [0, 7, 14], 20.0) if c]
    for chunk, want in zip(chunks, slow_tokenizer_ids(tokenizer_dir / "tokenizer.model", added, chunks), strict=True):
        if saved.encode(chunk, add_special_tokens=False).ids != want:
            raise CheckpointError(f"{tok_dir / 'tokenizer.json'}: tokenises {chunk!r} unlike SentencePiece "
                                  f"({tokenizer_dir / 'tokenizer.model'})")
    for fname in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        if (tokenizer_dir / fname).is_file():
            shutil.copy2(tokenizer_dir / fname, tok_dir / fname)
    hashes = _sha_files(tok_dir)
    return FileEntry(TOKENIZER, f"{TOKENIZER}/tokenizer.json", hashes["tokenizer.json"],
                     extra_files={f"{TOKENIZER}/{k}": v for k, v in hashes.items() if k != "tokenizer.json"})


def graph_entry(defn: GraphDef, path: Path, precision: Precision, islands: list[str]) -> GraphEntry:
    extra = {f: sha256_file(path.parent / f) for f in external_files(path)}
    size = path.stat().st_size + sum((path.parent / f).stat().st_size for f in extra)
    return GraphEntry(defn.name, path.name, sha256_file(path), size, precision, tuple(defn.inputs),
                      tuple(defn.outputs), extra, tuple(islands), root=path.parent)


def build_manifest(cfg, tokenizer, checkpoint: dict, opts: ExportOptions) -> Manifest:
    """Everything the runtime needs to know but the graphs and files (added as they are written)."""
    from tpo.model.mask_head import NO_OBJECT_SCORE
    from tpo.model.prompt import MAX_PROMPT_TOKENS
    from tpo.model.tokenizer import task_token_ids

    ids = task_token_ids(tokenizer)
    mh, mean, std = cfg.mask_head, tuple(cfg.pixel_mean), tuple(cfg.pixel_std)
    return Manifest(
        precision=Precision(opts.precision), opset=opts.opset,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model={"config_name": cfg.name, "config": cfg.to_dict(), "checkpoint": checkpoint}, tools=tool_versions(),
        preprocess=Preprocess(
            MllmPreprocess(cfg.vision.image_size, cfg.vision.num_frames, mean, std),
            MaskPreprocess(mh.image_size, mean, std),
            TemporalPreprocess(cfg.temporal_features, cfg.temporal_clip_s, cfg.temporal_clip_frames,
                               cfg.temporal_head.max_text_len)),
        tokens=Tokens(ids.bos, ids.eos, ids.video_placeholder, ids.track_box, dict(ids.triggers),
                      dict(ids.placeholders), len(tokenizer)),
        llm=LLM(cfg.llm.num_layers, cfg.llm.num_kv_heads, cfg.llm.head_dim, cfg.llm.hidden_size, cfg.llm.vocab_size,
                MAX_PROMPT_TOKENS, cfg.num_visual_tokens, *_kv_names()),
        vision_graphs={cfg.vision.num_frames: G.VISION_ENCODER.name, 1: G.VISION_ENCODER_IMAGE.name},
        tracker=Tracker(mh.num_maskmem, mh.max_object_pointers, mh.image_size, mh.low_res_size, mh.feature_size,
                        mh.hidden_size, mh.memory_dim, cfg.adapters.track_prompt_tokens, NO_OBJECT_SCORE),
        dims=dims_profile(cfg), graphs={}, files={})


def _kv_names() -> tuple[str, str, str, str]:
    kv = G.LLM.kv
    return kv.past_key, kv.past_value, kv.present_key, kv.present_value


def _progress(opts: ExportOptions, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="graph", disable=not opts.progress, leave=False)


def export_graphs(defs: list[GraphDef], folder: Path, opts: ExportOptions) -> tuple[dict[str, GraphEntry], dict]:
    """Trace and write every graph (fp16 with fp32 islands when asked); the entries and seconds per graph."""
    from .examples import trace_example
    from .memory import RssMonitor

    entries, seconds = {}, {}
    bar = _progress(opts, len(defs), f"export {opts.precision}")
    with RssMonitor() as monitor:
        for d in defs:
            bar.set_postfix_str(d.name)
            with monitor.phase(d.name):
                path = folder / f"{d.name}.onnx"
                export_graph(d, trace_example(d), path, opts.opset)
                islands = to_fp16(path) if opts.precision == Precision.FP16 else []
                entries[d.name] = graph_entry(d, path, opts.precision, islands)
            seconds[d.name] = monitor.phases[d.name]["seconds"]
            bar.update(1)
    bar.close()
    opts_resources = monitor.report()
    opts_resources.update(mode="classic", graphs=dict(monitor.phases))
    seconds["_resources"] = opts_resources
    return entries, seconds


class OutTaken(TPOError):
    """--out appeared while this export ran (another tpo-export to the same folder) and --force was not given."""


def install(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished folder into place. With `force` an old folder is replaced only after the new one
    is complete; without it an `out` that appeared while exporting (a second tpo-export to the same folder)
    is never replaced: checked just before the rename, and the rename itself fails on a non-empty folder."""
    if out.exists() or out.is_symlink():
        if not force:
            raise OutTaken(f"{out}: appeared while this export ran (another tpo-export?); not replaced, this "
                           "export was discarded (pass --force to replace it)")
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
        return
    try:
        tmp.rename(out)
    except OSError as e:
        raise OutTaken(f"{out}: appeared while this export ran (another tpo-export?); not replaced, this "
                       f"export was discarded ({e.strerror})") from None


def export_artifacts(opts: ExportOptions) -> Manifest:
    """Run the whole export; returns the manifest (also at `opts.out / manifest.json`). A model whose fp32
    weights do not fit comfortably goes through the streamed export (`stream_export.py`)."""
    check_options(opts)      # the CLI ran it before importing torch; API callers get it here
    from .stream_export import export_streamed, wants_stream

    if opts.stream != "off":
        from tpo.model.checkpoint import checkpoint_config, default_checkpoint, resolve_checkpoint

        ckpt = Path(opts.checkpoint) if opts.checkpoint is not None else default_checkpoint()
        if wants_stream(opts, checkpoint_config(resolve_checkpoint(ckpt), opts.config)):
            return export_streamed(opts)
    torch.manual_seed(0)
    model, cfg, tokenizer, checkpoint, tokenizer_dir = load_for_export(opts)
    if cfg.temporal_clip_frames not in (1, cfg.vision.num_frames):
        raise ConfigError(f"temporal_clip_frames={cfg.temporal_clip_frames}: the export has vision graphs for "
                          f"1 and {cfg.vision.num_frames} frames only")
    defs = graph_defs(model, only=opts.graphs)
    out = Path(opts.out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    failed_report = out.parent / f"{out.name}.parity-failed.json"
    check_free_space(out.absolute().parent, _planned_bytes(defs, model, opts.precision))
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        manifest = build_manifest(cfg, tokenizer, checkpoint, opts).rebase(tmp)
        manifest.graphs, seconds = export_graphs(defs, tmp, opts)
        manifest.files[EMBEDDINGS] = save_embeddings(model, tmp / f"{EMBEDDINGS}.safetensors", opts.precision)
        manifest.files[TOKENIZER] = save_tokenizer(tokenizer, tokenizer_dir, tmp)
        manifest.parity = run_gate(model, tokenizer, defs, tmp, opts, manifest)
        manifest.parity["export"] = seconds.pop("_resources")
        manifest.parity["export_seconds"] = seconds
        finish(manifest, tmp, out, failed_report, opts.force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def finish(manifest: Manifest, tmp: Path, out: Path, failed_report: Path, force: bool) -> None:
    """The gate's verdict, then the manifest and the rename into place (both export paths end here): a failed
    gate writes its report beside --out and raises ParityFailed with nothing at --out."""
    if not manifest.parity["passed"]:
        failed_report.write_text(json.dumps(manifest.parity, indent=2))
        reasons = "; ".join(manifest.parity["failures"][:4])
        raise ParityFailed(f"parity gate failed ({reasons}); report in {failed_report}; nothing written to {out}")
    manifest.write(tmp)
    install(tmp, out, force)
    manifest.rebase(out)
    failed_report.unlink(missing_ok=True)


def _planned_bytes(defs: list[GraphDef], model, precision: Precision) -> int:
    """What the classic export writes: each graph's weights at the precision, the token table, a margin."""
    item = 2 if precision == Precision.FP16 else 4
    graphs = sum(p.numel() for d in defs for p in d.module.parameters()) * item
    table = model.lm.get_input_embeddings().weight.numel() * item
    return int((graphs + table) * 1.05) + (64 << 20)


def check_free_space(folder: Path, need: int) -> None:
    """InputError, one line naming the need, before anything is written."""
    free = shutil.disk_usage(folder).free
    if free < need:
        from tpo.errors import InputError

        raise InputError(f"{folder}: the export needs {need / 1e9:.2f} GB free, the disk has {free / 1e9:.2f} GB; "
                         "nothing written")


def run_gate(model, tokenizer, defs: list[GraphDef], folder: Path, opts: ExportOptions, manifest: Manifest) -> dict:
    """Graph parity on real clips, then (all graphs present) the task-level check through the runtime."""
    from tpo.calibration.clips import parity_clips

    from .examples import clip_inputs

    clips = parity_clips(opts.parity_clips, max_frames=opts.parity_frames)
    samples: dict[str, list] = {}
    for clip in clips:
        track_q = next(q for q in clip.queries if q.task == T.TRACK.name)
        for name, items in clip_inputs(model, tokenizer, clip.video, track_q.question,
                                       track_frames=opts.parity_frames).items():
            samples.setdefault(name, []).extend(items)
    report: dict = {"clips": [c.name for c in clips], "graphs": {}, "tasks": None, "failures": []}
    bar = _progress(opts, len(defs), "parity")
    for d in defs:
        r = graph_parity(d, folder / f"{d.name}.onnx", samples[d.name], opts.precision)
        report["graphs"][d.name] = r
        report["failures"] += [f"{d.name}.{f}" for f in r["failures"]]
        bar.update(1)
    bar.close()
    if not opts.skip_task_parity and opts.graphs is None:
        from .task_parity import task_parity

        tasks = task_parity(model, tokenizer, manifest, clips)
        report["tasks"] = tasks
        report["failures"] += tasks["failures"]
    report["passed"] = not report["failures"]
    return report
