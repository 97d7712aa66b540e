"""Region to track hand-off: a box prompts SAM2 through SAM2's own prompt encoder (`mask_box_prompt`), and a
region answer on a stream becomes a tracked object with the same id (`Stream.follow`, `{"follow": id}`,
`--follow`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tpo.contract import graphs as G
from tpo.data import metrics
from tpo.data.synthetic import make_clip
from tpo.errors import InputError
from tpo.runtime.control import Command, parse_command
from tpo.runtime.sources import open_source

from .test_two_loops import accounted


def _region_question(clip) -> str:
    return next(q.question for q in clip.queries if q.task == "region")


def test_a_box_prompts_the_tracker_on_the_object_it_boxes(session):
    """Each object's true box, through `mask_box_prompt`, gives the prompted frame's mask of THAT object (on a
    held-out clip with three objects on frame 0: clip_00006 of generator v2). The tracked frames after it are the
    tiny SAM2's own business: its memory path drifts to the most salient object whatever the prompt (measured,
    docs/runtime.md)."""
    clip = make_clip(6, 1000)
    h, w = clip.frames.shape[1:3]
    objects = [k for k in range(clip.boxes.shape[1]) if clip.box(0, k) is not None]
    assert len(objects) == 3
    for k in objects:
        prompt = session.box_prompt((np.array(clip.box(0, k)) / np.array([w, h, w, h]))[None])
        assert prompt.shape[:2] == (1, 3)
        mask = session.track_frame(session.tracker(prompt), clip.frames[0])[0]["mask"]
        overlap = {j: metrics.region_j(mask, clip.masks(j)[0]) for j in objects}
        assert max(overlap, key=overlap.get) == k and overlap[k] > 0.6, (k, overlap)


def test_a_region_answer_is_followed_with_its_id(session, clip):
    frames = clip.frames[:30]
    stream = session.stream(open_source(iter(frames), fps=clip.fps), _region_question(clip), follow_regions=True)
    results = list(stream)
    events = [e for r in results for e in r.events]
    follow = [e for e in events if e.get("event") == "follow"]
    assert len(follow) == 1 and follow[0]["object"] == 0 and "failed" not in follow[0]
    region = [e for e in events if e["type"] == "region"]
    track = [e for e in events if e["type"] == "track"]
    assert [e["frame"] for e in region] == [0] and [e["frame"] for e in track] == list(range(1, 30))
    assert {e["object"] for e in track} == {0} and follow[0]["frame"] == 0
    assert stream.summary["latency_ms"][G.MASK_BOX_PROMPT.name]["count"] == 1
    accounted(stream.summary)


def test_follow_by_command_and_what_cannot_be_followed(session, clip):
    frames = clip.frames[:20]
    stream = session.stream(open_source(iter(frames), fps=clip.fps), _region_question(clip))
    stream.ask("track the red circle", at_frame=2)       # question 1: a track answer, not a region
    stream.follow(1, at_frame=10)
    stream.follow(0, at_frame=12)
    stream.follow(7, at_frame=12)
    events = [e for r in stream for e in r.events]
    refused = [e for e in events if e.get("event") == "not_followable"]
    assert [e["object"] for e in refused] == [1, 7] and "region answers: [0]" in refused[0]["detail"]
    follow = [e for e in events if e.get("event") == "follow"]
    assert [e["object"] for e in follow] == [0] and follow[0]["frame"] >= 12 - 8     # the command waits for frame 12
    start = follow[0]["frame"] + 1
    assert {e["frame"] for e in events if e["type"] == "track" and e["object"] == 0} == set(range(start, 20))
    accounted(stream.summary)


def test_an_export_without_the_box_prompt_graph_says_so(session, clip):
    view = session.for_stream()
    view.runners = {k: v for k, v in view.runners.items() if k != G.MASK_BOX_PROMPT.name}
    with pytest.raises(InputError, match="no mask_box_prompt graph"):
        view.box_prompt(np.array([[0.1, 0.1, 0.5, 0.5]]))


def test_the_follow_command_parses():
    assert parse_command('{"follow": 2}') == Command("follow", object_id=2)
    assert parse_command('{"follow": 2, "frame": 9}') == Command("follow", object_id=2, at_frame=9)
    for line in ('{"follow": "a"}', '{"follow": true}'):
        assert "object id" in parse_command(line)
    assert "follow" in parse_command('{"go": 1}')


def test_tpo_run_follow(fp32_artifacts, clip, tmp_path, capsys):
    import cv2

    from tpo.runtime.cli import main

    video = tmp_path / "c.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), clip.fps, clip.frames.shape[2:0:-1])
    for f in clip.frames[:16]:
        writer.write(f[:, :, ::-1])
    writer.release()
    out = tmp_path / "e.jsonl"
    code = main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--query", _region_question(clip),
                 "--follow", "--jsonl", str(out), "--quiet"])
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [e["event"] for e in lines if e["type"] == "object"] == ["follow"]
    assert sum(e["type"] == "track" for e in lines) == 15
