"""Temporal grounding: when in the video the question's moment happens, online while frames arrive and
offline when the source ends.

Per-clip features accumulate as frames arrive (each clip takes the frames the offline sampler would pick).
After each clip the temporal head runs over a sliding window of the most recent `window_clips` clips:
- `open` when the best window reaches the present with score >= `open_score`;
- `close` when it no longer does, with the window [start, end, score] (score: the best window's score at
  the last evaluation that kept it open, never null). A window never reopens before the last one closed.
When the source ends, a window still open closes at the last frame, and the offline answer runs over the clips
kept: windows best first, duplicates removed, with a `text` line ("from 3.0 s to 7.5 s"). Memory is bounded on
an endless stream: at most the manifest's `clips` maximum of per-clip features is kept (the temporal head's
profile takes no more), so the offline answer covers the longest span the head allows, the latest one; its
`span_s` says which (and `clips_dropped` how many earlier clips fell out). A question longer than the head's
text limit is cut and says so (`question_truncated`). A question asked mid-stream counts its clips from the
first frame its task sees (`i0`, `t0`); every time it reports is the stream's.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from tpo.contract import graphs as G
from tpo.contract.tasks import TEMPORAL
from tpo.errors import InputError

from .. import postprocess, preprocess
from ..sources import Frame
from .base import TaskContext, TaskStep, seconds_text, target_phrase


def clip_features(session, clip_frames: np.ndarray) -> np.ndarray:
    """[Lv, Tc, H, W, 3] uint8 (Tc frames per clip) -> [Lv, Dv] the temporal head's per-clip video features
    (mean-pooled normalised vision tokens; the model side's `InternalFeatures`)."""
    tp = session.pre.temporal
    if tp.features != "internal":
        raise InputError(f"temporal features {tp.features!r} need external encoders not in the artifacts")
    with session.timings.timed("preprocess"):
        pixels = np.concatenate([session.frame_path.mllm_frames(c) for c in clip_frames])
    return session.vision_tokens(pixels).mean(axis=1)


def windows_from_features(session, prompt_token: np.ndarray, feats: np.ndarray, question: str,
                          duration_s: float) -> dict:
    """feats [Lv, Dv] (+ TEF added here) -> {"windows": [[start_s, end_s, score], ...] best first, each moment
    once, snapped to the clip grid; "windows_raw" (every query, the head's resolution); "saliency"; "clip_len_s"}."""
    tp = session.pre.temporal
    video = np.concatenate([feats, preprocess.tef(len(feats))], axis=1)[None].astype(np.float32)
    text = session.embed_tokens(session.text.question_ids(question, tp.max_text_tokens))[None]
    truncated = session.text.question_truncated(question, tp.max_text_tokens)
    out = session.run(G.TEMPORAL_HEAD, text_feats=text, text_mask=np.ones(text.shape[:2], bool), video_feats=video,
                      video_mask=np.ones(video.shape[:2], bool), prompt_token=prompt_token.astype(np.float32))
    with session.timings.timed("postprocess"):
        raw = postprocess.decode_windows(out.pred_logits[0], out.pred_spans[0], duration_s, tp.clip_s, snap=False)
        windows = postprocess.unique_windows(
            postprocess.decode_windows(out.pred_logits[0], out.pred_spans[0], duration_s, tp.clip_s))
        saliency = postprocess.decode_saliency(out.saliency[0], np.ones(video.shape[1], bool))
    result = {"windows": windows, "windows_raw": raw, "saliency": saliency, "clip_len_s": tp.clip_s}
    if truncated:
        result["question_truncated"] = True
    return result


class TemporalStream:
    @staticmethod
    def offline(session, prompt: np.ndarray, frames: np.ndarray, fps: float, question: str) -> dict:
        """The temporal head over the whole clip: windows in seconds and per-clip saliency."""
        tp = session.pre.temporal
        clips = preprocess.clip_frame_indices(frames.shape[0], fps, tp.clip_s, tp.frames_per_clip)
        feats = clip_features(session, np.stack([frames[i] for i in clips]))
        return windows_from_features(session, prompt, feats, question, min(len(clips) * tp.clip_s,
                                                                           frames.shape[0] / fps))

    def __init__(self, ctx: TaskContext) -> None:
        self.session, self.question, self.fps = ctx.session, ctx.question, ctx.fps
        self.window_clips, self.open_score = ctx.options.window_clips, ctx.options.open_score
        tp = ctx.session.pre.temporal
        self.clip_s, self.per_clip = float(tp.clip_s), int(tp.frames_per_clip)
        self.prompt_token = ctx.session.head_prompt(TEMPORAL.name, ctx.answer.prompts[TEMPORAL.name])
        self.label = target_phrase(ctx.question)
        self.feats: deque[np.ndarray] = deque(maxlen=ctx.session.dims["clips"].max)
        self.n_clips = 0                      # clips seen, including those that fell out of `feats`
        self.chosen: list[Frame] = []        # the frames of the clip being filled
        self.open: list[float] | None = None  # [start_s, score at the last evaluation] of the open window
        self.closed_until = 0.0               # a new window starts no earlier than the last one ended
        self.i0: int | None = None            # the first frame this task saw (a question asked mid-stream
        self.t0 = 0.0                         # starts its clips there): its index and time
        self.last: Frame | None = None
        self.count = 0
        self.text = f"finding when: {self.label}"

    def _wanted_index(self, clip: int, k: int) -> int:
        # the frame index `clip_frame_indices` picks for sample k of clip `clip` (files: by index and fps)
        return (self.i0 or 0) + int(np.floor((clip * self.clip_s + (k + 0.5) * self.clip_s / self.per_clip)
                                             * self.fps))

    def _add_clip(self) -> None:
        self.feats.append(clip_features(self.session, np.stack([f.rgb for f in self.chosen])[None])[0])
        self.n_clips += 1
        self.chosen = []

    def on_frame(self, frame: Frame) -> TaskStep:
        if self.i0 is None:
            self.i0, self.t0 = frame.index, frame.time_s
        self.count += 1
        self.last = frame
        clip = self.n_clips
        while len(self.chosen) < self.per_clip and frame.index >= self._wanted_index(clip, len(self.chosen)):
            self.chosen.append(frame)
        if len(self.chosen) < self.per_clip:
            return TaskStep()
        self._add_clip()
        window = np.stack(list(self.feats)[-self.window_clips:])
        offset = (self.n_clips - len(window)) * self.clip_s
        start, end, score = windows_from_features(self.session, self.prompt_token, window, self.question,
                                                  len(window) * self.clip_s)["windows"][0]
        reaches_now = end >= len(window) * self.clip_s - self.clip_s - 1e-6
        holds = score >= self.open_score and reaches_now
        if self.open is None and holds:
            begin = max(self.t0 + offset + start, self.closed_until)
            self.open = [begin, score]
            self.text = f"{self.label}: from {seconds_text(begin)}"
            return TaskStep(events=[{"type": "temporal", "event": "open", "time_s": round(begin, 3),
                                     "score": round(score, 4)}])
        if self.open is not None and holds:
            self.open[1] = score
            return TaskStep()
        if self.open is not None:
            end_s = self.t0 + offset + end if self.t0 + offset + end > self.open[0] else frame.time_s
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
        while self.n_clips < n_clips and self.last is not None:
            self.chosen += [self.last] * (self.per_clip - len(self.chosen))
            self._add_clip()
        if self.open is not None and self.last is not None:
            events.append(self._close(self.last.time_s))
        if self.feats:
            events.append(self._offline_answer())
        return events

    def _offline_answer(self) -> dict:
        """The head over the clips kept (the latest span it allows), windows in the stream's seconds."""
        dropped = self.n_clips - len(self.feats)
        begin = dropped * self.clip_s
        duration = min(len(self.feats) * self.clip_s, self.count / self.fps - begin)
        result = windows_from_features(self.session, self.prompt_token, np.stack(self.feats), self.question,
                                       duration)
        at = begin + self.t0
        windows = [[round(a + at, 4), round(b + at, 4), score] for a, b, score in result["windows"]]
        self.text = (f"{self.label}: from {seconds_text(windows[0][0])} to {seconds_text(windows[0][1])}"
                     if windows else f"{self.label}: no moment found")
        event = {"type": "temporal", "text": self.text, "windows": windows, "saliency": result["saliency"],
                 "clip_len_s": self.clip_s, "span_s": [round(at, 3), round(at + duration, 3)]}
        if dropped:
            event["clips_dropped"] = dropped
        if result.get("question_truncated"):
            event["question_truncated"] = True
        return event
