"""TensorRT check, for a machine with a GPU and TensorRT: build (or reuse) the engines of an export, run
each graph in TensorRT and in ONNX Runtime on the same random inputs, and print one table.

    python tests/gpu/check_tensorrt.py ARTIFACTS                       # every graph of ARTIFACTS/manifest.json
    python tests/gpu/check_tensorrt.py ARTIFACTS --graphs llm,connector --runs 50
    python tests/gpu/check_tensorrt.py ARTIFACTS --dim seq=32          # override a named dimension's value

Inputs take each named dimension's `opt` value (override with --dim when graphs tie dimensions together,
e.g. an attention mask as long as past + new tokens). Float inputs are N(0, 0.5); int64 inputs named
*mask* are ones, *position* an arange over the last axis, others small integers; bool inputs are True.
ONNX Runtime runs on the CPU by default (the reference the parity gate used); pass
--ort-providers CUDAExecutionProvider to time it on the GPU.

Columns: max_abs = max |trt - ort|; max_rel = max_abs / max |ort| (relative to the output's range, so
zeros in the reference do not blow it up); ms per run (median of --runs after --warmup) for each engine.
A row passes when max_rel <= the tolerance of the graph's precision (fp32 1e-3, fp16 2e-2, adjustable).
Exit status: 0 when every row passed, 1 when one failed, 2 when there is no GPU or no TensorRT.
Engine builds of large graphs take minutes the first time; the engine and timing caches make reruns fast.
Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tpo.contract import Dim, GraphEntry, Manifest
from tpo.engine_cache import EngineCache, GpuInfo, gpu_probe, module_available
from tpo.errors import TPOError
from tpo.runtime.engine import NP_DTYPES

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


def random_inputs(graph: GraphEntry, dims: Mapping[str, Dim], values: dict[str, int], rng) -> dict[str, np.ndarray]:
    feed = {}
    for spec in graph.inputs:
        shape = tuple(d if isinstance(d, int) else values.get(d, dims[d].opt) for d in spec.shape)
        dtype = NP_DTYPES[spec.dtype]
        lname = spec.name.lower()
        if spec.dtype == "bool":
            arr = np.ones(shape, dtype)
        elif spec.dtype.startswith("int"):
            if "mask" in lname:
                arr = np.ones(shape, dtype)
            elif "position" in lname and shape:
                arr = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
            else:
                arr = rng.integers(0, 16, size=shape).astype(dtype)
        else:
            arr = (rng.standard_normal(shape) * 0.5).astype(dtype)
        feed[spec.name] = arr
    return feed


def timed(runner, feed, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        runner.run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def compare(trt_out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    a, b = np.asarray(trt_out, np.float64), np.asarray(ref, np.float64)
    if a.shape != b.shape:
        return float("inf"), float("inf")
    if a.size == 0:
        return 0.0, 0.0
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf"), float("inf")
    diff = np.abs(a - b)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b[finite]).max()) if diff.size else 0.0
    return max_abs, max_abs / max(scale, 1e-12)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--graphs", default="", help="comma-separated graph names (default: all)")
    ap.add_argument("--cache", type=Path, default=None, help="engine cache folder (default: $TPO_ENGINE_CACHE)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--ort-providers", default="CPUExecutionProvider")
    ap.add_argument("--tol-fp32", type=float, default=TOLERANCE["fp32"])
    ap.add_argument("--tol-fp16", type=float, default=TOLERANCE["fp16"])
    ap.add_argument("--rebuild", action="store_true", help="build engines even when the cache has them")
    return ap.parse_args(argv)


def machine() -> GpuInfo | str:
    """This machine's GPU, or why the check cannot run here (no GPU, no TensorRT)."""
    gpu = gpu_probe()
    if isinstance(gpu, str):
        return f"no GPU: {gpu}"
    if not module_available("tensorrt"):
        return "TensorRT is not installed"
    return gpu


class Checker:
    """Each graph in TensorRT and in ONNX Runtime on the same inputs, one printed row per output."""

    HEADER = (f"{'graph':<24}{'output':<28}{'prec':<6}{'max_abs':>11}{'max_rel':>11}{'trt ms':>9}"
              f"{'ort ms':>9}{'speedup':>9}  {'engine':<14}result")

    def __init__(self, args: argparse.Namespace, manifest: Manifest, built: dict, trt_backend, ort_backend):
        self.args, self.manifest, self.built = args, manifest, built
        self.trt_backend, self.ort_backend = trt_backend, ort_backend
        self.values = {name: int(value) for name, _, value in (item.partition("=") for item in args.dim)}
        self.tolerance = {"fp32": args.tol_fp32, "fp16": args.tol_fp16}
        self.rng = np.random.default_rng(args.seed)

    def graph(self, name: str) -> int:
        """Print the rows of one graph; the number that failed."""
        graph = self.manifest.graph(name)
        entry = self.built[name]
        precision = graph.precision.value
        how = "cached" if entry.reused else f"built {entry.metadata.get('build_seconds', 0):.0f}s"
        try:
            feed = random_inputs(graph, self.manifest.dims, self.values, self.rng)
            trt_runner, ort_runner = self.trt_backend.load(graph), self.ort_backend.load(graph)
            ref, got = ort_runner.run(feed), trt_runner.run(feed)
            trt_ms = timed(trt_runner, feed, self.args.warmup, self.args.runs)
            ort_ms = timed(ort_runner, feed, self.args.warmup, self.args.runs)
        except Exception as e:   # one graph failing must not hide the others
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"{name:<24}{'-':<28}{precision:<6}{'':>11}{'':>11}{'':>9}{'':>9}{'':>9}  {how:<14}"
                  f"FAIL ({type(e).__name__}: {first})")
            return 1
        tol = self.tolerance.get(precision, self.tolerance["fp16"])
        failed = 0
        for out_name, ref_arr in ref.items():
            max_abs, max_rel = compare(got[out_name], ref_arr)
            ok = max_rel <= tol
            failed += not ok
            print(f"{name:<24}{out_name:<28}{precision:<6}{max_abs:>11.3e}{max_rel:>11.3e}{trt_ms:>9.2f}"
                  f"{ort_ms:>9.2f}{ort_ms / max(trt_ms, 1e-9):>8.1f}x  {how:<14}"
                  f"{'ok' if ok else f'FAIL (tol {tol:g})'}")
        return failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = machine()
    if isinstance(gpu, str):
        print(f"check_tensorrt: {gpu}", file=sys.stderr)
        return 2

    from tpo.export.tensorrt_build import build_engines
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.tensorrt_backend import TensorRTBackend

    cache = EngineCache(args.cache)
    print(f"GPU: {gpu}; engine cache: {cache.root}")
    try:
        manifest = Manifest.load(args.artifacts, require_parity=False)
        names = [g for g in args.graphs.split(",") if g] or list(manifest.graphs)
        built = build_engines(manifest, cache=cache, progress=print, graphs=names, rebuild=args.rebuild)
        trt_backend = TensorRTBackend(cache_dir=cache.root, dims=manifest.dims)
        ort_backend = OnnxRuntimeBackend(providers=args.ort_providers.split(","))
    except TPOError as e:
        print(f"check_tensorrt: {e}", file=sys.stderr)
        return 2
    print(f"TensorRT: {trt_backend.description}; reference: {ort_backend.description}\n")
    checker = Checker(args, manifest, built, trt_backend, ort_backend)
    print(Checker.HEADER)
    print("-" * len(Checker.HEADER))
    failed = sum(checker.graph(name) for name in names)
    print(f"\n{len(names)} graph(s), {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
