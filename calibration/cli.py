"""`tpo-calibrate`: an fp32 export -> an int8 / int4 / fp16 / per-graph (auto) export, calibrated on real clips
and gated in task terms.

    tpo-calibrate --artifacts tiny-fp32 --calibration-data synthetic:8 --precision int8 --out tiny-int8
    tpo-calibrate --artifacts tiny-fp32 --calibration-data clips/ --record captures/ --out tiny-int8
    tpo-calibrate --artifacts tiny-fp32 --captures captures/ --precision int4 --out tiny-int4   # replay
    tpo-calibrate --artifacts tiny-fp32 --captures captures/ --precision auto --budget 0.05 --out tiny-auto

What each graph gets, the cache and the gate: calibration/calibrate.py. Exit 0 written; 2 bad input (one line);
3 the gate refused the result (report beside --out, nothing at --out); 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpo.contract import Precision
from tpo.errors import InputError, TPOError, one_line_errors

from .calibrate import AUTO, DEFAULT_BUDGET

EXIT_USAGE, EXIT_GATE = 2, 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tpo-calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="an fp32 tpo-export folder")
    p.add_argument("--out", type=Path, required=True, help="the quantised artifacts folder to write")
    p.add_argument("--precision", default="int8", help="int8 (QDQ vision/mask graphs, dynamic int8 LLM) | int4 "
                                                       "(the same with an int4 weight-only LLM) | fp16 (fp32 islands "
                                                       "measured per graph) | auto (per graph the smallest that "
                                                       "passes --budget)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="--precision auto: the largest drop of any agreement mean against fp32 (default "
                        f"{DEFAULT_BUDGET}: routing, tokens, box/window IoU and mask J each >= {1 - DEFAULT_BUDGET})")
    p.add_argument("--calibration-data", dest="data",
                   help="clips: a video, a folder of videos or image folders, or synthetic:N[@SEED]")
    p.add_argument("--captures", type=Path, help="replay a capture recorded with --record (instead of clips)")
    p.add_argument("--record", type=Path, help="save the capture of the clips here for later runs")
    p.add_argument("--method", default="minmax", help="activation ranges: minmax | entropy | percentile")
    p.add_argument("--block", type=int, default=32, help="weight-only block size (32 or 128 ...)")
    p.add_argument("--lm-head", default="fp32", help="the int4 LLM's lm_head: fp32 (default: it picks every "
                                                     "token) | int4 (smaller still; the gate judges the tokens)")
    p.add_argument("--samples", type=int, default=16, help="captured inputs per graph")
    p.add_argument("--held-out", type=int, default=4, help="held-out clips for the gate (the generator's seed 1000)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print the calibration report as JSON")
    return p


def parse_precision(value: str) -> Precision:
    """--precision: a precision, or `auto` (a MIXED artifact searched within --budget)."""
    if value == AUTO:
        return Precision.MIXED
    if value == Precision.MIXED.value:
        raise InputError(f"--precision {value}: ask for {AUTO} (a per-graph choice within --budget)")
    return Precision.parse(value, "--precision")


def print_table(report: dict) -> None:
    print(f"{'graph':24} {'precision':>18} {'MB fp32':>8} {'MB':>8} {'ms fp32':>8} {'ms':>8} {'speedup':>7} "
          f"{'max_rel':>8}")
    for name, r in report["graphs"].items():
        cells = [format(r[key], fmt) if key in r else "-" for key, fmt in
                 (("ms_fp32", "8.2f"), ("ms", "8.2f"), ("speedup", "7.2f"), ("max_rel_err", "8.3g"))]
        print(f"{name:24} {r['precision']:>18} {r['bytes_fp32'] / 1e6:8.2f} "
              f"{r.get('bytes', r['bytes_fp32']) / 1e6:8.2f} " + " ".join(f"{c:>8}" for c in cells))


def print_truth(rows: dict, precision: str) -> None:
    """The held-out clips' ground-truth numbers, fp32 beside the quantised artifact."""
    if not rows:
        return
    print(f"{'ground truth':26} {'questions':>9} {'fp32':>7} {precision:>7} {'delta':>7} {'allowed':>7}")
    for key, r in rows.items():
        print(f"{key:26} {r['questions']:9d} {r['fp32']:7.3f} {r['quantized']:7.3f} {r['delta']:+7.3f} "
              f"{-r['allowed_drop']:7.3f}")


@one_line_errors("tpo-calibrate")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tpo.signals import StopOnSignal, StopRequested

    from .calibrate import CalibrateOptions, CalibrationFailed, calibrate

    try:
        opts = CalibrateOptions(artifacts=args.artifacts, out=args.out,
                                precision=parse_precision(args.precision), data=args.data, budget=args.budget,
                                lm_head=args.lm_head,
                                captures=args.captures, record_to=args.record, method=args.method,
                                block=args.block, samples=args.samples, held_out=args.held_out,
                                threads=args.threads, force=args.force)
        with StopOnSignal():
            manifest = calibrate(opts, say=lambda text: print(text, file=sys.stderr))
    except CalibrationFailed as e:
        print(f"tpo-calibrate: {e}", file=sys.stderr)
        return EXIT_GATE
    except StopRequested as e:
        print(f"tpo-calibrate: {e.reason}; nothing written to {args.out}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:                 # the second Ctrl-C
        print(f"tpo-calibrate: interrupted; nothing written to {args.out}", file=sys.stderr)
        return 130
    except TPOError as e:             # bad input, a changed or foreign artifact or capture: one line
        print(f"tpo-calibrate: {e}", file=sys.stderr)
        return EXIT_USAGE
    report = manifest.parity["calibration"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        gate = manifest.parity["task_agreement"]
        print("gate: " + ", ".join(f"{k} {v:.3f}" for k, v in gate["means"].items())
              + f" over {gate['questions']} questions of {gate['clips']} held-out clips: passed")
        print_truth(gate.get("ground_truth", {}), manifest.precision.value)
    print(f"wrote {args.out} ({manifest.precision.value})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
