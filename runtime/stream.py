"""`stream(session, source, question)`: results as frames arrive, every frame accounted for.

Flow:
1. The first `question_frames` frames (default: the vision encoder's frame count) form the clip the question
   is asked about: the slow path runs once (`Session.ask`, heads not run) and yields the answer event.
2. By the task the model routed to:
   - track: the fast path on every frame, the buffered ones first (the prompt applies to frame 0), one `track`
     event per frame per object (box in source pixels, score, mask as COCO RLE);
   - region: one `region` event on the first frame (asked again on that frame alone: region questions are
     about an image, as trained), then the stream ends;
   - temporal: per-clip features accumulate as frames arrive; after each clip the temporal head runs over a
     sliding window of recent clips and emits `{"type": "temporal", "event": "open", ...}` when the best window
     reaches the present with score >= `open_score`, and `"close"` when it stops there; when the source
     ends, the offline answer over all clips (`"windows"`, `"saliency"`);
   - none: the answer is all; the stream ends.
3. A final `summary`: frames_in, processed, dropped (from the source's counts plus frames the stream itself
   left), per-stage latency percentiles, the backend and precision that ran.
Frames are accounted for as: frames_in = processed + dropped, where a file source drops nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from . import postprocess, preprocess
from .rle import rle_encode
from .session import Session, Timings
from .sources import Frame, Source


def stream(session: Session, source: Source, question: str, *, question_frames: int | None = None,
           window_clips: int = 32, open_score: float = 0.5, with_masks: bool = True) -> Iterator[tuple[Frame | None, dict]]:
    """Yield (frame or None, event) pairs; the frame is the one an event belongs to (None for answers/summary)."""
    timings = session.timings
    n_first = question_frames or session.pre["mllm"]["num_frames"]
    processed = 0
    first: list[Frame] = []
    frames_iter = iter(source)
    while len(first) < n_first:
        with timings.timed("capture"):
            frame = next(frames_iter, None)
        if frame is None:
            break
        first.append(frame)
    for event in source.new_events():
        yield None, event
    if not first:
        yield None, summary(session, source, processed=0)
        return
    fps = source.fps or _fps_from_times(first)
    clip = np.stack([f.rgb for f in first]) if len({f.rgb.shape for f in first}) == 1 else first[0].rgb[None]
    start = time.perf_counter()
    answer = session.ask(question, clip, fps, run_heads=False)
    yield None, {"type": "answer", "text": answer.text, "task": answer.task,
                 "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    task = answer.task
    if task == "region":
        # region questions are about one image (as trained): ask again on the first frame alone
        hidden = answer.prompts["region"]
        if clip.shape[0] > 1:
            image_answer = session.ask(question, first[0].rgb[None], fps, run_heads=False)
            hidden = image_answer.prompts.get("region", hidden)
        prompts = session.route(hidden)
        h, w = first[0].rgb.shape[:2]
        box = prompts["region_box"][0] * np.array([w, h, w, h], np.float32)
        yield first[0], {"type": "region", "frame": first[0].index, "time_s": first[0].time_s,
                         "box": [round(float(v), 2) for v in box]}
        processed = len(first)
    elif task == "track":
        tracker = session.tracker(session.route(answer.prompts["track"])["track_prompt"])
        pending = iter(first)
        while True:
            frame = next(pending, None)
            if frame is None:
                with timings.timed("capture"):
                    frame = next(frames_iter, None)
            if frame is None:
                break
            t0 = time.perf_counter()
            events = [{"type": "track", "frame": frame.index, "time_s": round(frame.time_s, 4), "object": o,
                       "box": r["box"], "score": round(r["score"], 4),
                       **({"mask_rle": rle_encode(r["mask"])} if with_masks else {})}
                      for o, r in enumerate(session.track_frame(tracker, frame.rgb))]
            timings.add("frame_total", time.perf_counter() - t0)   # before the consumer runs
            processed += 1
            for event in events:
                yield frame, event
            for event in source.new_events():
                yield None, event
    elif task == "temporal":
        yield from _temporal(session, source, frames_iter, first, fps, question, answer, window_clips, open_score)
        processed = source.stats.delivered
    else:
        processed = len(first)
    source.close()
    for event in source.new_events():
        yield None, event
    yield None, summary(session, source, processed=processed)


def _fps_from_times(frames: list[Frame]) -> float:
    if len(frames) > 1 and frames[-1].time_s > frames[0].time_s:
        return (len(frames) - 1) / (frames[-1].time_s - frames[0].time_s)
    return 30.0


def _temporal(session: Session, source: Source, frames_iter, first: list[Frame], fps: float, question: str,
              answer, window_clips: int, open_score: float):
    """Online windows over a sliding window of clips, then the offline answer over all of them."""
    tp = session.pre["temporal"]
    clip_s, per_clip = tp["clip_s"], tp["frames_per_clip"]
    prompt_token = session.route(answer.prompts["temporal"])["temporal_prompt"]
    feats: list[np.ndarray] = []
    chosen: list[Frame] = []          # the frames of the clip being filled
    open_start: float | None = None
    last: Frame | None = None
    last_time = 0.0
    count = 0

    def wanted_index(clip: int, k: int) -> int:
        # the frame index `clip_frame_indices` picks for sample k of clip `clip` (files: by index and fps)
        return int(np.floor((clip * clip_s + (k + 0.5) * clip_s / per_clip) * fps))

    pending = iter(first)
    while True:
        frame = next(pending, None)
        if frame is None:
            frame = next(frames_iter, None)
        if frame is None:
            break
        count += 1
        last, last_time = frame, frame.time_s
        clip = len(feats)
        while len(chosen) < per_clip and frame.index >= wanted_index(clip, len(chosen)):
            chosen.append(frame)
        if len(chosen) < per_clip:
            continue
        feats.append(session.clip_features(np.stack([f.rgb for f in chosen])[None])[0])
        chosen = []
        window = np.stack(feats[-window_clips:])
        offset = (len(feats) - len(window)) * clip_s
        result = session.temporal_from_features(prompt_token, window, question, len(window) * clip_s)
        best = result["windows"][0]
        reaches_now = best[1] >= len(window) * clip_s - clip_s - 1e-6
        if open_start is None and best[2] >= open_score and reaches_now:
            open_start = offset + best[0]
            yield frame, {"type": "temporal", "event": "open", "time_s": round(open_start, 3), "score": best[2]}
        elif open_start is not None and not (best[2] >= open_score and reaches_now):
            end = offset + best[1] if best[1] > open_start - offset else frame.time_s
            yield frame, {"type": "temporal", "event": "close", "time_s": round(end, 3),
                          "windows": [[round(open_start, 3), round(end, 3), best[2]]]}
            open_start = None
    # clips whose sample times fall past the last frame: the offline sampler clamps them to the last frame
    n_clips = max(1, int(np.ceil(count / fps / clip_s - 1e-6))) if count else 0
    while len(feats) < n_clips and last is not None:
        chosen += [last] * (per_clip - len(chosen))
        feats.append(session.clip_features(np.stack([f.rgb for f in chosen])[None])[0])
        chosen = []
    if open_start is not None:
        yield None, {"type": "temporal", "event": "close", "time_s": round(last_time, 3),
                     "windows": [[round(open_start, 3), round(last_time, 3), None]]}
    if feats:
        duration = min(len(feats) * clip_s, count / fps)
        result = session.temporal_from_features(prompt_token, np.stack(feats), question, duration)
        yield None, {"type": "temporal", "windows": result["windows"], "saliency": result["saliency"],
                     "clip_len_s": clip_s}


def summary(session: Session, source: Source, processed: int) -> dict:
    stats = source.stats
    latency = session.timings.summary_ms()
    graph_s = sum(getattr(r, "seconds", 0.0) for r in session.runners.values())
    return {"type": "summary", "frames_in": stats.frames_in, "processed": processed,
            "dropped": stats.frames_in - processed, "source_dropped": stats.dropped, "corrupt": stats.corrupt,
            "skipped_by_stride": stats.skipped, "reconnects": stats.reconnects,
            "backend": session.backend.description, "precision": session.manifest.precision,
            "frame_path": session.frame_path.describe(),
            "graph_seconds": round(graph_s, 4),
            "latency_ms": {k: {q: v[q] for q in ("p50", "p95", "p99", "mean", "count")} for k, v in latency.items()}}


__all__ = ["stream", "summary", "Timings", "postprocess", "preprocess"]
