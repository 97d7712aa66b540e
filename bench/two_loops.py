"""Two loops under a live source: does a question asked mid-stream cost the fast path frames?

    python -m tpo.bench.two_loops --artifacts DIR [--fps 30] [--seconds 20] [--min-answer-s 0 0.5] [--nice 0 10]
                                  [--out FILE]

A simulated camera: the synthetic world's clip 0 (tpo.data), cycled, yielded by an iterator paced at `--fps`
and read as a live source (a reader thread, newest-wins queue of `--queue` frames, drops counted). The stream
opens with a track question; once it is answered and `--warmup-s` has passed, a second thread asks
`--mid-question` through `Stream.ask`, `--every-s` seconds after the last one was answered (the thread-safe API a control file uses).
Each question is *in flight* from its ask to its answer event. Reported per run (one per `--min-answer-s`: the
slow path padded to at least that long per answer, a slower LLM):
- `kept_without` / `kept_with`: processed / captured frames among frames captured outside / inside the
  in-flight windows, and `kept_ratio` = with / without (target >= 0.95);
- `max_gap_periods`: the largest gap between consecutive track events of the first object, in frame periods
  (capture index difference; newest-wins drops widen it), overall and for gaps that touch a window
  (target < 3 for those);
- `fast_path_capacity`: frames the fast path could do per source frame (1 / (mean frame_total less capture,
  times fps)): under
  1/3 the gap target cannot be met by any slow path, so the report says so;
- the summary's accounting (frames_in = processed + dropped), answer latencies, track step p50, and its
  glass-to-glass latency (capture to result, p50/p95/p99/max) and `track_gap`.
Speed is measured here, never asserted in tests. Writes JSON to stdout (and `--out`).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tpo.errors import one_line_errors

from .report import emit_json

TARGET_KEPT = 0.95
TARGET_GAP = 3.0


class Camera:
    """Frames from `frames`, cycled, yielded at `fps` for `seconds`; the wall time each was yielded (its capture)."""

    def __init__(self, frames: np.ndarray, fps: float, seconds: float):
        self.frames, self.fps, self.count = frames, fps, int(round(seconds * fps))
        self.captured: dict[int, float] = {}

    def __iter__(self) -> Iterator[np.ndarray]:
        start = time.perf_counter()
        for i in range(self.count):
            delay = start + i / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.captured[i] = time.perf_counter()
            yield self.frames[i % len(self.frames)]


def _inside(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _overlaps(a: float, b: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= y and x <= b for x, y in windows)


def _analyse(camera: Camera, track: list[int], asked: dict[int, float], answered: dict[int, float], summary: dict,
             warmup_s: float, fps: float, min_answer_s: float) -> dict:
    """The run's figures: frames kept inside and outside the question windows, the gaps between track events
    (in frame periods), the fast path's capacity and the summary's latencies and accounting."""
    windows = [(t, answered.get(i, float("inf"))) for i, t in asked.items() if i != 0]
    start = answered.get(0, float("inf")) + warmup_s     # measure after the first answer and a warm-up
    processed = set(track)
    counted = [i for i, t in camera.captured.items() if t >= start]
    inside = [i for i in counted if _inside(camera.captured[i], windows)]
    outside = [i for i in counted if not _inside(camera.captured[i], windows)]

    def kept(indices: list[int]) -> float | None:
        return round(sum(i in processed for i in indices) / len(indices), 4) if indices else None

    gaps_in, gaps_out = [], []
    for a, b in zip(track, track[1:], strict=False):
        if camera.captured.get(a, 0.0) < start:
            continue
        gap = b - a
        touching = _overlaps(camera.captured[a], camera.captured[b], windows)
        (gaps_in if touching else gaps_out).append(gap)
    latency = summary.get("latency_ms", {})
    frame_p50 = latency.get("frame_total", {}).get("p50")
    # the fast path's own cost per frame: frame_total without capture (a paced source's capture is mostly
    # waiting for the next frame)
    cost_ms = latency.get("frame_total", {}).get("mean", 0.0) - latency.get("capture", {}).get("mean", 0.0)
    capacity = round(1000.0 / (cost_ms * fps), 3) if cost_ms > 0 else None
    with_q, without_q = kept(inside), kept(outside)
    ratio = round(with_q / without_q, 4) if with_q is not None and without_q else None
    out = {
        "min_answer_s": min_answer_s, "slow_path_nice": summary.get("slow_path_nice"), "questions_mid_stream": len(windows),
        "answered_mid_stream": sum(b != float("inf") for _, b in windows),
        "frames_captured_measured": len(counted), "frames_in_windows": len(inside),
        "kept_without": without_q, "kept_with": with_q, "kept_ratio": ratio,
        "max_gap_periods": max(gaps_in + gaps_out, default=None),
        "max_gap_periods_with_question": max(gaps_in, default=None),
        "max_gap_periods_without_question": max(gaps_out, default=None),
        "median_gap_periods": float(np.median(gaps_in + gaps_out)) if gaps_in + gaps_out else None,
        "fast_path_capacity": capacity,
        "track_step_ms_p50": latency.get("track_step", {}).get("p50"),
        "frame_total_ms_p50": frame_p50, "fast_path_cost_ms_mean": round(cost_ms, 3),
        "glass_to_glass_ms": latency.get("glass_to_glass"), "track_gap": summary.get("track_gap"),
        "answer_ms": latency.get("answer"), "slow_path_answers_s": [round(b - a, 3) for a, b in windows],
        "frames_in": summary.get("frames_in"), "processed": summary.get("processed"),
        "dropped": summary.get("dropped"),
        "accounting_ok": summary.get("frames_in") == summary.get("processed", 0) + summary.get("dropped", 0),
    }
    out["meets_kept"] = ratio is not None and ratio >= TARGET_KEPT
    gap = out["max_gap_periods_with_question"]
    out["meets_gap"] = gap is not None and gap < TARGET_GAP
    if capacity is not None and capacity < 1 / TARGET_GAP:
        out["note"] = (f"the fast path alone does {capacity:.2f} of the source's frames: every gap is at least "
                       f"{1 / capacity:.1f} periods, so the gap target is out of reach on this machine whatever "
                       "the slow path does")
    return out


def run_once(session, frames: np.ndarray, first_question: str, mid_question: str, fps: float, seconds: float,
             queue: int, min_answer_s: float, warmup_s: float, every_s: float, nice: int) -> dict:
    from tpo.runtime.sources import open_source
    from tpo.runtime.stream import Stream
    from tpo.runtime.tasks import StreamOptions

    camera = Camera(frames, fps, seconds)
    source = open_source(iter(camera), fps=fps, live=True, queue_size=queue)
    stream = Stream(session, source, first_question, StreamOptions(min_answer_s=min_answer_s, with_masks=False,
                                                                  slow_path_nice=nice))
    asked: dict[int, float] = {}
    answered: dict[int, float] = {}
    first_answer = threading.Event()
    done = threading.Event()

    def asker() -> None:
        if not first_answer.wait(seconds):
            return
        first_at = time.perf_counter() + warmup_s
        while not done.is_set():
            next_at = first_at
            if asked:                                # one question in flight at a time, then a quiet spell
                last = max(asked)
                next_at = answered[last] + every_s if last in answered else time.perf_counter() + 0.05
            if time.perf_counter() < next_at:
                done.wait(min(0.05, next_at - time.perf_counter()))
                continue
            asked[stream.ask(mid_question)] = time.perf_counter()

    thread = threading.Thread(target=asker, daemon=True)
    thread.start()
    track: list[int] = []            # capture indices of the first object's track events
    summary: dict = {}
    try:
        for result in stream:
            now = time.perf_counter()
            for event in result.events:
                if event["type"] == "answer":
                    answered[event["question_id"]] = now
                    if event["question_id"] == 0:
                        first_answer.set()
                elif event["type"] == "track" and event["object"] == 0:
                    track.append(event["frame"])
                elif event["type"] == "summary":
                    summary = event
    finally:
        done.set()
        thread.join(1.0)
    return _analyse(camera, track, asked, answered, summary, warmup_s, fps, min_answer_s)


def bench(artifacts: Path, fps: float, seconds: float, queue: int, min_answer: list[float], warmup_s: float,
          every_s: float, mid_question: str | None, nices: list[int]) -> dict:
    import tpo.runtime
    from tpo.data.synthetic import make_clip

    clip = make_clip(0, 1000)
    first = next(q.question for q in clip.queries if q.task == "track")
    mid = mid_question or next(q.question for q in clip.queries if q.task == "conversation")
    session = tpo.runtime.open(artifacts)
    runs = [run_once(session, clip.frames, first, mid, fps, seconds, queue, m, warmup_s, every_s, n)
            for m in min_answer for n in nices]
    return {"bench": "two_loops", "artifacts": str(artifacts), "backend": session.backend.description,
            "precision": session.manifest.precision.value, "fps": fps, "seconds": seconds, "queue": queue,
            "first_question": first, "mid_question": mid, "frame_hw": list(clip.frames.shape[1:3]),
            "targets": {"kept_ratio": f">= {TARGET_KEPT}", "max_gap_periods_with_question": f"< {TARGET_GAP}"},
            "runs": runs}


@one_line_errors("two_loops")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpo.bench.two_loops", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--fps", type=float, default=30.0, help="the simulated camera's frame rate")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--queue", type=int, default=1, help="the live source's newest-wins queue")
    p.add_argument("--min-answer-s", type=float, nargs="+", default=[0.0, 0.5],
                   help="one run per value: the slow path takes at least this long per answer")
    p.add_argument("--warmup-s", type=float, default=1.0, help="after the first answer, before measuring")
    p.add_argument("--every-s", type=float, default=2.0, help="a mid-stream question this often")
    p.add_argument("--mid-question", default=None, help="default: the clip's conversation question")
    p.add_argument("--nice", type=int, nargs="+", default=[0],
                   help="one run per value: the slow path thread's niceness above the fast path's (Linux)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if not (args.artifacts / "manifest.json").is_file():
        print(f"two_loops: --artifacts {args.artifacts}: no manifest.json there", file=sys.stderr)
        return 2
    report = bench(args.artifacts, args.fps, args.seconds, args.queue, args.min_answer_s, args.warmup_s,
                   args.every_s, args.mid_question, args.nice)
    emit_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
