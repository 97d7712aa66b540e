"""Part 3 of a run, end to end on the tiny model: time to first result of each question about the clip (as a
caller of the runtime's `Stream` gets it), a file stream (capture -> frame path -> JSONL: sustained fps,
latency per frame) and a simulated live source at `source_fps` (newest frame wins: dropped frames,
deadline misses). See `measure.py` for each measurement."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .measure import first_result, live_source, stream_file
from .stages import alternate

if TYPE_CHECKING:
    from .suite import Suite


def run_end_to_end(suite: Suite) -> None:
    vs = suite.variants
    bar = suite.bar(len(suite.queries) + 2 * len(vs), "end to end")
    suite.result["first_result"] = time_to_first_result(suite, bar)
    p, frames = suite.plan, suite.frames[:60]
    stream, live = {}, {}
    order = list(vs)
    for n in order:
        bar.set_postfix_str(f"stream {n}")
        stream[n] = stream_file(vs[n].session, suite.video, p.stream_frames, suite.captured.track_prompt,
                                suite.work / f"stream-{n}.jsonl", budget_s=p.stream_budget_s)
        bar.update(1)
    for n in reversed(order):     # reversed: neither list always runs first on a warm machine
        bar.set_postfix_str(f"live {n}")
        live[n] = live_source(vs[n].session, frames, p.source_fps, p.live_seconds, suite.captured.track_prompt,
                              suite.work / f"live-{n}.jsonl")
        bar.update(1)
    bar.close()
    suite.result["stream"] = {"source": str(suite.video), "frames": p.stream_frames, "variants": stream}
    suite.result["live"] = {"source_fps": p.source_fps, "seconds": p.live_seconds,
                            "queue": "newest frame wins (1 slot)", "variants": live}
    suite.memory("end to end")


def time_to_first_result(suite: Suite, bar) -> dict[str, dict]:
    """Per question about the clip (by the kind the data generator gave it): its stage entry, with the task
    each variant's model routed it to."""
    p, frames = suite.plan, suite.frames[:60]
    out = {}
    for kind, question in suite.queries.items():
        bar.set_postfix_str(f"first result: {kind}")
        triggered: dict[str, str] = {}
        fns = {n: (lambda v=v, n=n, q=question, d=triggered: d.__setitem__(
            n, first_result(v.session, q, frames, p.source_fps))) for n, v in suite.variants.items()}
        timed = alternate(f"first_result:{kind}", fns, p.ttfr_rounds, 1, warmup=0 if p.quick else 1,
                          budget_s=p.stage_budget_s)
        entry = suite.stage_entry(timed, group="first_result", label=f"time to first result: {kind} ({question!r})")
        entry["triggered"] = triggered
        out[kind] = entry
        bar.update(1)
    return out
