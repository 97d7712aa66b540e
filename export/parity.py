"""The parity gate, graph level: every exported graph in ONNX Runtime against its PyTorch module, on real inputs.

For each graph and output: max absolute error, max relative error (max |ort - torch| over max |torch|, so
values near zero do not blow it up, as optimum's atol check but scale-free), the dtype and shape ONNX Runtime
returned, and whether any value is NaN or inf. Budgets: fp32 <= 1e-4 relative on every output; fp16 is judged
by the task-level check (IoUs, windows, triggers; `task_parity.py`), its graph errors are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tpo.contract import Precision
from tpo.model.graphs import GraphDef
from tpo.signals import stop_point

FP32_MAX_REL = 1e-4
# fp16 graph errors are reported, not gated: a drift that matters shows in the task metrics. This bound only
# catches a broken conversion (overflow to inf, a sign flip, garbage).
FP16_MAX_REL = 0.1


@dataclass
class OutputParity:
    max_abs: float
    max_rel: float
    dtype: str
    shape: list[int]
    finite: bool


def compare(ort_out: np.ndarray, ref: np.ndarray) -> OutputParity:
    ref = np.asarray(ref)
    finite = bool(np.isfinite(ort_out).all()) if ort_out.dtype.kind == "f" else True
    if ort_out.shape != ref.shape or ort_out.size == 0:
        err = 0.0 if ort_out.shape == ref.shape else float("inf")
        return OutputParity(err, err, str(ort_out.dtype), list(ort_out.shape), finite)
    diff = np.abs(ort_out.astype(np.float64) - ref.astype(np.float64))
    scale = max(float(np.abs(ref).max()), 1e-6)
    return OutputParity(float(diff.max()), float(diff.max()) / scale, str(ort_out.dtype), list(ort_out.shape), finite)


@torch.no_grad()
def graph_parity(defn: GraphDef, path: Path, samples: list[dict[str, torch.Tensor]], precision: Precision) -> dict:
    """Run `path` in ONNX Runtime (CPU) and `defn.module` on each sample; the worst error per output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst: dict[str, OutputParity] = {}
    for sample in samples:
        stop_point()
        args = [sample[t.name] for t in defn.inputs]
        ref = defn.module(*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        feed = {t.name: sample[t.name].numpy() for t in defn.inputs}
        got = session.run([t.name for t in defn.outputs], feed)
        for t, g, r in zip(defn.outputs, got, ref, strict=True):
            p = compare(g, r.float().numpy())
            if t.dtype != str(g.dtype):
                p.dtype = f"{g.dtype} (declared {t.dtype})"
            prev = worst.get(t.name)
            if prev is None or p.max_rel > prev.max_rel or not p.finite:
                worst[t.name] = p
    budget = FP32_MAX_REL if precision == Precision.FP32 else FP16_MAX_REL
    failures = [f"{name}: max_rel {p.max_rel:.2e} > {budget:.0e}" for name, p in worst.items() if p.max_rel > budget]
    failures += [f"{name}: non-finite values" for name, p in worst.items() if not p.finite]
    failures += [f"{name}: dtype {p.dtype}" for name, p in worst.items() if "declared" in p.dtype]
    return {
        "samples": len(samples),
        "outputs": {name: asdict(p) for name, p in worst.items()},
        "max_rel": max((p.max_rel for p in worst.values()), default=0.0),
        "budget_max_rel": budget,
        "passed": not failures,
        "failures": failures,
    }
