"""`tpo-bench`: per-stage latency of the model, side by side across backends and precisions, with scaling.

    tpo-bench --quick --out /tmp/bench                  # tiny only, few rounds, < 2 min with cached exports
    tpo-bench --out bench-full                          # + small and videochat-tpo sizes, more rounds
    tpo-bench --artifacts exp-fp32 exp-fp16 --backends torch onnxruntime --out DIR
    tpo-bench --artifacts vctpo-fp16 --full-size --out DIR [--llm depth|full]   # a release-size export

Writes report.json, report.md and PNG plots into --out. Without --artifacts the embedded tiny model is
exported once per precision into the cache (`$TPO_BENCH_CACHE`, else ~/.cache/tpo-edge/bench); --quick
never waits for an fp16 export (only fp32, and says so). Argument errors: one line, exit 2; a failed run:
one line, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tpo.contract import Precision
from tpo.contract.manifest import EXPORTABLE
from tpo.errors import TPOError, one_line_errors

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = tuple(p.value for p in EXPORTABLE)
# made by tpo-calibrate from an fp32 export; measured when their folder is passed with --artifacts
CALIBRATED = (Precision.INT8.value, Precision.INT4.value, Precision.MIXED.value)
SIZES = ("tiny", "small", "videochat-tpo")


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):          # one line, exit 2 (argparse prints usage too)
        raise ArgumentError(message)


def _split(values: list[str]) -> list[str]:
    out = []
    for v in values:
        out += [x for x in v.split(",") if x]
    return out


def build_parser() -> Parser:
    p = Parser(prog="tpo-bench", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for report.json, report.md and the plots")
    p.add_argument("--artifacts", nargs="+", type=Path, default=[],
                   help="tpo-export folders (one per precision); default: the embedded tiny model, exported once "
                        "into the cache")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS),
                   help=f"any of {', '.join(BACKENDS)} (space or comma separated; default all, TensorRT skipped with "
                        "a note where absent)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), help="fp32 and/or fp16 (ONNX Runtime); int8, int4, "
                                                                             "mixed: tpo-calibrate's folders, given "
                                                                             "with --artifacts")
    p.add_argument("--quick", action="store_true", help="tiny only, few rounds (< 2 min with cached exports)")
    p.add_argument("--sizes", nargs="+", default=None,
                   help=f"model sizes for the size table: {', '.join(SIZES)} (default all; --quick: tiny)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads of every engine (default: all CPUs)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per stage")
    p.add_argument("--iters", type=int, default=None, help="calls per variant per round")
    p.add_argument("--source-fps", type=float, default=30.0, help="frame rate of the simulated live source")
    p.add_argument("--providers", nargs="+", default=None,
                   help="onnxruntime execution providers, e.g. CUDAExecutionProvider (default: CPU)")
    p.add_argument("--torch-device", default="cpu", help="device of the PyTorch eager baseline (cpu, cuda)")
    p.add_argument("--cache", type=Path, default=None, help="export cache folder")
    p.add_argument("--no-export", action="store_true", help="never export; use cached or --artifacts folders only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--full-size", action="store_true",
                   help="measure one release-size export (--artifacts DIR): stages, floors, device projection "
                        "(bench/full_size.py)")
    p.add_argument("--llm", default="depth", choices=("depth", "full"),
                   help="--full-size: time the LLM on full-width graphs of 1 and 2 layers and extrapolate (depth), "
                        "or run the whole graph (full: needs its weights in memory)")
    return p


def parse(argv: list[str] | None = None):
    """Parsed and checked arguments, or ArgumentError with one line."""
    from .plan import Plan

    args = build_parser().parse_args(argv)
    if args.full_size:
        if len(args.artifacts) != 1 or not args.artifacts[0].is_dir():
            raise ArgumentError("--full-size: give one export folder with --artifacts DIR")
        if args.out.exists() and not args.out.is_dir():
            raise ArgumentError(f"--out {args.out}: exists and is not a folder")
        if args.threads < 1 or (args.iters is not None and args.iters < 1):
            raise ArgumentError("--threads and --iters must be >= 1")
        return args
    backends = _split(args.backends)
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise ArgumentError(f"--backends {' '.join(bad) or '(none)'}: choose from {', '.join(BACKENDS)}")
    precisions = _split(args.precisions)
    quantised = [x for x in precisions if x in CALIBRATED]
    if quantised and not args.artifacts:
        raise ArgumentError(f"--precisions {','.join(quantised)}: tpo-calibrate makes those from an fp32 export; "
                            "pass its folder and the fp32 one with --artifacts (graph by graph at full size: "
                            "`python -m tpo.bench.precision`)")
    bad = [x for x in precisions if x not in PRECISIONS + CALIBRATED]
    if bad or not precisions:
        raise ArgumentError(f"--precisions {' '.join(bad) or '(none)'}: choose from "
                            f"{', '.join(PRECISIONS + CALIBRATED)}")
    if Precision.FP32.value not in precisions:
        raise ArgumentError("--precisions: fp32 is required (the reference every ratio and the inputs come from)")
    sizes = _split(args.sizes) if args.sizes is not None else (["tiny"] if args.quick else list(SIZES))
    bad = [x for x in sizes if x not in SIZES]
    if bad:
        raise ArgumentError(f"--sizes {' '.join(bad)}: choose from {', '.join(SIZES)}")
    for name in ("threads", "rounds", "iters"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ArgumentError(f"--{name} {value}: must be >= 1")
    if not args.source_fps > 0:
        raise ArgumentError(f"--source-fps {args.source_fps}: must be > 0")
    if args.torch_device not in ("cpu", "cuda") and not args.torch_device.startswith("cuda:"):
        raise ArgumentError(f"--torch-device {args.torch_device}: cpu, cuda or cuda:N")
    for a in args.artifacts:
        if not a.is_dir():
            raise ArgumentError(f"--artifacts {a}: no such folder")
    if args.out.exists() and not args.out.is_dir():
        raise ArgumentError(f"--out {args.out}: exists and is not a folder")
    kw = dict(backends=tuple(backends), precisions=tuple(Precision(x) for x in precisions), artifacts=tuple(args.artifacts),
              providers=tuple(args.providers) if args.providers else None, threads=args.threads,
              torch_device=args.torch_device,
              source_fps=args.source_fps, sizes=tuple(sizes), cache=args.cache, export_missing=not args.no_export,
              progress=not args.no_progress)
    if args.rounds is not None:
        kw["rounds"] = args.rounds
    if args.iters is not None:
        kw["iters"] = args.iters
    return Plan.quick_plan(args.out, **kw) if args.quick else Plan(out=args.out, **kw)


@one_line_errors("tpo-bench")
def main(argv: list[str] | None = None) -> int:
    try:
        plan = parse(argv)
    except ArgumentError as e:
        print(f"tpo-bench: error: {e}", file=sys.stderr)
        return 2
    from .report import write_report
    from .suite import Suite

    def log(msg: str) -> None:
        print(f"tpo-bench: {msg}", file=sys.stderr, flush=True)

    if isinstance(plan, argparse.Namespace):          # --full-size
        return full_size(plan, log)

    try:
        result = Suite(plan, log=log).run()
    except TPOError as e:
        print(f"tpo-bench: error: {e}", file=sys.stderr)
        return 1
    written = write_report(result, plan.out)
    if written["plot_note"]:
        log(written["plot_note"])
    print(f"wrote {written['json']}, {written['md']}" +
          (f", {len(written['plots'])} plots" if written["plots"] else ""))
    for row in result.get("goal", {}).get("rows", []):
        r = row["ratio"]
        print(f"  {row['size']:>14} {row['stage']:<16} threads={row['threads']} onnxruntime-fp32 vs torch eager: "
              f"{r['median']:.2f}x "
              f"[{r['min']:.2f}-{r['max']:.2f}] {'(2x goal met)' if row['met'] else '(2x goal NOT met)'}")
    return 0


def full_size(args: argparse.Namespace, log) -> int:
    from .full_size import run_full_size

    try:
        report = run_full_size(args.artifacts[0], args.out, threads=args.threads, iters=args.iters or 3,
                               llm=args.llm, log=log)
    except TPOError as e:
        print(f"tpo-bench: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out / 'report.json'}, {args.out / 'report.md'}")
    for name, s in report["stages"].items():
        per = f" ({s['per_token_s'] * 1e3:.0f} ms/token)" if "per_token_s" in s else ""
        print(f"  {name:<32} {s['median_s'] * 1e3:10.0f} ms{per:<20} floor {s['floor']['floor_s'] * 1e3:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
