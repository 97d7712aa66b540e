"""Two loops: the slow path (LLM) on its own thread beside the per-frame fast path; questions mid-stream through
`Stream.ask` and `tpo-run --control`; several objects with ids; stop, quit, bad commands; the busy policy; every
frame accounted for. Speed is the benchmark's business (bench/two_loops.py): nothing here asserts it."""

from __future__ import annotations

import json
import time

import pytest

import tpo.runtime
import tpo.runtime.stream
from tpo.runtime import cli
from tpo.runtime.control import Command, parse_command
from tpo.runtime.sources import open_source
from tpo.runtime.stream import Stream
from tpo.runtime.tasks import StreamOptions
from tpo.runtime.timings import Timings


def question(clip, task: str) -> str:
    return next(q.question for q in clip.queries if q.task == task)


def events_of(results) -> list[dict]:
    return [e for r in results for e in r.events]


def accounted(summary: dict) -> None:
    assert summary["frames_in"] == summary["processed"] + summary["dropped"]
    assert "accounting_error" not in summary


# ------------------------------------------------------------------------------------------ no model
def test_control_lines_parse_or_say_why():
    assert parse_command('{"ask": " track the red circle "}') == Command("ask", question="track the red circle")
    assert parse_command('{"ask": "x", "frame": 12}') == Command("ask", question="x", at_frame=12)
    assert parse_command('{"stop": 3}') == Command("stop", object_id=3)
    assert parse_command('{"quit": true}') == Command("quit")
    for line, why in [("{ask", "not JSON"), ("[1]", "expected one of"), ('{"ask": ""}', "non-empty"),
                      ('{"stop": "a"}', "object id"), ('{"stop": true}', "object id"), ('{"quit": 1}', "true"),
                      ('{"ask": "x", "stop": 1}', "expected one of"), ('{"ask": "x", "frame": -1}', "frame"),
                      ('{"ask": "x", "when": 1}', "unknown key")]:
        out = parse_command(line)
        assert isinstance(out, str) and why in out, (line, out)


def test_a_control_fifo_is_read_on_a_thread_as_lines_come(tmp_path):
    """Opening a FIFO blocks until a writer comes: `start()` must return at once and read on its thread."""
    import os

    from tpo.errors import InputError
    from tpo.runtime.control import ControlReader

    class Recorder:
        def __init__(self):
            self.got = []

        def ask(self, question, at_frame=None):
            self.got.append(("ask", question, at_frame))

        def stop_object(self, object_id, at_frame=None):
            self.got.append(("stop", object_id, at_frame))

        def quit(self, at_frame=None):
            self.got.append(("quit", at_frame))

        def control_error(self, line, detail):
            self.got.append(("error", line))

    fifo = tmp_path / "control"
    os.mkfifo(fifo)
    recorder = Recorder()
    reader = ControlReader(fifo, recorder).start()
    with open(fifo, "w") as writer:
        writer.write('{"ask": "track x", "frame": 3}\nbad\n{"stop": 2}\n{"quit": true}\n')
    reader._thread.join(5)
    assert recorder.got == [("ask", "track x", 3), ("error", "bad"), ("stop", 2, None), ("quit", None)]
    with pytest.raises(InputError, match="no such file"):
        ControlReader(tmp_path / "missing", recorder)


def test_merged_timings_keep_both_loops_samples():
    a, b = Timings(), Timings()
    a.add("llm", 0.010)
    b.add("llm", 0.020)
    b.add("track_step", 0.001)
    merged = a.merged(b).summary_ms()
    assert merged["llm"]["count"] == 2 and merged["llm"]["max"] == pytest.approx(20.0)
    assert merged["track_step"]["count"] == 1 and a.count("llm") == 1, "the inputs are untouched"


# ------------------------------------------------------------------------------------------ files wait
def test_a_file_stream_answers_a_track_then_a_temporal_question_asked_mid_stream(session, clip):
    """Two questions in one stream, both answered; the second asked at frame 30 about frames 23..30 (the ring),
    its task runs from frame 30 on beside the first; ids are the questions' numbers; nothing is lost."""
    frames = clip.frames[:60]
    s = Stream(session, open_source(iter(frames), fps=clip.fps), question(clip, "track"))
    second = s.ask(question(clip, "temporal"), at_frame=30)
    results = list(s)
    assert second == 1 and [r.index for r in results] == [*range(60), None]
    answers = [e for e in events_of(results) if e["type"] == "answer"]
    assert [(a["question_id"], a["task"], a["frames"]) for a in answers] == [(0, "track", [0, 7]),
                                                                                (1, "temporal", [23, 30])]
    assert all(a["latency_ms"] > 0 and a["slow_path_ms"] > 0 for a in answers)
    assert results[0].events[0] is not None and results[0].events[0]["type"] == "answer"
    assert results[30].event("answer")["question_id"] == 1, "a file waits: the answer opens the frame asked on"
    track = [e for e in events_of(results) if e["type"] == "track"]
    assert len(track) == 60 and {e["object"] for e in track} == {0}
    temporal = [e for e in events_of(results) if e["type"] == "temporal" and "event" not in e]
    assert len(temporal) == 1 and all(w[0] >= results[30].time_s - 1e-6 for w in temporal[0]["windows"])
    assert " · " in results[45].status and results[45].status.startswith("tracking ")
    summary = results[-1].event("summary")
    accounted(summary)
    assert summary["processed"] == 60 and summary["questions"] == summary["answered"] == 2
    assert summary["latency_ms"]["llm_prefill"]["count"] == 2 and summary["latency_ms"]["answer"]["count"] == 2
    assert summary["track_gap"]["max_frames"] == 1, "a file: every frame tracked"
    assert summary["latency_ms"]["glass_to_glass"]["count"] == 60


def test_two_tracked_objects_stop_one_and_unknown_ids_and_bad_lines_are_one_event_each(session, clip):
    frames = clip.frames[:30]
    s = Stream(session, open_source(iter(frames), fps=clip.fps), question(clip, "track"))
    s.ask("track the " + "green triangle", at_frame=10)
    s.stop_object(0, at_frame=20)
    s.stop_object(7, at_frame=21)
    s.control_error("{ask", "not JSON")
    results = list(s)
    events = events_of(results)
    ids_by_frame = {r.index: sorted(o.id for o in r.objects) for r in results[:-1]}
    assert ids_by_frame[5] == [0] and ids_by_frame[15] == [0, 1] and ids_by_frame[25] == [1]
    control = [e for e in events if e["type"] == "control"]
    assert [c["event"] for c in control] == ["bad_command", "stopped", "unknown_object"]
    assert control[1]["object"] == 0 and "no object 7" in control[2]["detail"]
    assert results[20].event("control")["event"] == "stopped"
    accounted(results[-1].event("summary"))
    assert results[-1].event("summary")["processed"] == 30


def test_quit_ends_the_stream_cleanly_and_a_full_queue_refuses(session, clip):
    frames = clip.frames[:40]
    s = Stream(session, open_source(iter(frames), fps=clip.fps), question(clip, "conversation"),
               StreamOptions(max_queued=0))
    for _ in range(2):                    # the second finds the first still waiting: refused (max_queued 0)
        s.ask(question(clip, "region"), at_frame=12)
    s.quit(at_frame=15)
    results = list(s)
    events = events_of(results)
    refused = [e for e in events if e["type"] == "question"]
    assert [e["event"] for e in refused] == ["refused"] and "busy" in refused[0]["detail"]
    assert [e["question_id"] for e in events if e["type"] == "answer"] == [0, 1]
    summary = results[-1].event("summary")
    assert summary["complete"] and summary["stopped_by"] == "quit" and summary["processed"] == 16
    accounted(summary)
    assert summary["questions"] == 3 and summary["answered"] == 2


def test_a_question_that_fails_mid_stream_is_one_event_and_the_stream_goes_on(session, clip):
    import numpy as np

    items = list(clip.frames[:12]) + [np.ascontiguousarray(f[:, :-8]) for f in clip.frames[12:24]]
    s = Stream(session, open_source(iter(items), fps=clip.fps), question(clip, "track"))
    s.ask(question(clip, "temporal"), at_frame=15)      # frames 8..15: two sizes
    results = list(s)
    failed = [e for e in events_of(results) if e["type"] == "question"]
    assert len(failed) == 1 and failed[0]["event"] == "failed" and "different sizes" in failed[0]["detail"]
    accounted(results[-1].event("summary"))
    assert results[-1].event("summary")["processed"] == 24


# ------------------------------------------------------------------------------------------ live never waits
def paced(frames, fps: float):
    """An iterator yielding frames at `fps` (a camera)."""
    start = time.perf_counter()
    for i, f in enumerate(frames):
        delay = start + i / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield f


def test_a_live_stream_keeps_processing_while_the_slow_path_answers(session, clip):
    """The fast path does not wait: frames before the answer are processed without objects; the slowed slow
    path (0.8 s per answer) answers while frames flow; every frame is processed or dropped."""
    frames = list(clip.frames[:8]) * 6
    source = open_source(paced(frames, 20.0), fps=20.0, live=True, queue_size=2)
    s = Stream(session, source, question(clip, "track"), StreamOptions(min_answer_s=0.8))
    results = list(s)
    answer_at = next(i for i, r in enumerate(results) if r.event("answer"))
    assert answer_at >= 2, "frames were processed while the question was answered"
    assert all(not r.objects for r in results[:answer_at])
    assert all(r.status.startswith("asking: ") for r in results[:answer_at])
    assert results[answer_at].objects and results[answer_at].objects[0].id == 0
    answer = results[answer_at].event("answer")
    assert answer["frames"][1] - answer["frames"][0] >= 7 and answer["slow_path_ms"] >= 800
    summary = results[-1].event("summary")
    accounted(summary)
    assert summary["frames_in"] == len(frames) and summary["answered"] == 1
    g2g = summary["latency_ms"]["glass_to_glass"]
    assert g2g["count"] == summary["processed"] and 0 < g2g["p50"] <= g2g["p95"] <= g2g["p99"] <= g2g["max"]
    assert summary["track_gap"]["max_frames"] >= 1 and summary["track_gap"]["max_s"] > 0


# ------------------------------------------------------------------------------------------ tpo-run --control
def test_tpo_run_control_file_asks_stops_and_reports_bad_lines(fp32_artifacts, clip, tmp_path, capsys):
    from tests.runtime.test_stream import write_video

    video = write_video(tmp_path / "clip.avi", clip.frames[:24], clip.fps)
    control = tmp_path / "control.jsonl"
    control.write_text("\n".join([
        json.dumps({"ask": question(clip, "track"), "frame": 0}),
        "# a comment",
        "not json",
        json.dumps({"ask": question(clip, "temporal"), "frame": 10}),
        json.dumps({"stop": 5, "frame": 12}),
        json.dumps({"stop": 0, "frame": 16}),
    ]) + "\n")
    jsonl = tmp_path / "events.jsonl"
    assert cli.main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--control", str(control),
                     "--jsonl", str(jsonl), "--quiet"]) == 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [e["question_id"] for e in lines if e["type"] == "answer"] == [0, 1]
    assert [e["event"] for e in lines if e["type"] == "control"] == ["bad_command", "unknown_object", "stopped"]
    assert {e["frame"] for e in lines if e["type"] == "track"} == set(range(16))
    summary = lines[-1]
    accounted(summary)
    assert summary["processed"] == 24 and summary["answered"] == 2


def test_tpo_run_control_arguments_are_checked_before_loading(tmp_path, capsys):
    assert cli.main(["--source", "x.mp4"]) == 2
    assert "--query: missing" in capsys.readouterr().err
    assert cli.main(["--source", "x.mp4", "--control", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ lost, found, reground
def leaves_and_returns() -> list:
    """A made clip: a red disc moving right for 12 frames, gone for 18, back moving left for 20."""
    import numpy as np

    yy, xx = np.mgrid[:240, :320]

    def frame(cx):
        f = np.full((240, 320, 3), 30, np.uint8)
        if cx is not None:
            f[(xx - cx) ** 2 + (yy - 120) ** 2 <= 30 ** 2] = (230, 30, 30)
        return f

    return [frame(x) for x in [80 + 4 * i for i in range(12)] + [None] * 18 + [200 - 4 * i for i in range(20)]]


def object_events(results) -> list[tuple]:
    return [(e["event"], e["frames"] if e["event"] == "reground" else e["frame"])
            for e in events_of(results) if e["type"] == "object"]


def test_an_object_that_leaves_and_returns_is_lost_regrounded_and_found(session):
    """Pinned on the fp32 tiny export: absent 4 frames in a row (12..15) -> lost at 15; the question is re-asked
    about the ring (8..15) and again every 4 frames while lost; the disc is back at 30 -> found. A file waits
    for each re-ground, so the sequence is reproducible; every frame is processed."""
    frames = leaves_and_returns()
    results = list(tpo.runtime.stream.stream(session, open_source(iter(frames), fps=12.0), "track the red circle",
                                             with_masks=False, lost_frames=4))
    assert object_events(results) == [("lost", 15), ("reground", [8, 15]), ("reground", [12, 19]),
                                      ("reground", [16, 23]), ("reground", [20, 27]), ("found", 30)]
    assert results[16].event("object")["event"] == "reground", "the re-ground is in force from the next frame"
    present = "".join("P" if o.present else "." for r in results[:-1] for o in r.objects)
    assert present[30:] == "P" * 20
    summary = results[-1].event("summary")
    accounted(summary)
    assert summary["processed"] == 50 and summary["latency_ms"]["llm_prefill"]["count"] == 5
    lost = next(e for e in events_of(results) if e["type"] == "object")
    assert lost["object"] == 0 and lost["label"] == "the red circle" and lost["absent_frames"] == 4

    off = list(tpo.runtime.stream.stream(session, open_source(iter(frames), fps=12.0), "track the red circle",
                                         with_masks=False, lost_frames=4, reground=False))
    assert object_events(off) == [("lost", 15), ("found", 30)]
    assert off[-1].event("summary")["latency_ms"]["llm_prefill"]["count"] == 1
