"""Streaming a source through the exported graphs: events per task, every frame accounted for, faults, tpo-run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tpo.runtime import cli
from tpo.runtime.rle import rle_decode
from tpo.runtime.sources import ReconnectPolicy, open_source
from tpo.runtime.stream import stream


@pytest.fixture(scope="module")
def session(fp32_artifacts):
    from tpo.runtime.session import open as open_session

    return open_session(fp32_artifacts)


@pytest.fixture(scope="module")
def clip():
    from tpo.train.synthetic import make_clip

    return make_clip(0, 1000)


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def question(clip, task: str) -> str:
    return next(q.question for q in clip.queries if q.task == task)


def run(session, source, q):
    return list(stream(session, source, q))


def test_track_a_file_accounts_for_every_frame(session, clip, tmp_path):
    frames = clip.frames[:20]
    path = write_video(tmp_path / "clip.avi", frames, clip.fps)
    out = run(session, open_source(path), question(clip, "track"))
    events = [e for _, e in out]
    assert events[0]["type"] == "answer" and events[0]["task"] == "track"
    track = [e for e in events if e["type"] == "track"]
    assert [e["frame"] for e in track] == list(range(20))
    h, w = frames.shape[1:3]
    for e in track:
        assert e["box"] is None or (0 <= e["box"][0] < e["box"][2] <= w and 0 <= e["box"][1] < e["box"][3] <= h)
        mask = rle_decode(e["mask_rle"])
        assert mask.shape == (h, w)
        assert (e["box"] is None) == (not mask.any())
    assert [t["time_s"] for t in track][:3] == pytest.approx([0, 1 / clip.fps, 2 / clip.fps], abs=1e-3)
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["frames_in"] == summary["processed"] == 20 and summary["dropped"] == 0
    for stage in ("capture", "preprocess", "track_step", "postprocess", "frame_total", "llm_prefill",
                  "mask_image_encoder", "memory_attention"):
        assert summary["latency_ms"][stage]["p50"] > 0, stage


def test_stride_skips_frames_without_dropping_them(session, clip, tmp_path):
    path = write_video(tmp_path / "clip.avi", clip.frames[:15], clip.fps)
    events = [e for _, e in run(session, open_source(path, stride=2), question(clip, "track"))]
    frames = sorted({e["frame"] for e in events if e["type"] == "track"})
    assert frames == list(range(0, 15, 2))
    summary = events[-1]
    assert summary["processed"] == math.ceil(15 / 2) == summary["frames_in"] and summary["dropped"] == 0
    assert summary["skipped_by_stride"] == 15 - math.ceil(15 / 2)


def test_a_text_only_question_answers_and_ends(session, clip):
    events = [e for _, e in run(session, open_source(iter(clip.frames[:30]), fps=clip.fps),
                                question(clip, "conversation"))]
    assert [e["type"] for e in events] == ["answer", "summary"]
    assert events[0]["task"] == "none" and events[0]["text"]
    assert events[1]["frames_in"] == events[1]["processed"] + events[1]["dropped"]


def test_region_gives_one_box_on_the_first_frame(session, clip):
    out = run(session, open_source(iter(clip.frames[:8]), fps=clip.fps), question(clip, "region"))
    regions = [(f, e) for f, e in out if e["type"] == "region"]
    assert out[0][1]["task"] == "region" and len(regions) == 1
    frame, event = regions[0]
    assert event["frame"] == 0 and frame.index == 0 and len(event["box"]) == 4


def test_temporal_windows_online_and_offline(session, clip):
    frames = clip.frames
    out = run(session, open_source(iter(frames), fps=clip.fps), question(clip, "temporal"))
    events = [e for _, e in out]
    assert events[0]["task"] == "temporal"
    final = [e for e in events if e["type"] == "temporal" and "event" not in e]
    assert len(final) == 1
    duration = len(frames) / clip.fps
    for start, end, score in final[0]["windows"]:
        assert 0 <= start <= end <= duration + 1e-6 and 0 <= score <= 1
    assert len(final[0]["saliency"]) == math.ceil(duration / final[0]["clip_len_s"] - 1e-6)
    online = [e for e in events if e.get("event") in ("open", "close")]
    opens = [e for e in online if e["event"] == "open"]
    closes = [e for e in online if e["event"] == "close"]
    assert len(opens) == len(closes)         # every window that opens is closed (at the latest at the end)
    assert events[-1]["processed"] == len(frames) == events[-1]["frames_in"]


def test_odd_frames_from_an_iterator_are_converted_or_counted(session, clip):
    """Grayscale and BGRA frames are converted; a corrupt frame (wrong dtype) is dropped and reported."""
    rgb = clip.frames[:10]
    items = [rgb[0], rgb[1], cv2.cvtColor(rgb[2], cv2.COLOR_RGB2GRAY), cv2.cvtColor(rgb[3], cv2.COLOR_RGB2RGBA),
             rgb[4].astype(np.float32), rgb[5], rgb[6], rgb[7], rgb[8], rgb[9]]
    events = [e for _, e in run(session, open_source(iter(items), fps=clip.fps), question(clip, "track"))]
    summary = events[-1]
    assert summary["frames_in"] == 10 and summary["processed"] == 9 and summary["dropped"] == 1
    assert summary["corrupt"] == 1
    assert any(e["type"] == "source" and e["event"] == "corrupt_frame" for e in events)
    assert 4 not in {e["frame"] for e in events if e["type"] == "track"}


def test_a_live_source_drops_newest_wins_and_counts(session, clip, helpers):
    capture = helpers.FakeCapture(frames=60, delay_s=0.002)
    source = open_source("camera-test", live=True, queue_size=2, capture_factory=lambda: capture,
                         reconnect=ReconnectPolicy(attempts=0))
    events = [e for _, e in run(session, source, question(clip, "track"))]
    summary = events[-1]
    assert summary["frames_in"] == summary["processed"] + summary["dropped"]
    assert summary["dropped"] > 0     # the tracker is slower than 500 frames/s


def test_tpo_run_writes_events_video_and_summary(fp32_artifacts, clip, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", clip.frames[:12], clip.fps)
    jsonl, annotated = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    rc = cli.main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--query", question(clip, "track"),
                   "--jsonl", str(jsonl), "--out", str(annotated), "--quiet"])
    assert rc == 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines[0]["type"] == "answer" and lines[-1]["type"] == "summary"
    assert sum(e["type"] == "track" for e in lines) == 12
    cap = cv2.VideoCapture(str(annotated))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[-1])["type"] == "summary"


def test_tpo_run_uses_the_cached_default_export(fp32_artifacts, clip, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / "tiny-fp16").symlink_to(fp32_artifacts)
    monkeypatch.setenv("TPO_ARTIFACTS_CACHE", str(cache))
    rc = cli.main(["--source", str(write_video(tmp_path / "c.avi", clip.frames[:3], clip.fps)),
                   "--query", question(clip, "conversation"), "--quiet"])
    assert rc == 0 and "exporting" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--source", "/nonexistent.mp4", "--query", "track the red circle"], "/nonexistent.mp4"),
    (["--source", "x.mp4", "--query", "q", "--stride", "0"], "--stride 0"),
    (["--source", "x.mp4", "--query", "q", "--backend", "tflite"], "tflite"),
])
def test_tpo_run_bad_input_is_one_line(fp32_artifacts, argv, message, capsys):
    rc = cli.main(["--artifacts", str(fp32_artifacts), *argv])
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tpo-run:")]
    assert rc == 2 and len(err) == 1 and message in err[0]
