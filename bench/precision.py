"""Lower precisions where the matmuls are wide: fp32 against int8 (QDQ) and weight-only int4 / int8, graph by
graph, on ONNX Runtime's CPU provider, alternating rounds in one process.

    python -m tpo.bench.precision --artifacts vctpo-fp32 --out DIR [--graphs vision_encoder_image,mask_image_encoder]
                                   [--llm-layers 2] [--prompt 128] [--iters 3] [--threads 1]

Inputs come from the contract's value domains at the runtime's sizes (`full_size.feed_for`), not from clips:
a full-size export's LLM does not fit this machine in fp32, so its chain cannot run to capture real inputs.
The numbers are speed, size and numeric error; task agreement is tpo-calibrate's gate on a runnable model.
The LLM is measured on a full-width graph cut to `--llm-layers` layers (written from the export's checkpoint,
as `tpo-bench --full-size` does) at the export's precision: prefill of `--prompt` tokens and one decode step.
Writes report.json and report.md to --out (quantised graphs are written there and removed at the end).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from tpo.contract import Manifest, Precision
from tpo.contract import graphs as G
from tpo.errors import InputError, one_line_errors

DEFAULT_GRAPHS = (G.VISION_ENCODER_IMAGE.name, G.CONNECTOR.name, G.MASK_IMAGE_ENCODER.name)


def run(artifacts: Path, out: Path, graphs: tuple[str, ...], llm_layers: int, prompt: int, iters: int,
        threads: int, log=print) -> dict:
    from tpo.calibration.measure import compare
    from tpo.calibration.quantize import quantize_dynamic_int8, quantize_int8, quantize_weight_only

    from .full_size import SIZES, depth_llm_entries, feed_for, llm_sizes

    manifest = Manifest.load(artifacts)
    if manifest.precision != Precision.FP32:
        raise InputError(f"{artifacts}: an fp32 export is the reference here (got {manifest.precision.value})")
    unknown = [g for g in graphs if g not in manifest.graphs]
    if unknown:
        raise InputError(f"--graphs {','.join(unknown)}: not in {artifacts} (has {', '.join(manifest.graphs)})")
    work = out / "graphs"
    work.mkdir(parents=True, exist_ok=True)
    report = {"artifacts": str(artifacts), "threads": threads, "iters": iters, "inputs": "contract value domains",
              "graphs": {}}
    try:
        for name in graphs:
            entry = manifest.graphs[name]
            sizes = dict(SIZES, num_vision_tokens=manifest.dims["num_vision_tokens"].max)   # 16 frames' tokens
            feeds = [feed_for(entry, sizes, seed=i) for i in range(2)]
            t = time.perf_counter()
            q = work / f"{name}.int8.onnx"
            quantize_int8(entry.path, q, feeds, "minmax")
            log(f"{name}: int8 in {time.perf_counter() - t:.0f} s")
            report["graphs"][name] = compare(entry.path, {"int8 qdq": q}, feeds[:1], threads, iters)
            log(f"{name}: {json.dumps(report['graphs'][name])}")
        if llm_layers:
            llm = depth_llm_entries(manifest, out, (llm_layers,), log)[llm_layers]
            q = work / f"llm-{llm_layers}.dyn8.onnx"
            quantize_dynamic_int8(llm.path, q, keep_fp32_output=G.LLM.output_names[0])
            variants = {"int8 dynamic": q}
            for bits in (8, 4):
                q = work / f"llm-{llm_layers}.w{bits}.onnx"
                quantize_weight_only(llm.path, q, bits, 32, keep_fp32_output=G.LLM.output_names[0])
                variants[f"int{bits} weight-only"] = q
            for phase, decode in (("prefill", False), ("decode", True)):
                feed = feed_for(llm, llm_sizes(prompt, decode))
                key = f"llm ({llm_layers} layers, full width) {phase}"
                report["graphs"][key] = compare(llm.path, variants, [feed], threads, iters)
                log(f"{key}: {json.dumps(report['graphs'][key])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"Precision on ONNX Runtime CPU ({report['threads']} thread(s), {report['iters']} alternating rounds, "
             f"inputs from {report['inputs']}); speedup and size are against fp32.", "",
             "| graph | precision | MB | x smaller | ms | speedup | max rel err |", "|---|---|---|---|---|---|---|"]
    for name, rows in report["graphs"].items():
        for k, r in rows.items():
            lines.append(f"| {name} | {k} | {r['bytes'] / 1e6:.1f} | {r['size_ratio']} | {r['ms']:.1f} | "
                         f"{r['speedup']} | {r['max_rel_err']:.3g} |")
    return "\n".join(lines) + "\n"


@one_line_errors("tpo-bench-precision")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.bench.precision", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="an fp32 tpo-export folder")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--graphs", default=",".join(DEFAULT_GRAPHS), help="graphs to quantise to int8 (comma list)")
    p.add_argument("--llm-layers", type=int, default=2, help="layers of the cut LLM (0: skip the LLM)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens (prefill; the decode step's past)")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        report = run(args.artifacts, args.out, tuple(g for g in args.graphs.split(",") if g), args.llm_layers,
                     args.prompt, args.iters, args.threads, log=lambda s: print(s, file=sys.stderr))
    except InputError as e:
        print(f"tpo-bench-precision: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
