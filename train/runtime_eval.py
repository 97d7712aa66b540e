"""Ask a dataset's queries through `tpo-run` (an export, the runtime's command line), for `tpo-eval --runtime`.

The training side never imports the runtime (docs/architecture.md): each query is one `tpo-run` process, and
its JSON lines become the `GenerationResult` that `tpo.train.evaluate` scores, so the export is scored by the
same rules and baselines as the PyTorch model.

- video questions (track, temporal, conversation) run on the dataset's video file with `--question-frames`
  set to the clip's frame count: the question is asked about the whole clip, sampled as `tpo-eval` samples it
  (the release's segment middles), and the track head follows the object from frame 0 on every frame;
- region questions run on a folder holding the one asked frame (as decoded from the video, written losslessly
  as PNG): one frame is an image question, as trained.
Per query: the answer event gives the route and the text; track events (object 0, every frame) the boxes and
masks (`present` false: no box, an empty mask); the region event the box; the closing temporal event the
windows over the whole clip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tpo.contract.tasks import TASKS
from tpo.data.synthetic import Clip, Query
from tpo.errors import InputError, TPOError
from tpo.model.generate import GenerationResult
from tpo.model.heads import RegionResult, TemporalResult, TrackResult
from tpo.model.preprocess import Video


def tpo_run_command() -> list[str]:
    exe = shutil.which("tpo-run")
    return [exe] if exe else [sys.executable, "-m", "tpo.runtime.cli"]


def _video_file(root: Path, clip: Clip) -> Path:
    found = sorted((root / "videos").glob(f"{clip.name}.*"))
    if not found:
        raise InputError(f"{root}/videos: no video file for {clip.name}; tpo-eval --runtime needs the dataset's videos")
    return found[0]


def _decode_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_util

    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def result_from_events(events: list[dict], clip: Clip, q: Query) -> GenerationResult:
    """tpo-run's events for one query -> the `GenerationResult` evaluate scores."""
    answer = next((e for e in events if e.get("type") == "answer"), None)
    if answer is None:
        raise TPOError(f"tpo-run gave no answer event for query {q.qid} ({q.question!r})")
    res = GenerationResult(text=answer.get("model_text", ""), raw_text=answer.get("model_text", ""),
                           task=answer["task"], token_ids=[])
    if res.task == "track":
        h, w = clip.spec.height, clip.spec.width
        masks = np.zeros((clip.num_frames, h, w), bool)
        boxes: list = [None] * clip.num_frames
        for e in events:
            if e.get("type") == "track" and e.get("object") == 0 and e.get("present"):
                t = int(e["frame"])
                boxes[t] = e["box"]
                if "mask_rle" in e:
                    masks[t] = _decode_mask(e["mask_rle"])
        res.track.append(TrackResult(masks=masks, boxes=boxes, scores=[]))
    elif res.task == "region":
        box = next(e["box"] for e in events if e.get("type") == "region")
        res.region.append(RegionResult(box_xyxy=box, box_normalised=[], frame=0))
    elif res.task == "temporal":
        final = [e for e in events if e.get("type") == "temporal" and "text" in e]
        windows = final[-1]["windows"] if final else []
        res.temporal.append(TemporalResult(windows=windows, saliency=[], clip_len_s=0.0))
    return res


def runtime_asker(artifacts: Path, dataset_root: Path, *, threads: int = 1, backend: str = "onnxruntime",
                  keep: Path | None = None) -> Callable[[Clip, Video, Query], GenerationResult]:
    """ask(clip, video, query) through one `tpo-run` process per query. keep: leave each query's JSON lines there."""
    work = Path(tempfile.mkdtemp(prefix="tpo-eval-runtime."))

    def ask(clip: Clip, video: Video, q: Query) -> GenerationResult:
        import cv2

        task = TASKS.get(q.route)
        if task is not None and task.media == "image":
            source = work / f"{clip.name}_frame{q.frame:05d}"
            if not source.is_dir():
                source.mkdir()
                cv2.imwrite(str(source / "000000.png"), np.ascontiguousarray(video.frames[q.frame][:, :, ::-1]))
            extra: list[str] = []
        else:
            source = _video_file(dataset_root, clip)
            extra = ["--question-frames", str(clip.num_frames)]
        events_file = (keep or work) / f"q{q.qid}_{abs(hash(q.question)) % 10**8}.jsonl"
        cmd = [*tpo_run_command(), "--artifacts", str(artifacts), "--source", str(source), "--query", q.question,
               "--backend", backend, "--threads", str(threads), "--jsonl", str(events_file), "--quiet", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise TPOError(f"tpo-run failed on query {q.qid} ({q.question!r}): {done.stderr.strip()[-300:]}")
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
        return result_from_events(events, clip, q)

    return ask


__all__ = ["result_from_events", "runtime_asker", "tpo_run_command"]
