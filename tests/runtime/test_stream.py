"""Streaming a source through the exported graphs: one result per frame, events per task, every frame accounted
for, faults, and tpo-run with each sink."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from tpo.runtime import cli
from tpo.runtime.drawing import Layout
from tpo.runtime.results import EVENTS_FORMAT, FrameResult
from tpo.runtime.rle import rle_decode
from tpo.runtime.sources import ReconnectPolicy, open_source
from tpo.runtime.stream import Stream, stream
from tpo.runtime.tasks import StreamOptions


def question(clip, task: str) -> str:
    return next(q.question for q in clip.queries if q.task == task)


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def run(session, source, q, **options) -> list[FrameResult]:
    return list(stream(session, source, q, **options))


def events_of(results: list[FrameResult]) -> list[dict]:
    return [e for r in results for e in r.events]


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames, fps


def test_track_a_file_yields_one_result_per_frame_and_accounts_for_every_frame(session, clip, tmp_path):
    frames = clip.frames[:20]
    path = write_video(tmp_path / "clip.avi", frames, clip.fps)
    results = run(session, open_source(path), question(clip, "track"))
    assert [r.index for r in results] == [*range(20), None] and results[-1].final
    answer = results[0].event("answer")
    assert answer["task"] == "track" and answer["format"] == EVENTS_FORMAT
    assert answer["text"] == "tracking " + question(clip, "track").removeprefix("track ")
    h, w = frames.shape[1:3]
    for r in results[:-1]:
        (obj,) = r.objects
        (event,) = [e for e in r.events if e["type"] == "track"]
        assert 0.0 <= event["score"] <= 1.0 and event["present"] == obj.present
        assert event["present"] == (event["score"] >= 0.5 and event["box"] is not None)
        if event["present"]:
            assert 0 <= event["box"][0] < event["box"][2] <= w and 0 <= event["box"][1] < event["box"][3] <= h
            mask = rle_decode(event["mask_rle"])
            assert mask.shape == (h, w) and mask.any()
        else:
            assert event["box"] is None and "mask_rle" not in event
        assert r.status.startswith("tracking ") and r.timings_ms["track_step"] > 0
    track = [e for e in events_of(results) if e["type"] == "track"]
    assert [t["time_s"] for t in track][:3] == pytest.approx([0, 1 / clip.fps, 2 / clip.fps], abs=1e-3)
    summary = results[-1].event("summary")
    assert summary is results[-1].events[-1]
    assert summary["frames_in"] == summary["processed"] == 20 and summary["dropped"] == 0
    assert list(summary)[-2:] == ["wall_s", "fps"] and summary["fps"] > 0
    latency = summary["latency_ms"]
    for stage in ("capture", "preprocess", "question_preprocess", "track_step", "postprocess", "frame_total", "answer",
                  "llm_prefill", "mask_image_encoder", "memory_attention"):
        assert latency[stage]["p50"] > 0, stage
    # this loop consumes in well under a microsecond: its p50 may round to 0.0 ms, but every result is timed
    assert latency["consumer"]["count"] == 20 and latency["consumer"]["max"] >= 0, latency["consumer"]
    # frame_total is the whole frame: at least its tracking step and its capture
    assert latency["frame_total"]["mean"] >= latency["track_step"]["mean"] + latency["capture"]["mean"] * 0.5


def test_conf_decides_presence_and_an_absent_object_has_no_box_or_mask(session, clip):
    results = run(session, open_source(iter(clip.frames[:10]), fps=clip.fps), question(clip, "track"), conf=1.0)
    track = [e for e in events_of(results) if e["type"] == "track"]
    assert len(track) == 10
    assert all(not e["present"] and e["box"] is None and "mask_rle" not in e and e["score"] < 1.0 for e in track)
    assert all(not o.present and o.mask is None for r in results for o in r.objects)


def test_stride_skips_frames_without_dropping_them(session, clip, tmp_path):
    path = write_video(tmp_path / "clip.avi", clip.frames[:15], clip.fps)
    results = run(session, open_source(path, stride=2), question(clip, "track"))
    assert [r.index for r in results[:-1]] == list(range(0, 15, 2))
    summary = results[-1].event("summary")
    assert summary["processed"] == math.ceil(15 / 2) == summary["frames_in"] and summary["dropped"] == 0
    assert summary["skipped_by_stride"] == 15 - math.ceil(15 / 2)


def test_a_text_only_question_answers_and_every_frame_passes(session, clip):
    results = run(session, open_source(iter(clip.frames[:30]), fps=clip.fps), question(clip, "conversation"))
    assert len(results) == 31
    answer = results[0].event("answer")
    assert [e["type"] for e in events_of(results)] == ["answer", "summary"]
    assert answer["task"] == "none" and answer["text"] == answer["model_text"] != ""
    assert all(r.status == answer["text"] for r in results)
    summary = results[-1].event("summary")
    assert summary["frames_in"] == summary["processed"] + summary["dropped"] == 30


def test_region_gives_one_box_with_a_score_on_the_first_frame(session, clip):
    q = question(clip, "region")
    results = run(session, open_source(iter(clip.frames[:12]), fps=clip.fps), q)
    regions = [(r, e) for r in results for e in r.events if e["type"] == "region"]
    assert results[0].event("answer")["task"] == "region" and len(regions) == 1
    result, event = regions[0]
    assert event["frame"] == 0 and result.index == 0 and len(event["box"]) == 4
    assert 0.0 < event["score"] <= 1.0 and event["present"]
    x1, y1, x2, y2 = event["box"]
    h, w = clip.frames.shape[1:3]
    assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
    text = results[0].event("answer")["text"]
    assert text.startswith(q.removeprefix("where is ").rstrip("?") + " is at [") and "(frame 0)" in text
    assert len(results) == 13
    assert results[-1].event("summary")["latency_ms"]["llm_prefill"]["count"] == 1, "the LLM runs once per question"


def test_temporal_windows_online_and_offline(session, clip):
    frames = clip.frames
    results = run(session, open_source(iter(frames), fps=clip.fps), question(clip, "temporal"))
    events = events_of(results)
    assert events[0]["task"] == "temporal"
    final = [e for e in events if e["type"] == "temporal" and "event" not in e]
    assert len(final) == 1 and final[0]["text"].startswith(results[0].event("answer")["text"].split(": ")[1])
    duration = len(frames) / clip.fps
    clip_len = final[0]["clip_len_s"]
    n_clips = math.ceil(duration / clip_len - 1e-6)
    windows = final[0]["windows"]
    assert len({(a, b) for a, b, _ in windows}) == len(windows), "no duplicate windows"
    for start, end, score in windows:
        # clamped to the duration, then snapped to the clip grid (the release's rule): a duration off the grid
        # lets an end round up to the last clip's edge, never further
        assert 0 <= start <= end <= n_clips * clip_len + 1e-6 and 0 <= score <= 1
        assert abs(start / clip_len - round(start / clip_len)) < 1e-6 and abs(end / clip_len - round(end / clip_len)) < 1e-6
    assert len(final[0]["saliency"]) == n_clips
    online = [e for e in events if e.get("event") in ("open", "close")]
    assert [e["event"] for e in online] == ["open", "close"] * (len(online) // 2)   # every open is closed
    last_close = 0.0
    for e in online:
        if e["event"] == "open":
            assert e["time_s"] >= last_close and isinstance(e["score"], float)
        else:
            ((start, end, score),) = e["windows"]
            assert isinstance(score, float) and start <= end
            last_close = end
    assert results[-1].event("summary")["processed"] == len(frames) == results[-1].event("summary")["frames_in"]


def test_odd_frames_from_an_iterator_are_converted_or_counted(session, clip):
    """Grayscale and BGRA frames are converted; a corrupt frame (wrong dtype) is dropped and reported."""
    rgb = clip.frames[:10]
    items = [rgb[0], rgb[1], cv2.cvtColor(rgb[2], cv2.COLOR_RGB2GRAY), cv2.cvtColor(rgb[3], cv2.COLOR_RGB2RGBA),
             rgb[4].astype(np.float32), rgb[5], rgb[6], rgb[7], rgb[8], rgb[9]]
    results = run(session, open_source(iter(items), fps=clip.fps), question(clip, "track"))
    events = events_of(results)
    summary = events[-1]
    assert summary["frames_in"] == 10 and summary["processed"] == 9 and summary["dropped"] == 1
    assert summary["corrupt"] == 1
    assert any(e["type"] == "source" and e["event"] == "corrupt_frame" for e in events)
    assert 4 not in {e["frame"] for e in events if e["type"] == "track"}


def test_mixed_frame_sizes_in_the_question_clip_are_one_clear_error(session, clip):
    from tpo.errors import InputError

    items = [clip.frames[0], clip.frames[1][:, :-8]] + list(clip.frames[2:10])
    with pytest.raises(InputError, match="different sizes"):
        run(session, open_source(iter(items), fps=clip.fps), question(clip, "track"))


def test_a_live_source_drops_newest_wins_and_counts(session, clip, helpers):
    capture = helpers.FakeCapture(frames=60, delay_s=0.002)
    source = open_source("camera-test", live=True, queue_size=2, capture_factory=lambda: capture,
                         reconnect=ReconnectPolicy(attempts=0))
    summary = run(session, source, question(clip, "track"))[-1].event("summary")
    assert summary["frames_in"] == summary["processed"] + summary["dropped"]
    assert summary["dropped"] > 0     # the tracker is slower than 500 frames/s


def test_one_session_serves_two_streams_at_once(session, clip):
    """Each stream has its own timings and frame path; threads running two streams get what one stream gets."""
    q = question(clip, "track")
    frames = clip.frames[:12]

    def boxes(results):
        return [[o.box for o in r.objects] for r in results[:-1]]

    alone = run(session, open_source(iter(frames), fps=clip.fps), q)
    out: dict[int, list] = {}

    def worker(i):
        out[i] = run(session, open_source(iter(frames), fps=clip.fps), q)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(out[i]) == len(alone)
        for a, b in zip(boxes(out[i]), boxes(alone), strict=True):
            assert a == b
        assert out[i][-1].event("summary")["latency_ms"]["track_step"]["count"] == 12


def test_a_stream_is_single_pass_and_refuses_an_empty_question(session, clip):
    from tpo.errors import InputError

    s = Stream(session, open_source(iter(clip.frames[:3]), fps=clip.fps), question(clip, "conversation"))
    list(s)
    with pytest.raises(InputError, match="single pass"):
        iter(s)
    with pytest.raises(InputError, match="question: empty"):
        Stream(session, open_source(iter(clip.frames[:3])), "  ")
    with pytest.raises(InputError, match="conf"):
        StreamOptions(conf=1.5)


# ------------------------------------------------------------------------------------------ tpo-run
def tpo_run(artifacts, *argv) -> int:
    return cli.main(["--artifacts", str(artifacts), *map(str, argv)])


def test_tpo_run_track_writes_events_video_and_summary(fp32_artifacts, clip, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", clip.frames[:12], clip.fps)
    jsonl, annotated = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    rc = tpo_run(fp32_artifacts, "--source", video, "--query", question(clip, "track"), "--jsonl", jsonl,
                 "--out", annotated, "--quiet")
    assert rc == 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines[0]["type"] == "answer" and lines[-1]["type"] == "summary"
    assert sum(e["type"] == "track" for e in lines) == 12
    frames, fps = read_video(annotated)
    assert len(frames) == 12 and fps == pytest.approx(clip.fps, abs=0.01)
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in printed] == ["answer", "summary"], "--quiet prints the answer and the summary"
    assert "sink" in printed[-1]["latency_ms"]


@pytest.mark.parametrize("task", ["temporal", "region", "conversation"])
def test_tpo_run_writes_every_processed_frame_for_every_task(fp32_artifacts, clip, tmp_path, task, capsys):
    """The annotated video has every frame, the answer band above the picture, the timeline below it; the
    picture's own rows are the frame's (a chat/region/temporal frame has nothing drawn on most frames)."""
    n = 40
    source = write_video(tmp_path / "clip.avi", clip.frames[:n], clip.fps)
    out, jsonl, qvh = tmp_path / "a.avi", tmp_path / "e.jsonl", tmp_path / "q.jsonl"
    rc = tpo_run(fp32_artifacts, "--source", source, "--query", question(clip, task), "--out", out,
                 "--jsonl", jsonl, "--qvhighlights", qvh, "--qid", 7)
    assert rc == 0
    frames, fps = read_video(out)
    assert len(frames) == n and fps == pytest.approx(clip.fps, abs=0.01)
    h, w = clip.frames.shape[1:3]
    layout = Layout.for_frame(h, w)
    assert frames[0].shape[:2] == layout.size_hw
    src, _ = read_video(source)
    last = n - 1                                    # no region box there; temporal and chat draw on no frame
    picture = frames[last][layout.band_h: layout.band_h + h, :w].astype(int)
    assert np.abs(picture[-layout.strip_h:] - src[last][-layout.strip_h:].astype(int)).mean() < 6
    assert frames[last][: layout.band_h].mean() < 120 and frames[last][: layout.band_h].max() > 200   # text
    events = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert events[-1]["answer"] and events[0]["text"]
    qlines = [json.loads(x) for x in qvh.read_text().splitlines()]
    if task == "temporal":
        assert len(qlines) == 1 and qlines[0]["qid"] == 7
        offline = next(e for e in events if e["type"] == "temporal" and "event" not in e)
        assert qlines[0]["pred_relevant_windows"] == offline["windows"]
    else:
        assert qlines == []
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(events) and json.loads(printed[-1])["type"] == "summary"


def test_tpo_run_writes_the_video_at_the_processed_rate_with_stride(fp32_artifacts, clip, tmp_path):
    source = write_video(tmp_path / "clip.avi", clip.frames[:24], clip.fps)
    out = tmp_path / "a.mp4"
    assert tpo_run(fp32_artifacts, "--source", source, "--query", question(clip, "track"), "--out", out,
                   "--stride", 3, "--quiet") == 0
    frames, fps = read_video(out)
    assert len(frames) == 8 and fps == pytest.approx(clip.fps / 3, abs=0.01)


def test_tpo_run_prints_progress_unless_quiet(fp32_artifacts, clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    source = write_video(tmp_path / "clip.avi", clip.frames[:10], clip.fps)
    assert tpo_run(fp32_artifacts, "--source", source, "--query", question(clip, "track")) == 0
    err = capsys.readouterr().err
    assert "tpo-run: frame 10/10 (100%)" in err and "fps" in err
    assert tpo_run(fp32_artifacts, "--source", source, "--query", question(clip, "track"), "--quiet") == 0
    assert "tpo-run: frame" not in capsys.readouterr().err


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
    (["--source", "x.mp4", "--query", "q", "--device", "gpu7"], "--device 'gpu7'"),
    (["--source", "x.mp4", "--query", "q", "--conf", "2"], "--conf 2"),
])
def test_tpo_run_bad_input_is_one_line(fp32_artifacts, argv, message, capsys):
    rc = cli.main(["--artifacts", str(fp32_artifacts), *argv])
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tpo-run:")]
    assert rc == 2 and len(err) == 1 and message in err[0]


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.mkv"], "x.mkv: video suffix"),
    (["--query", "   "], "--query: empty"),
])
def test_tpo_run_checks_arguments_before_loading_anything(tmp_path, argv, message, capsys):
    """Checked before the artifacts are even looked at: a folder that does not exist is never reached."""
    base = {"--source": "x.mp4", "--query": "track the red circle", "--artifacts": str(tmp_path / "none")}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    rc = cli.main([x for kv in base.items() for x in kv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0]


def test_the_readme_python_example_runs(fp32_artifacts, clip, tmp_path, capsys):
    """The README's API example, with its paths pointed at this test's export and clip."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "tpo.runtime.open(" in code and ".stream(" in code
    video = write_video(tmp_path / "clip.avi", clip.frames[:10], clip.fps)
    code = code.replace('"artifacts/tiny-fp16"', repr(str(fp32_artifacts)))
    code = code.replace('"demo/videos/clip_00000.mp4"', repr(str(video)))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 11 and printed[-1].startswith("None ")
