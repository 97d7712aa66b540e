"""A new task added the way docs/architecture.md says, without touching the stream, the session or the sinks.

The toy task "point" answers where an object is as one point (the region box's centre) on every frame of a
stream. It is declared in the contract, given a runtime module, and its trigger is routed to it in an export's
manifest, as a retrained checkpoint's export would (here the region trigger, embedding and router output are
reused, so no training is needed). Everything else is the project's code unchanged.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tpo.contract import EMBEDDINGS, MANIFEST_FILE, TASK_EMBEDDING, sha256_file
from tpo.contract import graphs as G
from tpo.contract import tasks as T
from tpo.runtime.results import TrackedObject
from tpo.runtime.sources import Frame, open_source
from tpo.runtime.tasks import TASK_STREAMS, TaskContext, TaskStep

POINT = T.Task("point", trigger=T.REGION.trigger, placeholder=T.REGION.placeholder, embedding=T.REGION.embedding,
               router_output=G.REGION_BOX.name, media="image")


class PointStream:
    """The runtime side of the toy task: the box centre, in pixels, on every frame."""

    @staticmethod
    def offline(session, prompt: np.ndarray, frames: np.ndarray, fps: float, question: str) -> dict:
        h, w = frames.shape[1:3]
        x1, y1, x2, y2 = prompt[0].astype(float)
        return {"point": [float((x1 + x2) / 2 * w), float((y1 + y2) / 2 * h)]}

    def __init__(self, ctx: TaskContext) -> None:
        prompt = ctx.session.head_prompt(POINT.name, ctx.answer.prompts[POINT.name])
        self.point = self.offline(ctx.session, prompt, ctx.first[0].rgb[None], ctx.fps, ctx.question)["point"]

    def on_frame(self, frame: Frame) -> TaskStep:
        x, y = self.point
        obj = TrackedObject(0, "point", [x, y, x + 1, y + 1], 1.0, present=True, kind="point")
        return TaskStep([obj], [{"type": "point", "frame": frame.index, "xy": self.point}])

    def status(self) -> str:
        return f"at ({self.point[0]:.0f}, {self.point[1]:.0f})"

    def finish(self, last: Frame | None) -> list[dict]:
        return []


@pytest.fixture
def point_task(monkeypatch):
    """Register the toy task in place of region (it takes region's trigger) for this test only."""
    monkeypatch.setattr(T, "TASKS", {k: v for k, v in T.TASKS.items() if k != T.REGION.name})
    T.register(POINT)
    monkeypatch.setitem(TASK_STREAMS, POINT.name, PointStream)
    return POINT


def _export_with_point(fp32_artifacts, folder):
    """The fp32 export as a checkpoint with the point task would export it: its trigger routes to "point" and its
    embedding is in the embeddings file (the manifest's hashes updated)."""
    shutil.copytree(fp32_artifacts, folder)
    data = json.loads((folder / MANIFEST_FILE).read_text())
    tokens = data["tokens"]
    trigger = next(k for k, v in tokens["triggers"].items() if v == T.REGION.name)
    tokens["triggers"][trigger] = POINT.name
    tokens["placeholders"][POINT.name] = tokens["placeholders"].pop(T.REGION.name)
    emb_file = folder / data["files"][EMBEDDINGS]["file"]
    tensors = load_file(str(emb_file))
    tensors[TASK_EMBEDDING.format(task=POINT.name)] = tensors[TASK_EMBEDDING.format(task=T.REGION.name)]
    save_file(tensors, str(emb_file))
    data["files"][EMBEDDINGS]["sha256"] = sha256_file(emb_file)
    data["files"][EMBEDDINGS]["bytes"] = emb_file.stat().st_size
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    return folder


def test_a_toy_fifth_task_streams_through_the_unchanged_runtime(fp32_artifacts, tmp_path, point_task):
    import tpo.runtime
    from tpo.data.synthetic import make_clip

    session = tpo.runtime.open(_export_with_point(fp32_artifacts, tmp_path / "art"))
    clip = make_clip(0, 1000)
    question = next(q.question for q in clip.queries if q.task == T.REGION.name)
    results = list(session.stream(open_source(iter(clip.frames[:10]), fps=clip.fps), question))
    assert results[0].event("answer")["task"] == "point"
    points = [e for r in results for e in r.events if e["type"] == "point"]
    assert [e["frame"] for e in points] == list(range(10))
    h, w = clip.frames.shape[1:3]
    assert all(0 <= e["xy"][0] <= 2 * w and 0 <= e["xy"][1] <= 2 * h for e in points)
    assert results[-1].event("summary")["task"] == "point" and results[-1].status.startswith("at (")
    answer = session.ask(question, clip.frames[:1], clip.fps)
    assert answer.task == "point" and len(answer.results["point"][0]["point"]) == 2
