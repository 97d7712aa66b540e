"""The issue's goal, read off the measured stages: ONNX Runtime fp32 at least 2x PyTorch eager (median of the
per-round ratios) on the tracking step and the vision encoder, per model size and thread count, with the
breakdown of where the time goes and, for the tracking step, its graphs side by side."""

from __future__ import annotations

from tpo.contract import Precision
from tpo.contract import graphs as G

from .backends import variant_name
from .plan import BASELINE, TRACKED_STEP_GRAPHS

GOAL_STAGES = ("track_step", G.VISION_ENCODER.name)
TARGET = "onnxruntime fp32 >= 2x PyTorch eager (median per-round ratio)"
BUSY_CPUS = 0.25     # other processes' CPUs during a stage above which its numbers are flagged as noisy


def goal_rows(result: dict, plan) -> dict:
    """The "goal" section of report.json from `result`'s stages, scaling and sizes."""
    entries = [("tiny", e) for e in result.get("stages", [])]
    entries += [("tiny", e) for e in result.get("scaling", {}).get("threads per engine", {}).get("stages", [])
                if e.get("threads") != plan.threads]
    for size, d in result.get("sizes", {}).items():
        if size != "tiny":
            entries += [(size, e) for e in d["stages"]]
    ort = variant_name("onnxruntime", Precision.FP32, plan.providers)
    rows = []
    for size, e in entries:
        base = e["stage"].split("[")[0]
        r = (e.get("ratios") or {}).get(ort)
        if base not in GOAL_STAGES or r is None:
            continue
        others = (e.get("load") or {}).get("others_cpus")
        threads = e.get("threads", plan.threads)
        parts = []
        if base == "track_step" and threads == plan.threads:
            parts = _components({x["stage"]: x for s, x in entries if s == size}, ort)
        rows.append({"size": size, "stage": base, "components": parts, "threads": threads, "ratio": r,
                     "met": r["median"] >= 2.0, "breakdown": e.get("breakdown", {}), "others_cpus": others,
                     "noisy": others is not None and others > BUSY_CPUS})
    rows.sort(key=lambda r: (r["size"] != "tiny", r["size"], r["stage"], r["threads"]))
    return {"target": TARGET, "rows": rows}


def _components(pool: dict[str, dict], ort: str) -> list[dict]:
    """The tracking step's graphs measured alone in the same size (p50 of eager and ORT, their ratio)."""
    parts = []
    for spec in TRACKED_STEP_GRAPHS:
        x = pool.get(spec.name)
        if x is None or ort not in x["variants"] or BASELINE not in x["variants"]:
            continue
        parts.append({"graph": spec.name, "torch_ms": x["variants"][BASELINE]["p50"],
                      "ort_ms": x["variants"][ort]["p50"], "ratio": (x["ratios"].get(ort) or {}).get("median"),
                      "ort_x_floor": (x.get("x_floor") or {}).get(ort)})
    return parts
