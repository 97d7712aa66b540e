"""Nothing lost, nothing read from outside: exclusive and honest outputs, signals, full disks, special files,
bounded memory, one-line errors. Each test names the issue-17 item it covers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tpo.errors import CheckpointError
from tpo.runtime import cli
from tpo.runtime.outputs import OutputError, OutputFile
from tpo.runtime.results import FrameResult
from tpo.runtime.sinks import AnnotatedVideoSink, JsonlSink
from tpo.runtime.sources import Frame
from tpo.runtime.timings import Timings


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_video(path: Path, frames: int, size=(48, 64), fps=12.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    for i in range(frames):
        writer.write(np.full((*size, 3), (i * 9) % 255, np.uint8))
    writer.release()
    return path


# ------------------------------------------------------------------------------------ two writers, one output
def test_a_second_writer_is_refused_unless_forced_and_a_dead_writers_claim_is_taken_over(tmp_path):
    path = tmp_path / "events.jsonl"
    other = _sleeper()
    try:
        (tmp_path / "events.jsonl.lock").write_text(f"{other.pid}\n")       # another live process claims it
        with pytest.raises(OutputError, match=rf"another process \(pid {other.pid}\) is writing it"):
            JsonlSink(path)
        taken = JsonlSink(path, force=True)
        taken.write_event({"type": "answer"})
        taken.close()
        assert path.read_text().count("\n") == 1 and not (tmp_path / "events.jsonl.lock").exists()
    finally:
        other.kill()
        other.wait()
    (tmp_path / "events.jsonl.lock").write_text(f"{other.pid}\n")           # its writer is gone: stale
    JsonlSink(path).close()
    first, second = OutputFile(tmp_path / "a.jsonl"), None
    with pytest.raises(OutputError, match="this process already writes it"):
        second = OutputFile(tmp_path / "a.jsonl")
    assert second is None
    first.discard()
    a, b = OutputFile(tmp_path / "x.jsonl"), OutputFile(tmp_path / "y.jsonl")
    assert a.write_path != b.write_path and a.write_path.name.startswith(".x.jsonl.")
    a.discard()
    b.discard()


def test_tpo_run_refuses_outputs_another_run_is_writing_before_loading_anything(tmp_path, capsys):
    other = _sleeper()
    try:
        (tmp_path / "e.jsonl.lock").write_text(f"{other.pid}\n")
        rc = cli.main(["--artifacts", str(tmp_path / "none"), "--source", "x.mp4", "--query", "track it",
                       "--jsonl", str(tmp_path / "e.jsonl")])
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is writing it; pass --force" in err[0]
    rc = cli.main(["--artifacts", str(tmp_path / "none"), "--source", "x.mp4", "--query", "q",
                   "--jsonl", str(tmp_path / "same.jsonl"), "--qvhighlights", str(tmp_path / "same.jsonl")])
    assert rc == 2 and "two outputs on one path" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig, code, reason", [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_stops_cleanly_with_an_honest_summary_and_partial_files(fp32_artifacts, tmp_path, sig, code, reason):
    video = _write_video(tmp_path / "long.avi", 2000)
    jsonl, out = tmp_path / "events.jsonl", tmp_path / "annotated.avi"
    proc = subprocess.Popen([sys.executable, "-m", "tpo.runtime.cli", "--artifacts", str(fp32_artifacts),
                             "--source", str(video), "--query", "track the red circle", "--jsonl", str(jsonl),
                             "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TPO_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        partial_jsonl = None
        while time.monotonic() < deadline:      # wait until the stream is writing frames
            parts = list(tmp_path.glob(".events.jsonl.*.part"))
            if parts and parts[0].read_text().count("\n") > 12:
                partial_jsonl = parts[0]
                break
            time.sleep(0.2)
        assert partial_jsonl is not None, proc.stderr.read() if proc.poll() is not None else "no progress"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert not jsonl.exists() and not out.exists(), "nothing under the final names"
    lines = [json.loads(x) for x in (tmp_path / "events.partial.jsonl").read_text().splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["complete"] is False and summary["reason"] == reason
    assert summary["frames_in"] == summary["processed"] + summary["dropped"]
    assert "accounting_error" not in summary
    assert json.loads(stdout.splitlines()[-1])["complete"] is False
    cap = cv2.VideoCapture(str(tmp_path / "annotated.partial.avi"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) >= 1
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.part*"))


# ------------------------------------------------------------------------------------ write errors, special files
def test_a_full_disk_is_one_line_and_the_summary_says_incomplete(fp32_artifacts, tmp_path, capsys):
    video = _write_video(tmp_path / "v.avi", 20)
    rc = cli.main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--query", "track the red circle",
                   "--jsonl", "/dev/full", "--quiet"])
    captured = capsys.readouterr()
    err = [x for x in captured.err.splitlines() if x.startswith("tpo-run:")]
    assert rc == 2 and err == ["tpo-run: /dev/full: cannot write (the disk is full)"]
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["complete"] is False and "the disk is full" in summary["reason"]


def test_fifo_devices_and_symlinks_are_written_through_never_replaced(fp32_artifacts, tmp_path):
    video = _write_video(tmp_path / "v.avi", 10)
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    def read_fifo():
        with open(fifo) as f:
            received.extend(f.read().splitlines())

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert cli.main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--query", "track the red circle",
                     "--jsonl", str(fifo), "--qvhighlights", str(link), "--quiet"]) == 0
    reader.join(30)
    assert fifo.is_fifo() and json.loads(received[-1])["type"] == "summary"
    assert link.is_symlink() and link.resolve() == target and target.read_text() == ""   # no temporal answer
    assert cli.main(["--artifacts", str(fp32_artifacts), "--source", str(video), "--query", "track the red circle",
                     "--jsonl", "/dev/null", "--quiet"]) == 0
    assert Path("/dev/null").is_char_device()


def test_the_video_sink_checks_what_opencv_wrote(tmp_path, monkeypatch):
    import tpo.runtime.sinks as sinks

    real = cv2.VideoWriter

    class Forgetful:
        """A writer that loses every frame after the third (what a full disk does to OpenCV: no error)."""

        def __init__(self, *args):
            self.writer, self.n = real(*args), 0

        def isOpened(self):  # noqa: N802
            return self.writer.isOpened()

        def write(self, img):
            self.n += 1
            if self.n <= 3:
                self.writer.write(img)

        def release(self):
            self.writer.release()

    monkeypatch.setattr(sinks.cv2, "VideoWriter", Forgetful)
    sink = AnnotatedVideoSink(tmp_path / "a.avi", 10)
    for i in range(8):
        sink.write(FrameResult(Frame(i, i / 10, np.zeros((48, 64, 3), np.uint8))))
    with pytest.raises(OutputError, match=r"a\.avi: OpenCV wrote 3 of 8 frames"):
        sink.close()
    assert not (tmp_path / "a.avi").exists() and (tmp_path / "a.partial.avi").exists()


def test_onnxruntime_load_errors_are_one_line(fp32_artifacts, tmp_path):
    import shutil

    from tpo.contract import MANIFEST_FILE, sha256_file
    from tpo.runtime.session import open as open_session

    art = tmp_path / "art"
    shutil.copytree(fp32_artifacts, art)
    (art / "connector.onnx").write_bytes(b"not an onnx file")
    data = json.loads((art / MANIFEST_FILE).read_text())
    data["graphs"]["connector"]["sha256"] = sha256_file(art / "connector.onnx")
    (art / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as e:
        open_session(art)
    assert "graph connector" in str(e.value) and "ONNX Runtime cannot load it" in str(e.value)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ bounded memory, honest flags
def test_timings_percentiles_are_within_one_percent_in_bounded_memory():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(-4.0, 0.8, 200_000)
    t = Timings()
    for x in samples:
        t.add("frame", float(x))
    hist = t.stages["frame"]
    assert len(hist.buckets) < 1500
    for q in (50, 95, 99):
        want = float(np.percentile(samples, q, method="inverted_cdf"))
        assert abs(hist.percentile(q) - want) <= 0.01 * want, q
    summary = t.summary_ms()["frame"]
    assert summary["count"] == 200_000 and summary["max"] == pytest.approx(samples.max() * 1000, abs=1e-3)


def test_temporal_features_stay_within_what_the_head_takes(fp32_artifacts):
    """A long temporal stream keeps at most the manifest's `clips` maximum of features; the offline answer
    covers the latest span and says which."""
    from dataclasses import replace

    import tpo.runtime
    from tpo.data.synthetic import make_clip
    from tpo.runtime.sources import open_source

    session = tpo.runtime.open(fp32_artifacts)
    session.dims = {**session.dims, "clips": replace(session.dims["clips"], max=4)}
    clip = make_clip(0, 1000)
    q = next(q.question for q in clip.queries if q.task == "temporal")
    results = list(session.stream(open_source(iter(clip.frames), fps=clip.fps), q))
    offline = next(e for r in results for e in r.events if e["type"] == "temporal" and "event" not in e)
    clip_s = offline["clip_len_s"]
    total = len(clip.frames) / clip.fps
    assert offline["clips_dropped"] > 0 and len(offline["saliency"]) == 4
    assert offline["span_s"][1] == pytest.approx(total, abs=clip_s)
    assert offline["span_s"][0] == pytest.approx(offline["clips_dropped"] * clip_s)
    # windows are snapped to the clip grid after being clamped to the span: an end may round up to the last kept
    # clip's edge when the clip's length is off the grid (generator v2's clip_00000: 10.92 s), never further
    grid_end = offline["span_s"][0] + len(offline["saliency"]) * clip_s
    assert all(offline["span_s"][0] - 1e-6 <= w[0] <= w[1] <= grid_end + 1e-6 for w in offline["windows"])


def test_an_answer_cut_at_its_token_limit_says_so(fp32_artifacts):
    import tpo.runtime
    from tpo.data.synthetic import make_clip

    session = tpo.runtime.open(fp32_artifacts)
    clip = make_clip(0, 1000)
    q = next(q.question for q in clip.queries if q.task == "conversation")
    assert session.ask(q, clip.frames[:8], clip.fps, max_new_tokens=1).truncated
    assert not session.ask(q, clip.frames[:8], clip.fps).truncated


# ------------------------------------------------------------------------------------ reading from outside
@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_a_checkpoint_index_cannot_reach_outside_its_folder(tmp_path, kind):
    """The index is refused before any shard is opened (an audit hook watches every open in a subprocess)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x" * 16)
    name = {"relative": "../outside.safetensors", "absolute": str(outside), "symlink": "link.safetensors"}[kind]
    if kind == "symlink":
        (folder / "link.safetensors").symlink_to(outside)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": name}}))
    code = ("import sys, json\n"
            "opened = []\n"
            "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' else None)\n"
            "from tpo.model.checkpoint import resolve_checkpoint\n"
            "from tpo.errors import CheckpointError\n"
            f"try:\n    resolve_checkpoint({str(folder)!r})\nexcept CheckpointError as e:\n    print('REFUSED', e)\n"
            f"print(json.dumps([o for o in opened if 'outside' in o]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "REFUSED" in out and "outside" in out.splitlines()[0]
    assert json.loads(out.splitlines()[-1]) == [], "nothing outside the folder was opened"


def test_the_soak_benchmark_streams_an_iterator_and_checks_the_accounting(fp32_artifacts):
    """The soak script at a CI size (the 100,000-frame run is a measurement in docs/runtime.md)."""
    from tpo.bench.soak import soak

    report = soak(fp32_artifacts, frames=240, width=64, height=48, question="track the red circle", warmup=60,
                  every=30)
    assert report["identity_holds"] and report["accounting"]["processed"] == 240
    assert report["rss_mb"]["after_warmup"] > 0 and len(report["rss_samples"]) == 8
    assert all(n < 1500 for n in report["timing_buckets"].values())
