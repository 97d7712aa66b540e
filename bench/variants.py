"""Part 1 of a run, the set-up: run metadata, the clip, the tiny artifacts, one runtime `Session` per variant,
the graph feeds recorded from a real run, and the machine's peak (the floor's denominator)."""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING

from tpo.contract import Manifest, Precision
from tpo.errors import TPOError

from . import floor
from .backends import (
    CountingBackend,
    Variant,
    eager_backend,
    eager_description,
    quiet_onnxruntime,
    variant_name,
)
from .cache import tiny_folders
from .inputs import collect_feeds, make_clip, write_video
from .measure import versions
from .plan import BASELINE

if TYPE_CHECKING:
    from .suite import Suite

DEFINITIONS = {"jitter": "p99 - p50 (ms)", "ratio": "baseline time / variant time per round (medians of that "
               "round's calls); median and range over rounds; > 1 = faster",
               "deadline": "a frame's result later than one source period after its arrival",
               "x_floor": "p50 / floor; floor = max(FLOPs / peak FLOP/s, bytes / peak bytes/s)"}


def setup(suite: Suite) -> None:
    p = suite.plan
    p.out.mkdir(parents=True, exist_ok=True)
    suite.work = p.out / "work"
    suite.work.mkdir(exist_ok=True)
    suite.result["meta"] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": p.quick,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "threads": p.threads, "rounds": p.rounds, "iters": p.iters, "warmup": p.warmup,
        "source_fps": p.source_fps, "baseline": BASELINE, "definitions": DEFINITIONS, "versions": versions(),
    }
    suite.frames, suite.queries = make_clip(seconds=4.0 if not p.quick else 3.0, fps=p.source_fps)
    suite.video = write_video(suite.work / "clip_320x240.avi", suite.frames, p.source_fps)
    suite.result["clip"] = {"file": str(suite.video), "codec": "MJPG", "size": [320, 240], "fps": p.source_fps,
                            "frames": int(len(suite.frames)), "queries": suite.queries}
    suite.memory("start")
    load_tiny(suite)
    suite.memory("tiny variants loaded")
    suite.log("measuring the machine's peak (float32 matmul, memcpy)")
    suite.result["peak"] = floor.measure_peak(quick=p.quick)


def load_tiny(suite: Suite) -> None:
    """The tiny artifacts' manifests (hashes checked), a session per variant that starts, and the feeds."""
    folders = tiny_folders(suite.plan, suite.note, suite.log)
    suite.result["artifacts"] = {k: str(v) for k, v in folders.items()}
    manifests = {prec: Manifest.load(f) for prec, f in folders.items()}
    for m in manifests.values():
        m.verify()
    suite.manifest = manifests[Precision.FP32]
    for backend in sorted(suite.plan.backends, key=lambda b: b != "torch"):      # the baseline first
        for prec, m in manifests.items():
            if backend == "torch" and prec != Precision.FP32:
                continue              # eager is the fp32 baseline
            _add_variant(suite, backend, prec, m)
    if not suite.variants:
        raise TPOError("no variant could start; see the notes above")
    suite.result["variants"] = {n: {"backend": v.backend, "precision": v.precision, "description": v.description}
                                for n, v in suite.variants.items()}
    ref = suite.variants.get("onnxruntime-fp32") or next(iter(suite.variants.values()))
    suite.feeds, suite.captured = collect_feeds(ref.session, suite.manifest, suite.frames[:60],
                                                suite.plan.source_fps, suite.queries)


def _add_variant(suite: Suite, backend: str, prec: Precision, manifest: Manifest) -> None:
    """A session of `manifest` on `backend` as a variant; one that cannot start is a note, never an error."""
    from tpo.runtime.backend import BackendUnavailable, open_backend
    from tpo.runtime.session import open as open_session

    p = suite.plan
    name = BASELINE if backend == "torch" else variant_name(backend, prec, p.providers)
    try:
        if backend == "torch":
            inner = eager_backend(manifest, p.threads, p.torch_device, suite.note)
        elif backend == "onnxruntime":
            inner = quiet_onnxruntime(p.onnx_providers, threads=p.threads)
        else:
            inner = open_backend(backend)
        counting = CountingBackend(inner)
        session = open_session(manifest.root, backend=counting, verify=False)
        if backend == "torch":
            counting.description = eager_description(inner)
        suite.variants[name] = Variant(name, backend, prec, counting.description, session, counting, manifest)
    except (BackendUnavailable, TPOError, ImportError, OSError) as e:
        suite.note(f"{name}: skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
