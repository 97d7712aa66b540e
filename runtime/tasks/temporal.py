"""Temporal grounding: when in the video the question's moment happens, online while frames arrive and
offline when the source ends.

Per-clip features accumulate as frames arrive (each clip takes the frames the offline sampler would pick).
After each clip the temporal head runs over a sliding window of the most recent `window_clips` clips:
- `open` when the best window reaches the present with score >= `open_score`;
- `close` when it no longer does, with the window [start, end, score] (score: the best window's score at
  the last evaluation that kept it open, never null). A window never reopens before the last one closed.
When the source ends, a window still open closes at the last frame, and the offline answer runs over all
clips: windows best first, duplicates removed, with a `text` line ("from 3.0 s to 7.5 s").
"""

from __future__ import annotations

import numpy as np

from ..sources import Frame
from .base import TaskContext, TaskStep, seconds_text, target_phrase


class TemporalStream:
    def __init__(self, ctx: TaskContext) -> None:
        self.session, self.question, self.fps = ctx.session, ctx.question, ctx.fps
        self.window_clips, self.open_score = ctx.options.window_clips, ctx.options.open_score
        tp = ctx.session.pre["temporal"]
        self.clip_s, self.per_clip = float(tp["clip_s"]), int(tp["frames_per_clip"])
        self.prompt_token = ctx.session.route(ctx.answer.prompts["temporal"])["temporal_prompt"]
        self.label = target_phrase(ctx.question)
        self.feats: list[np.ndarray] = []
        self.chosen: list[Frame] = []        # the frames of the clip being filled
        self.open: list[float] | None = None  # [start_s, score at the last evaluation] of the open window
        self.closed_until = 0.0               # a new window starts no earlier than the last one ended
        self.last: Frame | None = None
        self.count = 0
        self.text = f"finding when: {self.label}"

    def _wanted_index(self, clip: int, k: int) -> int:
        # the frame index `clip_frame_indices` picks for sample k of clip `clip` (files: by index and fps)
        return int(np.floor((clip * self.clip_s + (k + 0.5) * self.clip_s / self.per_clip) * self.fps))

    def _add_clip(self) -> None:
        self.feats.append(self.session.clip_features(np.stack([f.rgb for f in self.chosen])[None])[0])
        self.chosen = []

    def on_frame(self, frame: Frame) -> TaskStep:
        self.count += 1
        self.last = frame
        clip = len(self.feats)
        while len(self.chosen) < self.per_clip and frame.index >= self._wanted_index(clip, len(self.chosen)):
            self.chosen.append(frame)
        if len(self.chosen) < self.per_clip:
            return TaskStep()
        self._add_clip()
        window = np.stack(self.feats[-self.window_clips:])
        offset = (len(self.feats) - len(window)) * self.clip_s
        start, end, score = self.session.temporal_from_features(self.prompt_token, window, self.question,
                                                                len(window) * self.clip_s)["windows"][0]
        reaches_now = end >= len(window) * self.clip_s - self.clip_s - 1e-6
        holds = score >= self.open_score and reaches_now
        if self.open is None and holds:
            begin = max(offset + start, self.closed_until)
            self.open = [begin, score]
            self.text = f"{self.label}: from {seconds_text(begin)}"
            return TaskStep(events=[{"type": "temporal", "event": "open", "time_s": round(begin, 3),
                                     "score": round(score, 4)}])
        if self.open is not None and holds:
            self.open[1] = score
            return TaskStep()
        if self.open is not None:
            end_s = offset + end if offset + end > self.open[0] else frame.time_s
            return TaskStep(events=[self._close(end_s)])
        return TaskStep()

    def _close(self, end_s: float) -> dict:
        begin, score = self.open
        end_s = max(end_s, begin)
        self.open = None
        self.closed_until = end_s
        self.text = f"{self.label}: from {seconds_text(begin)} to {seconds_text(end_s)}"
        return {"type": "temporal", "event": "close", "time_s": round(end_s, 3),
                "windows": [[round(begin, 3), round(end_s, 3), round(score, 4)]]}

    def status(self) -> str:
        return self.text

    def finish(self, last: Frame | None) -> list[dict]:
        events = []
        # clips whose sample times fall past the last frame: the offline sampler clamps them to the last frame
        n_clips = max(1, int(np.ceil(self.count / self.fps / self.clip_s - 1e-6))) if self.count else 0
        while len(self.feats) < n_clips and self.last is not None:
            self.chosen += [self.last] * (self.per_clip - len(self.chosen))
            self._add_clip()
        if self.open is not None and self.last is not None:
            events.append(self._close(self.last.time_s))
        if self.feats:
            duration = min(len(self.feats) * self.clip_s, self.count / self.fps)
            result = self.session.temporal_from_features(self.prompt_token, np.stack(self.feats), self.question,
                                                         duration)
            windows = result["windows"]
            self.text = (f"{self.label}: from {seconds_text(windows[0][0])} to {seconds_text(windows[0][1])}"
                         if windows else f"{self.label}: no moment found")
            events.append({"type": "temporal", "text": self.text, "windows": windows,
                           "saliency": result["saliency"], "clip_len_s": self.clip_s})
        return events
