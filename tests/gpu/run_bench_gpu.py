"""tpo-bench on a lent GPU, inside 10 minutes: ONNX Runtime (CUDA, and TensorRT's provider where the build has
it) and the TensorRT backend against PyTorch eager, tiny and small, then videochat-tpo's components if time is
left. Writes tests/gpu/_out/bench/{report.json,report.md,*.png} and prints the goal rows.

    python tests/gpu/run_bench_gpu.py                 # needs onnxruntime-gpu (the `gpu` extra) and a GPU
    python tests/gpu/run_bench_gpu.py --budget 300    # seconds for the whole script

PyTorch eager runs on CUDA when this torch build has it (the pinned CPU build does not: then it runs on the
CPU, and the report says so in its variants table). Exit status: 0 when the bench wrote its report, 1 when it
failed, 2 when there is no GPU or no CUDA-capable onnxruntime.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "_out" / "bench"


def gpu_present() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return None if r.returncode == 0 and "GPU" in r.stdout else f"nvidia-smi -L: {r.stdout.strip() or r.stderr.strip()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole script (default 540)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.monotonic()
    reason = gpu_present()
    if reason:
        print(f"run_bench_gpu: no GPU: {reason}", file=sys.stderr)
        return 2
    try:
        import onnxruntime as ort
    except ImportError:
        print("run_bench_gpu: onnxruntime is not installed (pip install 'tpo-edge[gpu]')", file=sys.stderr)
        return 2
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        print(f"run_bench_gpu: this onnxruntime has no CUDAExecutionProvider ({providers}); install the `gpu` "
              "extra instead of `cpu`", file=sys.stderr)
        return 2
    torch_device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            torch_device = "cuda"
    except ImportError:
        pass
    print(f"providers: {providers}; PyTorch eager on {torch_device}", flush=True)
    from tpo.bench.cli import main as bench

    left = args.budget - (time.monotonic() - start)
    # tiny + small first (the goal's sizes); the quick plan keeps it inside the budget with exports cached
    argv_bench = ["--out", str(args.out), "--providers", "CUDAExecutionProvider", "CPUExecutionProvider",
                  "--torch-device", torch_device, "--backends", "torch", "onnxruntime", "tensorrt",
                  "--sizes", "tiny", "small", "--no-progress"]
    if left < 420:
        argv_bench.append("--quick")
    rc = bench(argv_bench)
    if rc != 0:
        return 1
    left = args.budget - (time.monotonic() - start)
    if left > 240:
        rc = bench(["--out", str(args.out / "videochat-tpo"), "--providers", "CUDAExecutionProvider",
                    "CPUExecutionProvider", "--torch-device", torch_device, "--backends", "torch", "onnxruntime",
                    "--sizes", "videochat-tpo", "--quick", "--no-progress"])
    else:
        print(f"run_bench_gpu: {left:.0f} s left, videochat-tpo components skipped")
    print(f"run_bench_gpu: report in {args.out}/report.md ({time.monotonic() - start:.0f} s)")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
