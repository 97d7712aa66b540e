"""Graphs side by side on ONNX Runtime's CPU provider: latency in alternating rounds (one process, so a busy
machine slows both alike), size, and the largest output error against the reference. tpo-calibrate's report
and `python -m tpo.bench.precision` both measure with it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def compare(ref_path: Path, variants: dict[str, Path], feeds: list[dict], threads: int, iters: int) -> dict:
    """Median latency of the fp32 graph and each variant on `feeds` (alternating), sizes and the largest output
    error relative to the fp32 output's range."""
    sessions = {"fp32": _session(ref_path, threads), **{k: _session(p, threads) for k, p in variants.items()}}
    ref = [sessions["fp32"].run(None, f) for f in feeds]                  # also the warm-up
    rows = {k: {"bytes": _bytes(p), "times": [], "max_rel_err": 0.0} for k, p in {"fp32": ref_path, **variants}.items()}
    for k, s in sessions.items():
        if k == "fp32":
            continue
        for f, r in zip(feeds, ref, strict=True):
            got = s.run(None, f)
            for x, y in zip(r, got, strict=True):
                if np.issubdtype(x.dtype, np.floating) and x.size:
                    scale = float(np.abs(x).max()) or 1.0
                    rows[k]["max_rel_err"] = max(rows[k]["max_rel_err"], float(np.abs(x - y).max()) / scale)
    order = list(sessions)
    for i in range(iters):
        for k in (order if i % 2 == 0 else order[::-1]):
            for f in feeds:
                t = time.perf_counter()
                sessions[k].run(None, f)
                rows[k]["times"].append(time.perf_counter() - t)
    base = statistics.median(rows["fp32"]["times"])
    for r in rows.values():
        r["ms"] = round(statistics.median(r.pop("times")) * 1e3, 3)
        r["speedup"] = round(base * 1e3 / r["ms"], 3) if r["ms"] else None
        r["size_ratio"] = round(rows["fp32"]["bytes"] / r["bytes"], 2)
    return rows
