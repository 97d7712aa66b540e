"""The per-frame fast path on a file, the way `tpo-run` streams it: frames per second, and the share of frame
time spent outside graph execution (capture, preprocessing, host memory-bank logic, postprocessing, RLE).

    python -m tpo.bench.fast_path --artifacts DIR [--threads 2] [--frames 300] [--size 320x240] [--fps 30]

Issue 5's goal on tiny at 320x240 / 30 fps, 2 cores: >= 30 fps, and everything but graph execution <= 15%.
Writes a generated clip (a disc moving over a noisy background; MJPG) so the run needs no files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from tpo.contract import graphs as G
from tpo.contract.tasks import TRACK


def make_clip(path: Path, frames: int, width: int, height: int, fps: float) -> Path:
    rng = np.random.default_rng(0)
    background = rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    r = max(4, min(width, height) // 12)
    for i in range(frames):
        frame = background.copy()
        cv2.circle(frame, (r + (i * 2) % max(1, width - 2 * r), height // 2), r, (40, 40, 230), -1)
        writer.write(frame)
    writer.release()
    return path


def measure(artifacts: Path, threads: int, frames: int, width: int, height: int, fps: float,
            question: str = "track the red circle") -> dict:
    from tpo.runtime.backend import OnnxRuntimeBackend
    from tpo.runtime.session import open as open_session
    from tpo.runtime.sources import open_source
    from tpo.runtime.stream import Stream
    from tpo.runtime.tasks import StreamOptions

    session = open_session(artifacts, backend=OnnxRuntimeBackend(threads=threads))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.avi", frames, width, height, fps)
        start = time.perf_counter()
        run = Stream(session, open_source(clip), question, StreamOptions())
        results = list(run)
        wall = time.perf_counter() - start
    t = run.timings
    if run.task != TRACK.name:
        raise SystemExit(f"the model did not route {question!r} to tracking: {results[0].events[0]}")
    # frame_total covers each frame end to end (capture, preprocess, track step, postprocess, the consumer);
    # the question's slow path is not a frame's cost
    total = t.total_s("frame_total")
    graph = sum(t.total_s(spec.name) for spec in G.FAST_PATH)
    summary = run.summary
    frame_ms = t.summary_ms()["frame_total"]
    return {
        "artifacts": str(artifacts), "precision": session.manifest.precision, "threads": threads,
        "backend": session.backend.description, "frame_path": session.frame_path.describe(),
        "source": f"{width}x{height} at {fps} fps, {frames} frames", "wall_s": round(wall, 2),
        "frames_in": summary["frames_in"], "processed": summary["processed"], "dropped": summary["dropped"],
        "fast_path_fps": round(t.count("frame_total") / total, 1),
        "frame_ms": {"p50": frame_ms["p50"], "p95": frame_ms["p95"]},
        "graph_share": round(graph / total, 3), "non_graph_share": round(1 - graph / total, 3),
        "non_graph_parts": {k: round(t.total_s(k) / total, 3) for k in ("capture", "preprocess", "postprocess",
                                                                         "consumer")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.bench.fast_path", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="320x240")
    p.add_argument("--fps", type=float, default=30.0)
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    print(json.dumps(measure(args.artifacts, args.threads, args.frames, width, height, args.fps), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
