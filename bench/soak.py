"""A day-long stream in minutes: many frames through the Python API, watching memory and the frame accounting.

    python -m tpo.bench.soak --artifacts DIR [--frames 100000] [--size 64x48] [--question "track the red circle"]
        [--threads 1]

Frames come from a Python iterator (a disc moving over a small frame, timestamps at 30 fps), through
`Session.stream`, every result consumed as a sink would. The resident set size (VmRSS) is sampled every
`--every` frames; the report gives it after warm-up (`--warmup` frames) and at the end, the growth between
them, the largest sample, frames per second, the summary's accounting (frames_in = processed + dropped) and
the sizes of the structures that could grow (timing histograms' buckets). Writes JSON to stdout (and
`--out FILE`). Goal (issue 17): RSS growth after warm-up <= 2 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tpo.errors import one_line_errors

from .report import emit_json


def rss_mb() -> float:
    """This process's resident set size in MiB (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def moving_disc(frames: int, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames of a red disc crossing a dark, lightly noisy background (the same few frames recycled, so
    the generator itself allocates nothing per frame)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
    r = max(3, min(width, height) // 6)
    ys, xs = np.mgrid[0:height, 0:width]
    positions = 64
    cache = []
    for k in range(positions):
        frame = background.copy()
        cx = r + (k * (width - 2 * r)) // positions
        frame[(xs - cx) ** 2 + (ys - height // 2) ** 2 <= r * r] = (230, 40, 40)
        cache.append(frame)
    for i in range(frames):
        yield cache[i % positions]


def soak(artifacts: Path, frames: int, width: int, height: int, question: str, warmup: int, every: int,
         threads: int = 1) -> dict:
    import tpo.runtime
    from tpo.runtime.sources import open_source

    session = tpo.runtime.open(artifacts, threads=threads)
    stream = session.stream(open_source(moving_disc(frames, width, height), fps=30.0), question, with_masks=True)
    samples: list[tuple[int, float]] = []
    start = time.perf_counter()
    warm_rss, warm_t, events = None, None, 0
    for result in stream:
        events += len(result.events)
        for event in result.events:            # consumed as a sink would: serialised
            json.dumps({k: v for k, v in event.items() if k != "mask_rle"})
        if result.frame is None:
            continue
        n = result.frame.index + 1
        if n == warmup:
            warm_rss, warm_t = rss_mb(), time.perf_counter()
        if n % every == 0:
            samples.append((n, round(rss_mb(), 2)))
    wall = time.perf_counter() - start
    end_rss = rss_mb()
    summary = stream.summary
    timings = stream.timings
    return {
        "artifacts": str(artifacts), "frames": frames, "size": f"{width}x{height}", "question": question,
        "task": summary["task"], "threads": threads, "wall_s": round(wall, 1), "fps": summary["fps"],
        "fps_after_warmup": round((frames - warmup) / (time.perf_counter() - warm_t), 1) if warm_t else None,
        "rss_mb": {"after_warmup": round(warm_rss, 1) if warm_rss else None, "end": round(end_rss, 1),
                   "max": max((s for _, s in samples), default=end_rss)},
        "rss_growth_after_warmup": round((end_rss - warm_rss) / warm_rss, 4) if warm_rss else None,
        "accounting": {k: summary[k] for k in ("frames_in", "processed", "dropped")},
        "identity_holds": summary["frames_in"] == summary["processed"] + summary["dropped"]
                          and "accounting_error" not in summary,
        "events": events,
        "timing_buckets": {k: len(v.buckets) for k, v in timings.stages.items()},
        "rss_samples": samples,
    }


@one_line_errors("tpo-soak")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="a tpo-export folder")
    p.add_argument("--frames", type=int, default=100_000, help="frames to stream")
    p.add_argument("--size", default="64x48", help="frame size WIDTHxHEIGHT")
    p.add_argument("--question", default="track the red circle")
    p.add_argument("--warmup", type=int, default=2000, help="frames before the reference RSS sample")
    p.add_argument("--every", type=int, default=1000, help="frames between RSS samples")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per graph (1: one core, no "
                   "spinning pool threads beside the other work of a box)")
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if not 0 < args.warmup < args.frames:
        print(f"tpo-soak: --warmup {args.warmup} must be between 0 and --frames {args.frames}", file=sys.stderr)
        return 2
    report = soak(args.artifacts, args.frames, width, height, args.question, args.warmup, args.every,
                  args.threads)
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
