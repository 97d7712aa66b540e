"""Frame sources: colour conversion, files, folders, iterators, live readers with drops and reconnects."""

import math
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tpo.errors import InputError
from tpo.runtime import sources
from tpo.runtime.sources import Frame, ReconnectPolicy, open_source, to_rgb

FAST = ReconnectPolicy(attempts=3, initial_s=0.01, factor=2.0, max_s=0.02)


def test_runtime_modules_do_not_import_torch():
    code = ("import sys, tpo.runtime.sources, tpo.runtime.sinks, tpo.runtime.rle; "
            "bad = [m for m in ('torch', 'transformers', 'tpo.model', 'tpo.train', 'tpo.export') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------ to_rgb
def test_to_rgb_converts_every_layout_to_owned_contiguous_rgb():
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)            # odd sizes
    out = to_rgb(grey, "grey")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == grey[..., None]).all()
    assert (to_rgb(grey[..., None], "grey1") == out).all()

    bgr = np.zeros((3, 5, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30               # B, G, R
    assert to_rgb(bgr, "bgr")[0, 0].tolist() == [30, 20, 10]
    assert to_rgb(bgr, "rgb", rgb=True)[0, 0].tolist() == [10, 20, 30]
    bgra = np.concatenate([bgr, np.full((3, 5, 1), 7, np.uint8)], axis=2)
    assert to_rgb(bgra, "bgra")[0, 0].tolist() == [30, 20, 10]
    assert to_rgb(bgra, "rgba", rgb=True)[0, 0].tolist() == [10, 20, 30]

    view = bgr[:, ::-1]                                               # not contiguous
    assert to_rgb(view, "view").flags.c_contiguous
    same = to_rgb(bgr, "copy", rgb=True)
    bgr[:] = 0
    assert same[0, 0].tolist() == [10, 20, 30], "must not alias the caller's array"


@pytest.mark.parametrize("image, words", [
    (np.zeros((4, 4, 3), np.float32), "dtype float32"),
    (np.zeros((4, 4, 3), bool), "dtype bool"),
    (np.zeros((4, 4, 3), np.uint16), "dtype uint16"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
    (np.zeros(4, np.uint8), "shape (4,)"),
    ([[1, 2], [3, 4]], "got list"),
])
def test_to_rgb_refuses_in_one_line_naming_the_frame(image, words):
    with pytest.raises(InputError) as err:
        to_rgb(image, "frame 17 of video.mp4")
    message = str(err.value)
    assert message.startswith("frame 17 of video.mp4: ") and words in message and "\n" not in message


# ------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("name", ["clip.avi", "clip.mp4"])
def test_video_file_delivers_every_frame_in_order(make_video, helpers, name):
    path = make_video(name)
    with open_source(path) as source:
        assert not source.live and source.fps == pytest.approx(helpers.FPS)
        frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert [helpers.frame_number(f.rgb) for f in frames] == list(range(12))
    assert [f.time_s for f in frames] == pytest.approx([i / helpers.FPS for i in range(12)], abs=1e-3)
    first = frames[0]
    assert first.size_hw == (helpers.H, helpers.W) and first.rgb.dtype == np.uint8 and first.rgb.flags.c_contiguous
    assert abs(int(first.rgb[..., 0].mean()) - 50) < 8 and abs(int(first.rgb[..., 2].mean()) - 200) < 8  # RGB order
    stats = source.stats
    assert (stats.frames_in, stats.delivered, stats.dropped, stats.corrupt, stats.skipped) == (12, 12, 0, 0, 0)
    assert source.closed and source.events == []


def test_stride_skips_are_counted_apart_from_frames_in(make_video, helpers):
    with open_source(make_video(), stride=3) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert [helpers.frame_number(f.rgb) for f in frames] == [0, 3, 6, 9]
    assert [f.time_s for f in frames] == pytest.approx([0, 0.25, 0.5, 0.75], abs=1e-3)
    s = source.stats
    assert (s.frames_in, s.delivered, s.dropped, s.skipped) == (4, 4, 0, 8)


def test_max_frames_stops_and_closes(make_video):
    source = open_source(make_video(), max_frames=5)
    assert [f.index for f in source] == [0, 1, 2, 3, 4]
    assert source.closed and source.stats.delivered == 5 and source.stats.frames_in == 5


def test_corrupt_frame_in_a_video_is_dropped_and_the_stream_goes_on(make_video, helpers, tmp_path):
    data = bytearray(make_video().read_bytes())
    pos, chunks = data.find(b"movi") + 4, []
    while pos + 8 <= len(data) and data[pos:pos + 4] != b"idx1":        # the AVI's frame chunks
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos + 2:pos + 4] == b"dc":
            chunks.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    assert len(chunks) == 12
    start, size = chunks[5]
    data[start:start + size] = bytes(size)                                # frame 5: no JPEG left
    bad = tmp_path / "bad.avi"
    bad.write_bytes(bytes(data))

    with open_source(bad) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert [helpers.frame_number(f.rgb) for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    s = source.stats
    assert (s.frames_in, s.delivered, s.dropped, s.corrupt) == (12, 11, 1, 1)
    (event,) = source.events
    assert event["type"] == "source" and event["event"] == "corrupt_frame" and "frame 5 of" in event["detail"]
    assert event["time_s"] == pytest.approx(5 / helpers.FPS)


def test_truncated_video_ends_early_with_an_event(make_video, tmp_path):
    data = make_video().read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.85)])      # OpenCV needs the header: cut late
    with open_source(cut) as source:
        frames = list(source)
    assert 0 < len(frames) < 12
    s = source.stats
    assert s.dropped == 0 and s.frames_in == s.delivered == len(frames)
    assert [e["event"] for e in source.events] == ["ended_early"]
    assert f"from frame {len(frames)} on, 12 frames declared" in source.events[0]["detail"]


def test_fake_file_capture_corrupt_frames_and_an_unreadable_rest(helpers):
    fake = helpers.FakeCapture(10, fail_at=(3, 4), frame_count=10, fps=10)
    with open_source("fake.mp4", capture_factory=lambda: fake, live=False) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert [f.time_s for f in frames] == pytest.approx([0, 0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert (source.stats.corrupt, source.stats.dropped, source.stats.frames_in) == (2, 2, 10)
    assert [e["event"] for e in source.events] == ["corrupt_frame", "corrupt_frame"]
    assert fake.released.is_set()

    dead = helpers.FakeCapture(100, fail_at=tuple(range(2, 100)), frame_count=100, fps=10)
    with open_source("dead.mp4", capture_factory=lambda: dead, live=False, max_consecutive_failures=4) as source:
        assert len(list(source)) == 2
    assert [e["event"] for e in source.events] == ["ended_early"]     # a file never `gave_up`: live only
    assert source.events[0]["detail"] == ("dead.mp4: read failed from frame 2 on, 100 frames declared, 2 read; "
                                          "stopped after 4 failed reads in a row")
    assert source.stats.dropped == 0 and dead.reads == 6


def test_unknown_rate_and_unknown_count_are_said_not_assumed_silently(helpers):
    """A container with no frame rate and no frame count: times use 30 fps and an event says so; the end of the
    readable data is reported (it cannot be told from a truncated file)."""
    fake = helpers.FakeCapture(7)
    with open_source("bare.avi", capture_factory=lambda: fake, live=False) as source:
        frames = list(source)
    assert len(frames) == 7 and frames[3].time_s == pytest.approx(3 / 30)
    kinds = [e["event"] for e in source.events]
    assert kinds == ["fps_unknown", "ended_unverified"]
    assert "assume 30 fps" in source.events[0]["detail"] and "7 frames read" in source.events[1]["detail"]


def test_source_events_stay_bounded_and_say_what_was_lost(helpers, monkeypatch):
    from tpo.runtime import sources

    monkeypatch.setattr(sources, "EVENT_BACKLOG", 5)
    monkeypatch.setattr(sources, "EVENT_HISTORY", 3)
    fake = helpers.FakeCapture(30, fail_at=tuple(range(1, 29, 2)), frame_count=30, fps=10)
    with open_source("flaky.mp4", capture_factory=lambda: fake, live=False) as source:
        frames = list(source)
        unread = source.new_events()
    assert len(frames) == 16 and len(source.events) == 3
    assert unread[0]["event"] == "events_lost" and "9 events" in unread[0]["detail"] and len(unread) == 6


def test_overstated_frame_count_ends_early_saying_declared_and_read(helpers):
    """A container that declares 3000 frames of which 100 are readable: the stream ends after the 100 with
    `ended_early` (as the docstring and docs promise), not `gave_up`, and nothing counts as dropped."""
    fake = helpers.FakeCapture(100, frame_count=3000, fps=25)
    with open_source("long.mp4", capture_factory=lambda: fake, live=False) as source:
        frames = list(source)
    assert [f.index for f in frames] == list(range(100))
    (event,) = source.events
    assert event["type"] == "source" and event["event"] == "ended_early"
    assert event["detail"].startswith("long.mp4: read failed from frame 100 on, 3000 frames declared, 100 read")
    assert "\n" not in event["detail"] and event["time_s"] == pytest.approx(99 / 25)
    s = source.stats
    assert (s.frames_in, s.delivered, s.dropped, s.corrupt) == (100, 100, 0, 0)
    assert fake.released.is_set() and fake.reads == 100

    strided = helpers.FakeCapture(100, frame_count=3000, fps=25)      # the same with stride: grabs count as read
    with open_source("long.mp4", capture_factory=lambda: strided, live=False, stride=3) as source:
        assert [f.index for f in source] == list(range(0, 100, 3))
    assert [e["event"] for e in source.events] == ["ended_early"]
    assert "3000 frames declared, 100 read" in source.events[0]["detail"]


def test_container_timestamps_are_used_when_sane(helpers):
    msec = [0.0, 40.0, 120.0, 130.0, 100.0, math.nan, 0.0, 800.0]   # variable rate, backwards, NaN, 0, sane
    fake = helpers.FakeCapture(8, frame_count=8, fps=10, msec=msec)
    with open_source("vfr.mp4", capture_factory=lambda: fake, live=False) as source:
        times = [f.time_s for f in source]
    assert times == pytest.approx([0.0, 0.04, 0.12, 0.13, 0.4, 0.5, 0.6, 0.8])


def test_bad_inputs_fail_in_one_line_naming_them(tmp_path, make_video):
    cases = {
        tmp_path / "nope.mp4": "nope.mp4: no such file",
        tmp_path / "empty": "no images",
        tmp_path / "junk.avi": "junk.avi: cannot open",
        tmp_path / "half.avi": "half.avi: cannot open",
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    (tmp_path / "junk.avi").write_bytes(b"nonsense" * 100)
    data = make_video().read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    for spec, words in cases.items():
        with pytest.raises(InputError) as err:
            open_source(str(spec))
        assert words in str(err.value) and "\n" not in str(err.value)
    for kwargs in ({"stride": 0}, {"queue_size": 0}, {"max_frames": -1}, {"fps": 0.0}):
        with pytest.raises(InputError):
            open_source([], **kwargs)


def test_spec_kinds():
    assert sources._describe(3) == ("camera", "camera 3")
    assert sources._describe("0") == ("camera", "camera 0")
    assert sources._describe("rtsp://cam/stream")[0] == "url"
    assert sources._describe("HTTPS://cam/x.mjpg")[0] == "url"
    assert sources._describe("videotestsrc ! videoconvert ! appsink")[0] == "gstreamer"
    assert sources._describe(iter([]))[0] == "iterable"
    with pytest.raises(InputError):
        sources._describe(3.5)


def test_gstreamer_without_support_says_so(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n    GStreamer:   NO\n")
    with pytest.raises(InputError, match="no GStreamer support"):
        open_source("videotestsrc ! appsink")


# ------------------------------------------------------------------------------------------ folders
def test_image_folder_sorted_by_name_with_a_corrupt_image(tmp_path, helpers):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (3, 0, 4, 1):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), helpers.bgr_frame(i, 6, 9))
    grey = np.full((6, 9), 77, np.uint8)
    cv2.imwrite(str(folder / "img_05.bmp"), grey)
    (folder / "img_02.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "readme.txt").write_text("ignored")

    with open_source(folder, fps=10) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3, 4, 5]
    assert [helpers.frame_number(f.rgb) for f in frames[:4]] == [0, 1, 3, 4]
    assert frames[0].rgb[0, 0].tolist() == [50, 0, 200]               # PNG is lossless: exact RGB
    assert (frames[4].rgb == 77).all()
    assert [f.time_s for f in frames] == pytest.approx([0, 0.1, 0.3, 0.4, 0.5])
    s = source.stats
    assert (s.frames_in, s.delivered, s.dropped, s.corrupt) == (6, 5, 1, 1)
    assert source.events[0]["event"] == "corrupt_frame" and "img_02.jpg" in source.events[0]["detail"]

    with open_source(folder, stride=2) as source:
        assert [f.index for f in source] == [0, 4]                    # 2 is corrupt, still not delivered
    assert source.fps == 30.0 and source.stats.skipped == 3


# ------------------------------------------------------------------------------------------ iterators
def test_iterator_of_rgb_frames_and_of_timed_pairs():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255                                                  # red, in RGB
    frames = list(open_source([rgb, rgb.copy(), rgb], fps=5))
    assert [f.time_s for f in frames] == pytest.approx([0, 0.2, 0.4])
    assert frames[0].rgb[0, 0].tolist() == [255, 0, 0], "iterators deliver RGB: no channel swap"

    source = open_source(iter([(1.5, rgb), (np.float64(1.75), rgb), (2.0, np.zeros((4, 6), np.float32)),
                               ("x", rgb), (2.5, rgb)]))
    frames = list(source)
    assert [(f.index, f.time_s) for f in frames] == [(0, 1.5), (1, 1.75), (4, 2.5)]
    s = source.stats
    assert (s.frames_in, s.delivered, s.dropped, s.corrupt) == (5, 3, 2, 2)
    details = [e["detail"] for e in source.events]
    assert "frame 2 of <list_iterator>: image dtype float32" in details[0] and "time 'x'" in details[1]


def test_a_frame_object_is_returned_and_its_size():
    frame = Frame(3, 0.1, np.zeros((5, 7, 3), np.uint8))
    assert frame.size_hw == (5, 7)


# ------------------------------------------------------------------------------------------ live
def test_backoff_doubles_up_to_the_cap():
    policy = ReconnectPolicy()
    assert [policy.delay(k) for k in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_live_slow_consumer_drops_oldest_and_accounts_for_every_frame(helpers):
    factory = helpers.Factory(helpers.FakeCapture(200))
    source = open_source("fast-camera", live=True, capture_factory=factory, queue_size=2,
                         reconnect=ReconnectPolicy(attempts=0))
    indices = []
    for frame in source:
        indices.append(frame.index)
        time.sleep(0.002)
    s = source.stats
    assert s.frames_in == 200 and s.dropped > 0
    assert s.frames_in == s.delivered + s.dropped and s.delivered == len(indices)
    assert indices == sorted(indices) and indices[-1] == 199, "newest wins: the last frame is delivered"
    assert [e["event"] for e in source.events] == ["disconnected", "gave_up"]


def test_live_full_queue_keeps_the_newest_frames_and_close_counts_the_rest(helpers):
    camera = helpers.FakeCapture(50)
    source = open_source("camera", live=True, capture_factory=helpers.Factory(camera), queue_size=3,
                         reconnect=ReconnectPolicy(attempts=0))
    deadline = time.monotonic() + 10
    while source.stats.frames_in < 50 and time.monotonic() < deadline:   # a consumer that fell behind
        time.sleep(0.005)
    s = source.stats
    assert (s.frames_in, s.dropped, s.in_flight) == (50, 47, 3)
    assert next(source).index == 47, "the oldest frames went, the newest stayed"
    source.close()
    s = source.stats
    assert (s.delivered, s.dropped, s.in_flight) == (1, 49, 0), "queued frames count as dropped at close"


def test_live_reconnects_with_backoff_then_gives_up(helpers):
    factory = helpers.Factory(helpers.FakeCapture(5), helpers.FakeCapture(opened=False),
                              helpers.FakeCapture(5, first=5))
    start = time.monotonic()
    with open_source("flaky-camera", live=True, capture_factory=factory, queue_size=100, reconnect=FAST) as source:
        frames = list(source)
    assert [helpers.frame_number(f.rgb) for f in frames] == list(range(10))
    assert [f.index for f in frames] == list(range(10))
    assert all(b.time_s >= a.time_s >= 0 for a, b in zip(frames, frames[1:], strict=False))
    s = source.stats
    assert (s.delivered, s.dropped, s.reconnects) == (10, 0, 5)      # 2 to come back, 3 before giving up
    assert [e["event"] for e in source.events] == [
        "disconnected", "reconnect_attempt", "reconnect_attempt", "reconnected",
        "disconnected", "reconnect_attempt", "reconnect_attempt", "reconnect_attempt", "gave_up"]
    assert "could not open" in source.events[1]["detail"] and "attempt 2/3" in source.events[2]["detail"]
    assert all(e["type"] == "source" and e["time_s"] >= 0 for e in source.events)
    assert factory.calls == 1 + 5
    assert time.monotonic() - start >= 0.9 * (0.01 + 0.02 + 0.01 + 0.02 + 0.02)   # the backoff was waited


def test_live_close_stops_the_reader_and_drains_the_queue(helpers):
    camera = helpers.FakeCapture(None, delay_s=0.001)                 # never ends
    source = open_source("camera", live=True, capture_factory=helpers.Factory(camera), queue_size=3)
    with source:
        got = [next(source).index for _ in range(3)]
    assert got == sorted(got) and source.closed
    assert not source._thread.is_alive() and camera.released.is_set()
    s = source.stats
    assert s.frames_in == s.delivered + s.dropped and s.delivered == 3 and s.in_flight == 0
    reads = camera.reads
    time.sleep(0.02)
    assert camera.reads == reads, "no reads after close"
    assert list(source) == []


def test_live_max_frames_and_new_events(helpers):
    factory = helpers.Factory(helpers.FakeCapture(3), helpers.FakeCapture(None, first=3, delay_s=0.001))
    source = open_source("camera", live=True, capture_factory=factory, max_frames=6, queue_size=50,
                         reconnect=FAST)
    seen = []
    for frame in source:
        seen.append(frame.index)
        if frame.index == 4:
            assert [e["event"] for e in source.new_events()] == ["disconnected", "reconnect_attempt", "reconnected"]
    assert seen == list(range(6)) and source.closed
    assert source.new_events() == []
    s = source.stats
    assert s.delivered == 6 and s.frames_in == s.delivered + s.dropped


def test_live_iterator_errors_reach_the_consumer():
    def frames():
        yield np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("camera driver exploded")

    source = open_source(frames(), live=True)
    with pytest.raises(RuntimeError, match="exploded"):
        list(source)
    assert source.closed and source.stats.delivered == 1


def test_first_open_failure_is_an_input_error(helpers):
    with pytest.raises(InputError, match="camera-x: cannot open"):
        open_source("camera-x", live=True, capture_factory=helpers.Factory())
