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

from tpo import manifest as names
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
    return {p.name: names.sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def load_for_export(opts: ExportOptions):
    from tpo.model.checkpoint import default_checkpoint, load_checkpoint, resolve_checkpoint
    from tpo.model.tokenizer import load_tokenizer, resolve_tokenizer_dir

    ckpt = Path(opts.checkpoint) if opts.checkpoint is not None else default_checkpoint()
    model, cfg = load_checkpoint(ckpt, config=opts.config, dtype="fp32")
    has_tokenizer = ckpt.is_dir() and (ckpt / "tokenizer.model").is_file()
    tokenizer_dir = ckpt if has_tokenizer else resolve_tokenizer_dir(cfg.tokenizer)
    tokenizer = load_tokenizer(tokenizer_dir)
    files = resolve_checkpoint(ckpt)
    shards = {str(p.name): names.sha256_file(p) for p in files.shards}
    return export_copy(model), cfg, tokenizer, {"path": str(ckpt), "shards": shards}, tokenizer_dir


def dims_profile(cfg) -> dict[str, dict[str, int]]:
    """min/opt/max of every named dimension (TensorRT profiles; the runtime's limits)."""
    from tpo.model.prompt import MAX_PROMPT_TOKENS

    gv = cfg.vision.grid
    prompt = cfg.num_visual_tokens + 40
    max_new = 64
    return {
        "batch": {"min": 1, "opt": 1, "max": 4},
        "num_vision_tokens": {"min": gv * gv, "opt": cfg.vision.num_frames * gv * gv,
                              "max": cfg.vision.num_frames * gv * gv},
        "sequence": {"min": 1, "opt": prompt, "max": MAX_PROMPT_TOKENS},
        "past_sequence": {"min": 0, "opt": prompt, "max": MAX_PROMPT_TOKENS + max_new},
        "total_sequence": {"min": 1, "opt": prompt + 1, "max": MAX_PROMPT_TOKENS + max_new},
        "boxes": {"min": 1, "opt": 1, "max": 8},
        "text_tokens": {"min": 1, "opt": 12, "max": cfg.temporal_head.max_text_len},
        "clips": {"min": 1, "opt": 32, "max": 512},
        "objects": {"min": 1, "opt": 1, "max": 8},
    }


def save_embeddings(model, path: Path, precision: str) -> dict:
    """Token table [V, H] and the three task embeddings [H], for the host-side splice."""
    from safetensors.numpy import save_file

    dtype = np.float16 if precision == "fp16" else np.float32
    lm = model.lm
    table = lm.get_input_embeddings().weight.detach().float().numpy().astype(dtype)
    tensors = {names.TOKEN_TABLE: table}
    for task in names.TASKS:
        tensors[names.TASK_EMBEDDING.format(task=task)] = (
            model.task_embedding(task)[0, 0].detach().float().numpy().astype(dtype))
    save_file(tensors, str(path))
    return {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()}


def graph_entry(defn: GraphDef, path: Path, precision: str, islands: list[str]) -> dict:
    extra = {f: names.sha256_file(path.parent / f) for f in external_files(path)}
    return {
        "file": path.name, "sha256": names.sha256_file(path),
        "bytes": path.stat().st_size + sum((path.parent / f).stat().st_size for f in extra),
        "extra_files": extra, "precision": precision, "fp32_islands": islands,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in defn.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in defn.outputs],
    }


def build_manifest(cfg, tokenizer, checkpoint: dict, opts: ExportOptions) -> dict:
    from tpo.model.mask_head import NO_OBJECT_SCORE
    from tpo.model.prompt import MAX_PROMPT_TOKENS
    from tpo.model.tokenizer import task_token_ids

    ids = task_token_ids(tokenizer)
    mh = cfg.mask_head
    return {
        "format": names.FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "precision": opts.precision,
        "opset": opts.opset,
        "model": {"config_name": cfg.name, "config": cfg.to_dict(), "checkpoint": checkpoint},
        "tools": tool_versions(),
        "preprocess": {
            "mllm": {"image_size": cfg.vision.image_size, "num_frames": cfg.vision.num_frames,
                     "mean": list(cfg.pixel_mean), "std": list(cfg.pixel_std), "sampling": "segment-middle",
                     "resize": "bicubic antialiased on uint8, rounded, then /255"},
            "mask": {"image_size": mh.image_size, "mean": list(cfg.pixel_mean), "std": list(cfg.pixel_std),
                     "resize": "/255, then bicubic antialiased in float"},
            "temporal": {"features": cfg.temporal_features, "clip_s": cfg.temporal_clip_s,
                         "frames_per_clip": cfg.temporal_clip_frames,
                         "max_text_tokens": cfg.temporal_head.max_text_len},
        },
        "tokens": {"bos": ids.bos, "eos": ids.eos, "video_placeholder": ids.video_placeholder,
                   "track_box": ids.track_box, "triggers": {str(k): v for k, v in ids.triggers.items()},
                   "placeholders": ids.placeholders, "vocab_size": len(tokenizer)},
        "llm": {"num_layers": cfg.llm.num_layers, "num_kv_heads": cfg.llm.num_kv_heads,
                "head_dim": cfg.llm.head_dim, "hidden_size": cfg.llm.hidden_size, "vocab_size": cfg.llm.vocab_size,
                "past_key": names.PAST_KEY, "past_value": names.PAST_VALUE, "present_key": names.PRESENT_KEY,
                "present_value": names.PRESENT_VALUE, "max_prompt_tokens": MAX_PROMPT_TOKENS,
                "num_visual_tokens": cfg.num_visual_tokens},
        "vision": {"graphs_by_frames": {str(cfg.vision.num_frames): names.VISION_ENCODER, "1": names.VISION_ENCODER_IMAGE}},
        "tracker": {"num_maskmem": mh.num_maskmem, "max_object_pointers": mh.max_object_pointers,
                    "image_size": mh.image_size, "low_res_size": mh.low_res_size, "feature_size": mh.feature_size,
                    "hidden_size": mh.hidden_size, "memory_dim": mh.memory_dim,
                    "track_prompt_tokens": cfg.adapters.track_prompt_tokens, "no_object_score": NO_OBJECT_SCORE},
        "dims": dims_profile(cfg),
        "graphs": {},
        "files": {},
        "parity": {},
    }


def _progress(opts: ExportOptions, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="graph", disable=not opts.progress, leave=False)


def export_artifacts(opts: ExportOptions) -> dict:
    """Run the whole export; returns the manifest (also at `opts.out / manifest.json`)."""
    check_options(opts)      # the CLI ran it before importing torch; API callers get it here
    torch.manual_seed(0)
    model, cfg, tokenizer, checkpoint, tokenizer_dir = load_for_export(opts)
    if cfg.temporal_clip_frames not in (1, cfg.vision.num_frames):
        raise ConfigError(f"temporal_clip_frames={cfg.temporal_clip_frames}: the export has vision graphs for "
                          f"1 and {cfg.vision.num_frames} frames only")
    defs = graph_defs(model)
    if opts.graphs is not None:
        defs = [d for d in defs if d.name in opts.graphs]
    out = Path(opts.out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    failed_report = out.parent / f"{out.name}.parity-failed.json"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        manifest = build_manifest(cfg, tokenizer, checkpoint, opts)
        timings: dict[str, float] = {}
        # 1. graphs
        from .examples import trace_example

        bar = _progress(opts, len(defs), f"export {opts.precision}")
        for d in defs:
            bar.set_postfix_str(d.name)
            start = time.perf_counter()
            path = tmp / f"{d.name}.onnx"
            export_graph(d, trace_example(d, model), path, opts.opset)
            islands = to_fp16(path) if opts.precision == "fp16" else []
            d.fp32_islands = islands
            manifest["graphs"][d.name] = graph_entry(d, path, opts.precision, islands)
            timings[d.name] = round(time.perf_counter() - start, 2)
            bar.update(1)
        bar.close()
        # 2. host-side files
        emb = tmp / f"{names.EMBEDDINGS}.safetensors"
        tensors = save_embeddings(model, emb, opts.precision)
        manifest["files"][names.EMBEDDINGS] = {"file": emb.name, "sha256": names.sha256_file(emb),
                                               "bytes": emb.stat().st_size, "tensors": tensors}
        tok_dir = tmp / names.TOKENIZER
        tok_dir.mkdir()
        # tokenizer.json is what the runtime reads (the same Rust tokenizer transformers runs); the
        # SentencePiece files travel along for the PyTorch side
        tokenizer.backend_tokenizer.save(str(tok_dir / "tokenizer.json"))
        for fname in ("tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
            if (tokenizer_dir / fname).is_file():
                shutil.copy2(tokenizer_dir / fname, tok_dir / fname)
        tok_hashes = _sha_files(tok_dir)
        manifest["files"][names.TOKENIZER] = {
            "file": f"{names.TOKENIZER}/tokenizer.json", "sha256": tok_hashes["tokenizer.json"],
            "extra_files": {f"{names.TOKENIZER}/{k}": v for k, v in tok_hashes.items() if k != "tokenizer.json"}}
        # 3. the gate
        parity = run_gate(model, tokenizer, defs, tmp, opts, manifest)
        parity["export_seconds"] = timings
        manifest["parity"] = parity
        if not parity["passed"]:
            failed_report.write_text(json.dumps(parity, indent=2))
            reasons = "; ".join(parity["failures"][:4])
            raise ParityFailed(f"parity gate failed ({reasons}); report in {failed_report}; nothing written to {out}")
        (tmp / names.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        # 4. into place
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash)
        else:
            tmp.rename(out)
        if failed_report.exists():
            failed_report.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def run_gate(model, tokenizer, defs: list[GraphDef], folder: Path, opts: ExportOptions, manifest: dict) -> dict:
    """Graph parity on real clips, then (all graphs present) the task-level check through the runtime."""
    from tpo.calibration.clips import parity_clips

    from .examples import clip_inputs

    clips = parity_clips(opts.parity_clips, max_frames=opts.parity_frames)
    samples: dict[str, list] = {}
    for clip in clips:
        track_q = next(q for q in clip.queries if q.task == "track")
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

        tasks = task_parity(model, tokenizer, folder, manifest, clips, opts.precision)
        report["tasks"] = tasks
        report["failures"] += tasks["failures"]
    report["passed"] = not report["failures"]
    return report
