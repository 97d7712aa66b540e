"""An fp32 export -> a lower-precision export, gated: `tpo-calibrate` (and `tpo-export --precision
int8|int4|fp16|auto`).

    plan        per graph what it gets (a kind of `KINDS`). int8: QDQ for the vision and mask graphs (where the
                FLOPs of a frame are), the LLM dynamic int8; int4: the LLM weight-only int4 (its decode step reads
                every weight once per token: bytes, not FLOPs), the rest as int8; both keep the small heads
                fp32 (router, box encoder, temporal head: well under 1% of a question's time) and say so in the
                manifest. fp16: every graph in fp16 with its fp32 islands measured on the captured inputs
                (fp16.py), but `FP16_KEEP_FP32` (the temporal head: measured, see there). auto (`--budget B`): per graph the smallest kind whose chain still passes the gate
                at budget B (`search`); the manifest's precision is "mixed", its graphs say what each got
    capture     the fp32 graphs run on the calibration clips and every graph's inputs are recorded
                (capture.py), or a recorded capture is replayed
    quantise    each planned graph from its own captured inputs; the result is cached by graph sha256 x data
                sha256 x method (`cache_dir`) and reused
    gate        held-out clips through fp32 and quantised graphs (gate.py), compared with each other and with
                the clips' ground truth (truth.py); past the budget: nothing at --out, the report beside it,
                `CalibrationFailed`
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
from .fp16 import FP16_ERROR_SLACK, FP16_HEADROOM, to_fp16_fixed, to_fp16_measured
from .gate import BUDGETS, HELD_OUT_SEED, Remembered, agreement, budget_for
from .measure import compare
from .quantize import METHODS, quantize_dynamic_int8, quantize_int8, quantize_weight_only
from .sources import load_clips

# kind -> the precision a graph of that kind has in the manifest
KINDS = {"qdq8": Precision.INT8, "d8": Precision.INT8, "w4": Precision.INT4, "fp16": Precision.FP16,
         "fp32": Precision.FP32}
INT8_GRAPHS = (G.VISION_ENCODER.name, G.VISION_ENCODER_IMAGE.name, G.CONNECTOR.name, G.MASK_IMAGE_ENCODER.name,
               G.MASK_DECODER_PROMPTED.name, G.MASK_DECODER_TRACKED.name, G.MEMORY_ENCODER.name,
               G.MEMORY_ATTENTION.name)
WEIGHT_ONLY_GRAPHS = (G.LLM.name,)
# --precision fp16 keeps these fp32, each for a measured reason (docs/export.md, "Ground truth on 50 held-out
# clips"); --precision auto still tries them, judged by its gate.
FP16_KEEP_FP32 = {G.TEMPORAL_HEAD.name: "fp16 reorders CG-DETR's near-tied windows: temporal R1@0.5 0.86 -> 0.76 "
                                        "(measured islands) and 0.78 (the export's fixed list) on 50 held-out clips"}
LM_LOGITS = G.LLM.output_names[0]      # its projection (lm_head): kept fp32 by default, it picks every token
LM_HEAD = ("fp32", "int4")             # --lm-head: the int4 LLM's lm_head kept fp32, or int4 like the rest
PRECISIONS = (Precision.INT8, Precision.INT4, Precision.FP16, Precision.MIXED)
AUTO = "auto"                          # the CLI's word for a searched (MIXED) artifact
DEFAULT_BUDGET = 0.05
FP16_SAMPLES = 4                       # captured inputs per graph the fp16 island search runs on
QUANTISER_VERSION = 3                  # in every cache key: bumped when quantize.py / fp16.py change what they write
FP16_METHOD = f"fp16h{FP16_HEADROOM:g}s{FP16_ERROR_SLACK:g}n{FP16_SAMPLES}"      # in its cache key


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
    budget: float = DEFAULT_BUDGET       # --precision auto: the largest drop of any agreement mean (gate.py)
    lm_head: str = "fp32"                # the int4 LLM's lm_head (LM_HEAD)


def cache_dir(opts: CalibrateOptions) -> Path:
    if opts.cache_dir is not None:
        return Path(opts.cache_dir)
    if os.environ.get("TPO_CALIBRATION_CACHE"):
        return Path(os.environ["TPO_CALIBRATION_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "tpo-edge" / "calibration"


def check_options(opts: CalibrateOptions) -> None:
    if opts.precision not in PRECISIONS:
        made = ", ".join(AUTO if p == Precision.MIXED else p.value for p in PRECISIONS)
        raise InputError(f"--precision {opts.precision}: tpo-calibrate makes {made}")
    if opts.lm_head not in LM_HEAD:
        raise InputError(f"--lm-head {opts.lm_head!r}: choose one of {', '.join(LM_HEAD)}")
    if not 0 < opts.budget < 1:
        raise InputError(f"--budget {opts.budget}: a fraction in (0, 1), the largest drop of an agreement mean "
                         "against fp32 (0.05: every mean >= 0.95)")
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
        held_out = load_clips(f"synthetic:{opts.held_out}@{HELD_OUT_SEED}", min_frames=min_frames,
                              max_frames=None)          # whole clips: their ground truth holds
        reference = Remembered(_session(source, opts))
        if opts.precision == Precision.MIXED:
            plan, trials = search(source, captures, opts, held_out, reference, tmp.parent / f"{tmp.name}-trial", say)
            budget = budget_for(opts.budget)
        else:
            plan, trials, budget = plan_for(source, captures, opts.precision), None, BUDGETS[opts.precision]
        manifest = _assemble(source, captures, opts, tmp, say, plan)
        gate = agreement(reference, _session(manifest, opts), held_out, budget)
        calibration = manifest.parity["calibration"]
        if trials is not None:
            calibration.update(budget=opts.budget, trials=trials)
        _measure(source, manifest, captures, calibration["graphs"], opts)
        manifest.parity = dict(source.parity, calibration=calibration, task_agreement=gate,
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


def plan_for(source: Manifest, captures: Captures, precision: Precision) -> dict[str, str]:
    """Per graph its kind (`KINDS`) for one precision (see the module docstring)."""
    plan = {}
    for name in source.graphs:
        if precision == Precision.FP16:
            plan[name] = "fp32" if name in FP16_KEEP_FP32 else "fp16"
        elif name in WEIGHT_ONLY_GRAPHS:
            plan[name] = "w4" if precision == Precision.INT4 else "d8"
        elif name in INT8_GRAPHS and captures.graphs.get(name):
            plan[name] = "qdq8"
        else:
            plan[name] = "fp32"
    return plan


def candidates(name: str, captured: bool) -> list[str]:
    """The kinds `--precision auto` tries for a graph, smallest first (fp32, the fallback, is not tried)."""
    if name in WEIGHT_ONLY_GRAPHS:
        return ["w4", "d8", "fp16"]
    if name in INT8_GRAPHS and captured:
        return ["qdq8", "fp16"]
    return ["fp16"]


def search(source: Manifest, captures: Captures, opts: CalibrateOptions, held_out, reference, work: Path,
           say) -> tuple[dict[str, str], list[dict]]:
    """Greedy, largest graph first: each graph takes the smallest candidate kind with which the whole chain (the
    graphs chosen so far, this one, the rest fp32) still passes the gate at `opts.budget` on the held-out clips;
    fp32 when none does. Every trial is kept for the report."""
    budget = budget_for(opts.budget)
    plan = {name: "fp32" for name in source.graphs}
    trials = []
    try:
        for name in sorted(source.graphs, key=lambda n: -_bytes(source.graphs[n])):
            for kind in candidates(name, bool(captures.graphs.get(name))):
                stop_point()
                trial = dict(plan, **{name: kind})
                if work.exists():
                    shutil.rmtree(work)
                work.mkdir()
                gate = agreement(reference, _session(_assemble(source, captures, opts, work, lambda _: None, trial),
                                                     opts), held_out, budget)
                trials.append({"graph": name, "kind": kind, "passed": gate["passed"], "means": gate["means"],
                               "failures": gate["failures"][:3]})
                say(f"auto: {name} {kind}: {'kept' if gate['passed'] else 'over budget'} ("
                    + ", ".join(f"{k} {v:.3f}" for k, v in gate["means"].items()) + ")")
                if gate["passed"]:
                    plan = trial
                    break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return plan, trials


def _session(manifest: Manifest, opts: CalibrateOptions):
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.session import Session

    return Session(manifest, OnnxRuntimeBackend(threads=opts.threads))


def _assemble(source: Manifest, captures: Captures, opts: CalibrateOptions, tmp: Path, say,
              plan: dict[str, str]) -> Manifest:
    """Copy the fp32 artifact into `tmp`, each graph replaced by its `plan` kind; the report rows."""
    shutil.copytree(source.root, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
    (tmp / MANIFEST_FILE).unlink()                  # a link to the source's: written anew, never through it
    manifest = Manifest.from_json(source.to_json(), tmp)
    manifest.precision = opts.precision
    rows, cache = {}, cache_dir(opts)
    for name, entry in source.graphs.items():
        stop_point()
        kind = plan[name]
        if kind == "fp32":
            kept = {Precision.MIXED: "no smaller kind within the budget",
                    Precision.FP16: FP16_KEEP_FP32.get(name, "")}.get(opts.precision) or \
                "small head (or no captured inputs): fp32 kept"
            rows[name] = {"precision": "fp32", "bytes_fp32": _bytes(entry), "kept": kept}
            continue
        if kind in ("qdq8", "fp16") and captures.graphs.get(name):
            captures.check_graph(name, entry.sha256)
        key = {"qdq8": f"{captures.data_key(name)[:16]}-{opts.method}" if captures.graphs.get(name) else "",
               "fp16": f"{captures.data_key(name)[:16]}-{FP16_METHOD}" if captures.graphs.get(name) else "fp16-fixed",
               "w4": f"w4b{opts.block}" + ("-lm4" if opts.lm_head == "int4" else ""), "d8": "d8"}[kind]
        start = time.perf_counter()
        target = tmp / f"{name}.onnx"
        for stale in (target, tmp / f"{name}.onnx.data"):
            stale.unlink(missing_ok=True)
        info = _quantized(name, entry, captures, opts, kind, f"{entry.sha256[:16]}-{key}-v{QUANTISER_VERSION}", cache,
                          target)
        seconds = time.perf_counter() - start
        extra = {p.name: sha256_file(p) for p in [tmp / f"{name}.onnx.data"] if p.is_file()}
        islands = tuple(info.get("op_islands", ())) + tuple(info.get("node_islands", ()))
        new = replace(manifest.graphs[name], file=target.name, sha256=sha256_file(target),
                      bytes=target.stat().st_size, precision=KINDS[kind], extra_files=extra, fp32_islands=islands)
        manifest.graphs[name] = new
        rows[name] = {"precision": info["kind"], **info, "seconds": round(seconds, 1), "bytes_fp32": _bytes(entry),
                      "bytes": _bytes(new)}
        say(f"{name}: {info['kind']}, {rows[name]['bytes_fp32'] / 1e6:.1f} -> {rows[name]['bytes'] / 1e6:.1f} MB"
            f"{' (cached)' if info.get('cached') else ''}")
    manifest.parity = {"calibration": {"precision": opts.precision.value, "method": opts.method,
                                       "block": opts.block, "source": captures.source, "clips": captures.clips,
                                       "plan": plan, "graphs": rows}}
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
    elif kind == "fp16" and captures.graphs.get(name):
        info = to_fp16_measured(entry.path, target, captures.graphs[name][:FP16_SAMPLES], opts.threads or 1)
    elif kind == "fp16":                       # no captured inputs (a head no clip triggered): the fixed list
        info = to_fp16_fixed(entry.path, target)
    elif kind == "d8":
        info = quantize_dynamic_int8(entry.path, target, keep_fp32_output=LM_LOGITS)
    else:
        info = quantize_weight_only(entry.path, target, int(kind[1:]), opts.block,
                                    keep_fp32_output=LM_LOGITS if opts.lm_head == "fp32" else None)
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
