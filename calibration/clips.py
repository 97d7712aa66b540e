"""Clips for calibration and for the export's parity gate: synthetic, seeded, made on the spot (no files).

The gate needs inputs from real clips (not random tensors): activations of a trained model on the kind of
video it was trained on are what overflow or drift at lower precision.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpo.data.synthetic import Query, make_clip
from tpo.model.preprocess import Video

PARITY_SEED = 4242   # apart from the training (0) and held-out (1000) streams


@dataclass
class ParityClip:
    name: str
    video: Video
    queries: list[Query]       # one per task: track, region, temporal, conversation


def parity_clips(count: int = 2, seed: int = PARITY_SEED, max_frames: int | None = None) -> list[ParityClip]:
    """`count` clips of the synthetic stream `seed`, each cut to its first `max_frames` frames if given
    (the queries still refer to the whole clip; the gate compares backends, not ground truth)."""
    out = []
    for i in range(count):
        clip = make_clip(i, seed)
        frames = clip.frames if max_frames is None else clip.frames[:max_frames]
        seen: dict[str, Query] = {}
        for q in clip.queries:
            seen.setdefault(q.task, q)
        out.append(ParityClip(clip.name, Video(frames, float(clip.fps)), list(seen.values())))
    return out
