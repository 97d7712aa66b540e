"""An fp32 export -> a quantised export, gated: `tpo-calibrate` (and `tpo-export --precision int8|int4`).

    plan        per graph what it gets (`INT8_GRAPHS`, `WEIGHT_ONLY_GRAPHS`, the rest fp32): int8 QDQ for the vision
                and mask graphs (where the FLOPs of a frame are); the LLM dynamic int8 (`--precision int8`) or
                weight-only int4 (`int4`: its decode step reads every weight once per token, bytes not FLOPs);
                fp32 kept for the small heads (router, box encoder, temporal head: well under 1% of a
                question's time) and said so in the manifest
    capture     the fp32 graphs run on the calibration clips and every graph's inputs are recorded
                (capture.py), or a recorded capture is replayed
    quantise    each planned graph from its own captured inputs; the result is cached by graph sha256 x data
                sha256 x method (`cache_dir`) and reused
    gate        held-out clips through fp32 and quantised graphs (gate.py); past the budget: nothing at --out,
                the report beside it, `CalibrationFailed`
    report      per graph: bytes, ONNX Runtime CPU latency of fp32 and quantised on the captured inputs (alternating
                rounds, one process), numeric error; in the manifest's `parity.calibration`
Everything is written into a temporary folder beside --out and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tpo.contract import MANIFEST_FILE, Manifest, Precision, sha256_file
from tpo.contract import graphs as G
from tpo.errors import InputError, TPOError
from tpo.signals import stop_point

from .capture import Captures, record
from .gate import HELD_OUT_SEED, agreement
from .measure import compare
from .quantize import METHODS, quantize_dynamic_int8, quantize_int8, quantize_weight_only
from .sources import load_clips

INT8_GRAPHS = (G.VISION_ENCODER.name, G.VISION_ENCODER_IMAGE.name, G.CONNECTOR.name, G.MASK_IMAGE_ENCODER.name,
               G.MASK_DECODER_PROMPTED.name, G.MASK_DECODER_TRACKED.name, G.MEMORY_ENCODER.name,
               G.MEMORY_ATTENTION.name)
WEIGHT_ONLY_GRAPHS = (G.LLM.name,)
LM_LOGITS = G.LLM.output_names[0]      # its projection (lm_head) stays fp32 in the quantised LLM: it picks every token
PRECISIONS = (Precision.INT8, Precision.INT4)


class CalibrationFailed(TPOError):
    """The quantised artifact missed its gate; the report is beside --out, nothing at --out."""


@dataclass
class CalibrateOptions:
    artifacts: Path                      # an fp32 export
    out: Path
    precision: Precision = Precision.INT8
    data: str | None = None              # clips (calibration/sources.py); or
    captures: Path | None = None         # a recorded capture to replay
    record_to: Path | None = None        # also save the capture here
    method: str = "minmax"
    block: int = 32                      # weight-only block size
    samples: int = 16                    # captured inputs per graph
    held_out: int = 4                    # held-out clips for the gate
    max_frames: int = 64
    force: bool = False
    threads: int | None = 1
    cache_dir: Path | None = None


def cache_dir(opts: CalibrateOptions) -> Path:
    if opts.cache_dir is not None:
        return Path(opts.cache_dir)
    if os.environ.get("TPO_CALIBRATION_CACHE"):
        return Path(os.environ["TPO_CALIBRATION_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "tpo-edge" / "calibration"


def check_options(opts: CalibrateOptions) -> None:
    if opts.precision not in PRECISIONS:
        raise InputError(f"--precision {opts.precision}: tpo-calibrate makes {', '.join(p.value for p in PRECISIONS)}")
    if (opts.data is None) == (opts.captures is None):
        raise InputError("calibration data: give --calibration-data SRC (clips: a video, a folder, synthetic:N) "
                         "or --captures DIR (a recorded capture), one of them")
    if opts.method not in METHODS:
        raise InputError(f"--method {opts.method!r}: choose one of {', '.join(METHODS)}")
    if opts.samples < 1 or opts.held_out < 1:
        raise InputError(f"--samples {opts.samples} and --held-out {opts.held_out} must be >= 1")
    if (opts.out.exists() or opts.out.is_symlink()) and not opts.force:
        raise InputError(f"--out {opts.out}: exists (pass --force to replace it)")


def calibrate(opts: CalibrateOptions, say=print) -> Manifest:
    check_options(opts)
    source = Manifest.load(opts.artifacts)
    source.verify()
    not_fp32 = sorted(n for n, g in source.graphs.items() if g.precision != Precision.FP32)
    if not_fp32:
        raise InputError(f"{opts.artifacts}: graph(s) {not_fp32} are not fp32; calibrate an fp32 export")
    min_frames = max(source.vision_graphs)          # the video graph's frames
    if opts.captures is not None:
        captures = Captures.load(opts.captures)
    else:
        clips = load_clips(opts.data, min_frames=min_frames, max_frames=opts.max_frames)
        start = time.perf_counter()
        captures = record(opts.artifacts, clips, opts.samples, source=str(opts.data), threads=opts.threads)
        say(f"captured {sum(len(s) for s in captures.graphs.values())} inputs of {len(captures.graphs)} graphs "
            f"from {len(clips)} clips in {time.perf_counter() - start:.0f} s")
        if opts.record_to is not None:
            captures.save(opts.record_to)
            say(f"capture saved to {opts.record_to}")
    out = Path(opts.out)
    tmp = out.absolute().parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        manifest = _assemble(source, captures, opts, tmp, say)
        held_out = load_clips(f"synthetic:{opts.held_out}@{HELD_OUT_SEED}", min_frames=min_frames,
                              max_frames=opts.max_frames)
        gate = agreement(_session(source, opts), _session(manifest, opts), held_out, opts.precision)
        manifest.parity = dict(source.parity, calibration=manifest.parity["calibration"], task_agreement=gate,
                               passed=gate["passed"], failures=gate["failures"])
        failed = out.absolute().parent / f"{out.name}.calibration-failed.json"
        if not gate["passed"]:
            failed.write_text(json.dumps(manifest.parity, indent=2))
            raise CalibrationFailed(f"gate failed ({'; '.join(gate['failures'][:3])}); report in {failed}; "
                                    f"nothing written to {out}")
        manifest.write(tmp)
        _install(tmp, out, opts.force)
        failed.unlink(missing_ok=True)
        return manifest.rebase(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _session(manifest: Manifest, opts: CalibrateOptions):
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.session import Session

    return Session(manifest, OnnxRuntimeBackend(threads=opts.threads))


def _assemble(source: Manifest, captures: Captures, opts: CalibrateOptions, tmp: Path, say) -> Manifest:
    """Copy the fp32 artifact into `tmp`, replacing each planned graph by its quantised form; the report rows."""
    shutil.copytree(source.root, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
    (tmp / MANIFEST_FILE).unlink()                  # a link to the source's: written anew, never through it
    manifest = Manifest.from_json(source.to_json(), tmp)
    manifest.precision = opts.precision
    rows, cache = {}, cache_dir(opts)
    for name, entry in source.graphs.items():
        stop_point()
        if name in INT8_GRAPHS and name in captures.graphs and captures.graphs[name]:
            captures.check_graph(name, entry.sha256)
            kind, key = "qdq8", f"{entry.sha256[:16]}-{captures.data_key(name)[:16]}-{opts.method}"
        elif name in WEIGHT_ONLY_GRAPHS and opts.precision == Precision.INT4:
            kind, key = "w4", f"{entry.sha256[:16]}-w4b{opts.block}"
        elif name in WEIGHT_ONLY_GRAPHS:          # MatMulNBits' 8-bit CPU kernel is slower than fp32 (measured)
            kind, key = "d8", f"{entry.sha256[:16]}-d8"
        else:
            rows[name] = {"precision": "fp32", "kept": "small head (or no captured inputs): fp32 kept",
                          "bytes_fp32": _bytes(entry)}
            continue
        start = time.perf_counter()
        target = tmp / f"{name}.onnx"
        for stale in (target, tmp / f"{name}.onnx.data"):
            stale.unlink(missing_ok=True)
        info = _quantized(name, entry, captures, opts, kind, key, cache, target)
        seconds = time.perf_counter() - start
        extra = {p.name: sha256_file(p) for p in [tmp / f"{name}.onnx.data"] if p.is_file()}
        precision = Precision.INT4 if kind == "w4" else Precision.INT8
        new = replace(manifest.graphs[name], file=target.name, sha256=sha256_file(target),
                      bytes=target.stat().st_size, precision=precision, extra_files=extra, fp32_islands=())
        manifest.graphs[name] = new
        rows[name] = {"precision": info["kind"], **info, "seconds": round(seconds, 1), "bytes_fp32": _bytes(entry),
                      "bytes": _bytes(new)}
        say(f"{name}: {info['kind']}, {rows[name]['bytes_fp32'] / 1e6:.1f} -> {rows[name]['bytes'] / 1e6:.1f} MB"
            f"{' (cached)' if info.get('cached') else ''}")
    _measure(source, manifest, captures, rows, opts)
    manifest.parity = {"calibration": {"precision": opts.precision.value, "method": opts.method,
                                       "block": opts.block, "source": captures.source, "clips": captures.clips,
                                       "graphs": rows}}
    return manifest


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links where the file system allows (a full-size fp32 export is 32 GB). Nothing is ever written
    through one: the manifest and every graph replaced are unlinked first (a test checks the source's hashes)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _bytes(entry) -> int:
    return entry.bytes + sum((entry.root / f).stat().st_size for f in entry.extra_files)


def _quantized(name, entry, captures, opts, kind, key, cache: Path, target: Path) -> dict:
    """Quantise `entry` into `target`, or copy it from the cache (keyed by graph x data x method)."""
    cached, meta = cache / f"{name}-{key}.onnx", cache / f"{name}-{key}.json"
    if meta.is_file() and cached.is_file():
        info = json.loads(meta.read_text())
        if sha256_file(cached) == info.get("sha256") and not (cache / f"{cached.name}.data").exists():
            shutil.copy2(cached, target)
            return dict(info["info"], cached=True)
    if kind == "qdq8":
        info = quantize_int8(entry.path, target, captures.graphs[name], opts.method)
    elif kind == "d8":
        info = quantize_dynamic_int8(entry.path, target, keep_fp32_output=LM_LOGITS)
    else:
        info = quantize_weight_only(entry.path, target, int(kind[1:]), opts.block, keep_fp32_output=LM_LOGITS)
    if not (target.parent / f"{target.name}.data").exists():      # small graphs only: big ones are not cached
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".{cached.name}.{os.getpid()}"
        shutil.copy2(target, part)
        os.replace(part, cached)
        meta.write_text(json.dumps({"sha256": sha256_file(cached), "info": info}))
    return info


def _measure(source: Manifest, manifest: Manifest, captures: Captures, rows: dict, opts: CalibrateOptions) -> None:
    """Per quantised graph, on (up to 4 of) its captured inputs: fp32 and quantised latency, the error."""
    for name, row in rows.items():
        if row["precision"] == "fp32" or not captures.graphs.get(name):
            continue
        r = compare(source.graphs[name].path, {"q": manifest.graphs[name].path}, captures.graphs[name][:4],
                    threads=opts.threads or 1, iters=3)
        row.update(max_rel_err=r["q"]["max_rel_err"], ms_fp32=r["fp32"]["ms"], ms=r["q"]["ms"],
                   speedup=r["q"]["speedup"])


def _install(tmp: Path, out: Path, force: bool) -> None:
    if out.exists() or out.is_symlink():
        if not force:
            raise InputError(f"--out {out}: appeared while calibrating; not replaced (pass --force)")
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
        return
    tmp.rename(out)
