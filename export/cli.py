"""`tpo-export`: a checkpoint -> ONNX graphs (+ TensorRT engines), a manifest and a parity report.

    tpo-export --precision fp16 --out artifacts/tiny-fp16            # the embedded tiny checkpoint
    tpo-export --checkpoint DIR --config NAME --precision fp32 --out DIR --targets onnx,tensorrt
    tpo-export --check-tensorrt --out artifacts/tiny-fp16 [--engine-keys 10.3.0:sm_87]   # lint (+ cache keys)

Errors a user can cause (unknown precision, targets or config, bad opset, missing checkpoint, existing
--out or one under a file, --parity-clips < 1) are one line on stderr and exit 2, within about a second:
every argument is checked (export/options.py) before torch or the model is imported. A tensorrt target
that cannot run here (no GPU, no TensorRT, no polygraphy) is refused the same way, before anything is
exported, with one line and exit 4; a TensorRT build that fails after the onnx target completed also
exits 4 (the onnx artifacts stay). A failed parity gate exits 3 and leaves no artifacts folder. Ctrl-C or
SIGTERM stops at the next step (tpo/signals.py): one line, nothing at --out, exit 130 / 143.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tpo.contract import Precision
from tpo.errors import TPOError, one_line_errors
from tpo.model.presets import preset_names
from tpo.signals import StopOnSignal, StopRequested

from .options import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, TARGETS, ExportOptions, check_options

EXIT_USAGE, EXIT_PARITY, EXIT_TENSORRT, EXIT_INTERRUPTED = 2, 3, 4, 130
# made by tpo-calibrate from an fp32 export (fp16 too when --calibration-data is given: islands measured)
QUANTISED = (Precision.INT8.value, Precision.INT4.value, "auto")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tpo-export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="release-layout checkpoint folder (default: the embedded tiny one)")
    p.add_argument("--config", help=f"config preset ({', '.join(preset_names())}) or JSON file "
                                    "(default: the checkpoint's own)")
    p.add_argument("--precision", default="fp16", help="fp32 | fp16 | int8 | int4 | auto (int8/int4/auto, and fp16 "
                                                       "with --calibration-data: an fp32 export made smaller and "
                                                       "gated by tpo-calibrate)")
    p.add_argument("--budget", type=float, default=None, help="--precision auto: the largest drop of any task "
                                                               "agreement mean against fp32 (see tpo-calibrate)")
    p.add_argument("--out", type=Path, required=True, help="artifacts folder to write (refused if it exists)")
    p.add_argument("--targets", default="onnx", help=f"comma list of {', '.join(TARGETS)} (tensorrt: needs a GPU "
                                                     "and TensorRT, checked first)")
    p.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--check-tensorrt", action="store_true",
                   help="lint the graphs in --out for what TensorRT's ONNX parser rejects, then exit")
    p.add_argument("--engine-keys", action="append", default=[], metavar="TRT:sm_XY",
                   help="with --check-tensorrt: also print each graph's engine-cache key for TensorRT version TRT "
                        "on compute capability XY (e.g. 10.3.0:sm_87 for JetPack 6 Orin); repeatable")
    p.add_argument("--parity-clips", type=int, default=2, help="synthetic clips for the parity gate (>= 1)")
    p.add_argument("--stream", default="auto", help="auto | on | off: write graphs from the checkpoint tensor by "
                                                   "tensor (auto: when the fp32 model would not fit, e.g. "
                                                   "videochat-tpo; see docs/export.md)")
    p.add_argument("--calibration-data", help="int8/int4/auto (fp16: measured islands): clips to calibrate on (a "
                                              "video, a folder of videos or image folders, synthetic:N), see "
                                              "tpo-calibrate")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    """The export's options, checked (one-line TPOError); imports nothing heavy."""
    opts = ExportOptions(
        out=args.out, precision=args.precision, checkpoint=args.checkpoint, config=args.config,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        opset=DEFAULT_OPSET if args.opset is None else args.opset, force=args.force,
        parity_clips=args.parity_clips, progress=not args.no_progress, stream=args.stream)
    check_options(opts)
    return opts


def print_summary(manifest) -> None:
    """The precision map and the gate's numbers (manifest: a tpo.contract.Manifest)."""
    parity = manifest.parity
    used = (parity.get("export") or {}).get("graphs", {})
    print(f"\n{'graph':24s} {'size':>10s} {'precision':>9s} {'max_rel':>9s} {'seconds':>8s} {'peak RSS':>9s}  "
          "fp32 islands")
    for name, g in manifest.graphs.items():
        r = parity["graphs"][name]
        islands = ",".join(g.fp32_islands) or "-"
        u = used.get(name, {})
        print(f"{name:24s} {g.bytes / 1e6:8.2f}MB {g.precision.value:>9s} {r['max_rel']:9.2e} "
              f"{u.get('seconds', float('nan')):8.1f} {u.get('peak_rss_mb', float('nan')):7.0f}MB  {islands}")
    weights = parity.get("weights")
    if weights:
        n = sum(w.get("initializers", w.get("tensors", 0)) for w in weights.values())
        print(f"weights: {n} tensors in {len(weights)} files equal to the checkpoint's, byte for byte "
              "(LoRA merge and cast recomputed independently)")
    if parity.get("numerics"):
        print(f"numerics gated on {parity['numerics']}")
    if parity.get("export", {}).get("process_peak_rss_mb"):
        e = parity["export"]
        print(f"export: {e.get('wall_s', sum(u.get('seconds', 0) for u in used.values())):.0f} s, peak resident "
              f"{e['process_peak_rss_mb']:.0f} MB ({e.get('mode', 'classic')})")
    tasks = parity.get("tasks")
    if tasks:
        w = tasks["worst"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"   # noqa: E731
        print(f"task parity vs PyTorch ({len(tasks['rows'])} questions): triggers same={w['same_triggers']}, "
              f"tokens same={w['same_tokens']}, worst box IoU {fmt(w['box_iou'])}, worst mask IoU "
              f"{fmt(w['mask_iou'])}, worst track box IoU {fmt(w['track_box_iou'])}, windows off by "
              f"{fmt(w['window_err_s'])} s, top-1 window off by {fmt(w.get('top1_err_s'))} s "
              f"({tasks.get('near_ties', 0)} near-tied), ranking swaps {w.get('rank_swaps') or 0}, window scores off "
              f"by {fmt(w.get('score_err'))}")


def parse_engine_target(text: str) -> tuple[str, int, int]:
    """"10.3.0:sm_87" -> ("10.3.0", 8, 7); one-line InputError otherwise."""
    import re

    from tpo.errors import InputError

    m = re.fullmatch(r"(\d+(?:\.\d+){1,3}):sm_(\d)(\d+)", text.strip())
    if m is None:
        raise InputError(f"--engine-keys {text!r}: write TRT_VERSION:sm_XY, e.g. 10.3.0:sm_87")
    return m.group(1), int(m.group(2)), int(m.group(3))


def check_tensorrt(out: Path, engine_targets: list[str] = ()) -> int:
    """Lint every graph for TensorRT's ONNX parser; with targets, each graph's engine-cache key there (computed
    from the graph's sha256 and the manifest's profile: no TensorRT, no GPU)."""
    from tpo.contract import Manifest
    from tpo.engine_cache import GpuInfo

    from .tensorrt_lint import lint_manifest

    targets = [parse_engine_target(t) for t in engine_targets]
    manifest = Manifest.load(out)
    problems = lint_manifest(manifest)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {len(manifest.graphs)} graphs")
    if targets:
        from .tensorrt_build import _plan

        for trt, major, minor in targets:
            print(f"engine-cache keys, TensorRT {trt} on sm_{major}{minor}:")
            for plan in _plan(manifest, GpuInfo(0, "(planned)", major, minor, 0), trt, None):
                print(f"  {plan.graph:24s} {plan.key}")
    return 1 if problems else 0


@one_line_errors("tpo-export")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.check_tensorrt:
            return check_tensorrt(args.out, args.engine_keys)
        if args.precision in QUANTISED or (args.precision == Precision.FP16.value and args.calibration_data):
            return export_quantised(args)
        if args.budget is not None:
            print("tpo-export: --budget goes with --precision auto", file=sys.stderr)
            return EXIT_USAGE
        opts = options_from_args(args)
        if "tensorrt" in opts.targets:
            from .tensorrt_probe import TensorRTUnavailable, probe_tensorrt

            try:
                probe_tensorrt()
            except TensorRTUnavailable as e:
                print(f"tpo-export: {e}; nothing exported (leave tensorrt out of --targets here, or export on "
                      "a machine with a GPU and TensorRT)", file=sys.stderr)
                return EXIT_TENSORRT
        # only now the heavy part: torch, the model, the exporter
        from .exporter import ParityFailed, export_artifacts

        try:
            with StopOnSignal():
                manifest = export_artifacts(opts)
        except ParityFailed as e:
            print(f"tpo-export: {e}", file=sys.stderr)
            return EXIT_PARITY
        except StopRequested as e:
            print(f"tpo-export: {e.reason}; nothing written to {opts.out}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print(f"tpo-export: interrupted; nothing written to {opts.out}", file=sys.stderr)
            return EXIT_INTERRUPTED
    except TPOError as e:
        print(f"tpo-export: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(manifest.parity, indent=2))
    else:
        print_summary(manifest)
    print(f"wrote {args.out} ({len(manifest.graphs)} graphs, {manifest.precision.value})")
    if "tensorrt" in opts.targets:
        return tensorrt_target(manifest, args.out)
    return 0


def export_quantised(args: argparse.Namespace) -> int:
    """--precision int8 / int4 / auto (fp16 with --calibration-data): the fp32 export into a hidden folder beside --out, then tpo-calibrate's
    quantisation and gate from it into --out (calibration/calibrate.py); the fp32 folder is removed either way."""
    import shutil

    if not args.calibration_data:
        print(f"tpo-export: --precision {args.precision} quantises from real activations: pass --calibration-data "
              "SRC (a video, a folder of videos or image folders, or synthetic:N)", file=sys.stderr)
        return EXIT_USAGE
    if args.targets.strip() != "onnx":
        print(f"tpo-export: --precision {args.precision}: --targets onnx only for now (TensorRT engines from "
              "QDQ graphs: see docs/export.md)", file=sys.stderr)
        return EXIT_USAGE
    from tpo.calibration.sources import check_source

    check_source(args.calibration_data)          # before a long export, not after it
    out = Path(args.out)
    fp32 = out.absolute().parent / f".{out.name}.fp32-{os.getpid()}"
    base = argparse.Namespace(**{**vars(args), "precision": "fp32", "out": fp32, "force": False})
    opts = options_from_args(base)
    if (out.exists() or out.is_symlink()) and not args.force:
        print(f"tpo-export: {out}: already exists; pass --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    from tpo.calibration.calibrate import DEFAULT_BUDGET, CalibrateOptions, CalibrationFailed, calibrate
    from tpo.calibration.cli import parse_precision

    from .exporter import ParityFailed, export_artifacts

    try:
        with StopOnSignal():
            export_artifacts(opts)
            manifest = calibrate(CalibrateOptions(artifacts=fp32, out=out, precision=parse_precision(args.precision),
                                                  data=args.calibration_data, force=args.force,
                                                  budget=DEFAULT_BUDGET if args.budget is None else args.budget),
                                 say=lambda text: print(text, file=sys.stderr))
    except (ParityFailed, CalibrationFailed) as e:
        print(f"tpo-export: {e}", file=sys.stderr)
        return EXIT_PARITY
    except StopRequested as e:
        print(f"tpo-export: {e.reason}; nothing written to {out}", file=sys.stderr)
        return e.exit_code
    finally:
        shutil.rmtree(fp32, ignore_errors=True)
    from tpo.calibration.cli import print_table

    print_table(manifest.parity["calibration"])
    print(f"wrote {out} ({len(manifest.graphs)} graphs, {manifest.precision.value})")
    return 0


def tensorrt_target(manifest, out: Path) -> int:
    """Build engines for a finished ONNX export; without a GPU or TensorRT: one line, exit 4."""
    from .tensorrt_build import build_engines

    try:
        built = build_engines(manifest, out, progress=print)
    except TPOError as e:
        print(f"tpo-export: {e} (the onnx target in {out} is complete)", file=sys.stderr)
        return EXIT_TENSORRT
    print(f"tensorrt: {len(built)} engines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
