"""Result sinks: COCO RLE, JSON lines, QVHighlights lines, the annotated video, callbacks, fan-out."""

import io
import json
import math

import cv2
import numpy as np
import pytest

from tpo.errors import InputError, TPOError
from tpo.runtime.drawing import COLOURS, MASK_ALPHA, Layout, compose, timeline_span
from tpo.runtime.results import FrameResult, TrackedObject
from tpo.runtime.rle import rle_decode, rle_encode
from tpo.runtime.sinks import (
    AnnotatedVideoSink,
    CallbackSink,
    JsonlSink,
    QVHighlightsSink,
    Sinks,
    normalise_temporal_event,
)
from tpo.runtime.sources import Frame

# pycocotools (the reference in two tests) still calls np.array(copy=False) internally
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


# ------------------------------------------------------------------------------------------ RLE
def _masks(seed: int = 0):
    rng = np.random.default_rng(seed)
    yield np.zeros((1, 1), bool)
    yield np.ones((3, 5), bool)
    yield np.eye(7, dtype=bool)                                   # first pixel set: counts start with 0
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        yield rng.random((h, w)) < rng.random()
    big = np.zeros((480, 640), bool)
    big[100:300, 50:600] = True                                   # long runs: multi-group numbers
    yield big


def test_rle_round_trips_and_matches_pycocotools():
    from pycocotools import mask as coco

    for mask in _masks():
        ours = rle_encode(mask)
        ref = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["size"] == list(mask.shape)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert np.array_equal(rle_decode(ours), mask)
        assert np.array_equal(rle_decode(ref), mask)              # bytes counts, as pycocotools writes
        assert np.array_equal(coco.decode({"size": ours["size"], "counts": ours["counts"].encode()}), mask)
        assert rle_decode(ours).dtype == bool
    json.dumps(rle_encode(np.eye(4, dtype=bool)))                 # JSON-ready as is


def test_rle_uncompressed_counts_and_errors():
    from pycocotools import mask as coco

    mask = np.zeros((3, 4), bool)
    mask[1:, 2] = True
    uncompressed = {"size": [3, 4], "counts": [7, 2, 3]}           # column-major: 7 off, 2 on, 3 off
    assert np.array_equal(rle_decode(uncompressed), mask)
    assert np.array_equal(coco.decode(coco.frPyObjects(uncompressed, 3, 4)), mask)
    with pytest.raises(InputError, match="cover 11 pixels, expected 12"):
        rle_decode({"size": [3, 4], "counts": [7, 2, 2]})
    with pytest.raises(InputError, match="not in the COCO alphabet"):
        rle_decode({"size": [3, 4], "counts": "ab~"})
    with pytest.raises(InputError):
        rle_decode({"counts": "0"})
    with pytest.raises(InputError):
        rle_encode(np.zeros((2, 2, 2), bool))


# ------------------------------------------------------------------------------------------ JSONL
def test_jsonl_sink_writes_flushed_lines_to_a_part_file_then_renames(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    sink = JsonlSink(path)
    part = sink.output.write_path
    assert part.parent == path.parent and part.name.startswith(".events.jsonl.") and part.name.endswith(".part")
    sink.write_event({"type": "track", "frame": np.int64(3), "time_s": np.float32(0.25),
                      "box": np.array([1.0, 2.0, 3.0, 4.0]), "score": float("nan")})
    sink.write_event({"type": "summary", "latency_ms": {"llm": {"p50": math.inf, "p95": 2.5}}, "ok": np.bool_(True)})
    assert part.is_file() and not path.exists()
    lines = part.read_text().splitlines()                         # flushed: readable before close
    assert len(lines) == 2
    assert json.loads(lines[0]) == {"type": "track", "frame": 3, "time_s": 0.25, "box": [1, 2, 3, 4], "score": None}
    assert json.loads(lines[1])["latency_ms"]["llm"] == {"p50": None, "p95": 2.5}
    assert "NaN" not in part.read_text() and "Infinity" not in part.read_text()
    sink.close()
    assert path.is_file() and not part.exists() and sink.lines == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["events.jsonl"], "no temporary or lock file left"
    with pytest.raises(TPOError, match="after close"):
        sink.write_event({"type": "answer"})
    with pytest.raises(TPOError, match=r"event answer\.text: a object cannot be written"):
        JsonlSink(io.StringIO()).write_event({"type": "answer", "text": object()})


def test_jsonl_sink_on_a_stream_leaves_it_open():
    stream = io.StringIO()
    with JsonlSink(stream) as sink:
        sink.write_event({"type": "answer", "text": "à gauche", "task": "none"})
    assert not stream.closed
    assert json.loads(stream.getvalue()) == {"type": "answer", "text": "à gauche", "task": "none"}


# ------------------------------------------------------------------------------------------ QVHighlights
def test_normalise_temporal_event_accepts_the_qvhighlights_names():
    event = normalise_temporal_event({"type": "temporal", "pred_relevant_windows": [(1, 2, 0.5)],
                                      "pred_saliency_scores": np.array([0.1, 0.2]), "qid": 7})
    assert event == {"type": "temporal", "windows": [[1.0, 2.0, 0.5]], "saliency": [0.1, 0.2], "qid": 7}
    assert normalise_temporal_event({"type": "temporal", "windows": [[0, 1, 1]]})["saliency"] == []
    with pytest.raises(InputError, match="differ"):
        normalise_temporal_event({"windows": [[0, 1, 1]], "pred_relevant_windows": [[0, 2, 1]]})
    for bad in ([[0, 1]], [[2, 1, 0.5]], [[0, "a", 1]], 5):
        with pytest.raises(InputError):
            normalise_temporal_event({"type": "temporal", "windows": bad})


def _result(events, frame=None, objects=(), status=""):
    return FrameResult(frame, list(objects), list(events), status)


def test_qvhighlights_sink_writes_one_line_per_query_from_the_offline_answer(tmp_path):
    path = tmp_path / "preds.jsonl"
    with QVHighlightsSink(path, qid=42, query="a dog jumps", vid="clip_60.0_90.0") as sink:
        sink.write(_result([{"type": "answer", "text": "ignored"}]))
        sink.write(_result([{"type": "temporal", "event": "open", "time_s": 3.0, "score": 0.6}]))
        sink.write(_result([{"type": "temporal", "event": "close", "windows": [[3, 5, 0.4]]}]))
        sink.write(_result([{"type": "temporal", "windows": [[0, 4, 0.2], [10, 12, 0.9]], "saliency": [0.1, 0.7]},
                            {"type": "summary"}]))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"qid": 42, "query": "a dog jumps", "vid": "clip_60.0_90.0",
                      "pred_relevant_windows": [[10, 12, 0.9], [0, 4, 0.2]], "pred_saliency_scores": [0.1, 0.7]}]


def test_qvhighlights_sink_keeps_the_online_windows_of_a_stream_stopped_early(tmp_path):
    path = tmp_path / "preds.jsonl"
    with QVHighlightsSink(path, qid=1) as sink:
        sink.write_event({"type": "temporal", "event": "close", "windows": [[3, 5, 0.4]]})
        sink.write_event({"type": "temporal", "event": "close", "windows": [[8, 9, 0.8]]})
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert line["qid"] == 1 and line["pred_relevant_windows"] == [[8, 9, 0.8], [3, 5, 0.4]]


# ------------------------------------------------------------------------------------------ drawing
def _black(h=48, w=64, t=0.5, index=6):
    return Frame(index, t, np.zeros((h, w, 3), np.uint8))


def _tracked(box=(40, 10, 60, 30), mask=None, present=True, score=0.8):
    return TrackedObject(0, "the ball", list(box) if box else None, score, present, iou=0.9, mask=mask)


def test_compose_draws_mask_box_band_and_timeline_outside_the_picture():
    mask = np.zeros((48, 64), bool)
    mask[20:30, 5:25] = True
    frame = _black()
    layout = Layout.for_frame(48, 64)
    img = compose(layout, frame.rgb, [_tracked(mask=mask)], status="tracking the ball",
                  windows=[[0.25, 0.5, 1.0]], time_s=0.5, span_s=(0.0, 1.0))
    assert (frame.rgb == 0).all(), "the input frame is not drawn on"
    assert img.shape[:2] == layout.size_hw and img.shape[0] % 2 == 0 and img.shape[1] % 2 == 0
    top = layout.band_h
    picture = img[top: top + 48, :64]
    tinted = (np.array(COLOURS["mask"]) * MASK_ALPHA + 0.5).astype(np.uint8).tolist()
    assert picture[25, 10].tolist() == tinted and picture[25, 30].tolist() == [0, 0, 0]
    assert picture[20, 59].tolist() == list(COLOURS["track"])       # right edge: the last covered column
    assert picture[20, 50].tolist() == [0, 0, 0]                    # inside the box: untouched
    assert picture[-1].max() == 0, "the picture's last row is the frame's own"
    strip = img[top + 48]                                            # timeline: 0..1 s over 64 px
    assert strip[20].tolist() == list(COLOURS["window"])             # inside [0.25, 0.5]
    assert strip[5].tolist() == list(COLOURS["strip"])
    assert strip[32].tolist() == list(COLOURS["cursor"])             # t = 0.5
    band = img[:top]
    assert (band > 150).all(axis=2).sum() > 20                       # white text on the band
    low = compose(layout, frame.rgb, [], status="", windows=[[0.25, 0.5, 0.0]], time_s=0.9, span_s=(0.0, 1.0))
    assert low[top + 48, 20].tolist() == (np.array(COLOURS["window"]) * 0.35).astype(np.uint8).tolist()


def test_compose_skips_absent_objects_and_scales_a_small_mask():
    small = np.zeros((12, 16), bool)
    small[:6, :8] = True                                             # top-left quadrant
    layout = Layout.for_frame(48, 64)
    img = compose(layout, _black().rgb, [_tracked(box=None, mask=small)], status="", windows=[], time_s=0,
                  span_s=(0, 1))
    picture = img[layout.band_h: layout.band_h + 48]
    assert picture[10, 10].any() and not picture[40, 50].any()
    absent = compose(layout, _black().rgb, [_tracked(mask=small, present=False)], status="", windows=[],
                     time_s=0, span_s=(0, 1))
    assert not absent[layout.band_h: layout.band_h + 48].any()


def test_timeline_span_is_the_duration_or_scrolls():
    assert timeline_span(5.0, 20.0) == (0.0, 20.0)
    assert timeline_span(5.0, None) == (0.0, 60.0)
    assert timeline_span(100.0, None) == (40.0, 100.0)


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_annotated_video_sink_writes_a_playable_video(tmp_path, suffix):
    path = tmp_path / f"annotated{suffix}"
    mask = np.zeros((48, 64), bool)
    mask[10:30, 10:40] = True
    with AnnotatedVideoSink(path, 12, duration_s=1.0) as sink:
        sink.write(_result([{"type": "answer", "text": "the ball", "task": "track"}]))
        for i in range(8):
            frame = Frame(i, i / 12, np.full((48, 64, 3), 30, np.uint8))
            sink.write(_result([], frame, [_tracked((10, 10, 40, 30), mask)], "tracking the ball"))
        assert sink._part.exists() and not path.exists()
        sink.write(_result([], Frame(8, 8 / 12, np.full((96, 128, 3), 30, np.uint8))))   # another size: resized
        sink.write(_result([{"type": "summary"}]))                                      # the closing result
    assert path.is_file() and not sink._part.exists() and sink.frames == sink.written == 9
    frames, fps = _read(path)
    layout = Layout.for_frame(48, 64)
    assert len(frames) == 9 and fps == 12 and frames[0].shape[:2] == layout.size_hw
    bgr = frames[0][layout.band_h: layout.band_h + 48]
    inside = bgr[18:24, 15:35].reshape(-1, 3).mean(axis=0)          # masked: blue up, red down (BGR)
    outside = bgr[35:40, 50:60].reshape(-1, 3).mean(axis=0)
    assert inside[0] > outside[0] + 40 and abs(outside - 30).max() < 10
    with pytest.raises(TPOError, match="after close"):
        sink.write(_result([], _black()))


def _read(path):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames, fps


def test_annotated_video_plays_at_the_source_pace_when_frames_were_dropped(tmp_path):
    """A live source that lost frames: each frame goes to its time slot, the last one repeated in between."""
    path = tmp_path / "live.avi"
    times = [0.0, 0.1, 0.5, 0.6, 0.6, 10.0]        # a 0.3 s hole, a repeated timestamp, a clock jump
    with AnnotatedVideoSink(path, 10, max_gap_s=1.0) as sink:
        for i, t in enumerate(times):
            sink.write(_result([], Frame(i, t, np.full((48, 64, 3), 20 * i, np.uint8))))
    frames, fps = _read(path)
    assert fps == 10 and sink.frames == 6
    # slots: 0, 1, (2, 3, 4 repeat frame 1), 5, 6, 7 (a repeated time still gets a slot of its own), then at
    # most 1 s (10 slots) of repeats before the frame after the jump
    assert len(frames) == sink.written == 1 + 1 + 3 + 1 + 1 + 1 + 10 + 1
    layout = Layout.for_frame(48, 64)
    level = [int(round(f[layout.band_h + 24, 32].mean() / 20)) for f in frames]
    assert level[:8] == [0, 1, 1, 1, 1, 2, 3, 4] and set(level[8:18]) == {4} and level[-1] == 5


def test_annotated_video_sink_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(InputError, match=r"out\.mkv: video suffix must be one of .mp4, .avi"):
        AnnotatedVideoSink(tmp_path / "out.mkv", 25)
    with pytest.raises(InputError, match="fps"):
        AnnotatedVideoSink(tmp_path / "out.mp4", 0)
    with AnnotatedVideoSink(tmp_path / "none.mp4", 25) as sink:
        sink.write(_result([{"type": "summary"}]))
    assert not list(tmp_path.iterdir()), "no frame, no video"


def test_video_sink_draws_online_windows(tmp_path):
    sink = AnnotatedVideoSink(tmp_path / "w.avi", 10, duration_s=1.0)
    sink.write(_result([{"type": "temporal", "event": "open", "time_s": 0.25, "score": 0.7}]))
    assert sink._open_start == 0.25
    sink.write(_result([{"type": "temporal", "event": "close", "windows": [[0.25, 0.5, 0.7]]}]))
    assert sink.windows == [[0.25, 0.5, 0.7]] and sink._open_start is None
    sink.close()


# ------------------------------------------------------------------------------------------ callback, fan-out
def test_callback_sink_passes_results_and_reports_failures():
    seen = []
    result = _result([{"type": "answer", "text": "x"}], _black())
    CallbackSink(seen.append).write(result)
    assert seen == [result]

    def on_result(result):
        raise ValueError("bad value\nsecond line")

    with pytest.raises(TPOError) as err:
        CallbackSink(on_result).write(_result([{"type": "track"}], _black()))
    message = str(err.value)
    assert "on_result" in message and "frame 6" in message and "ValueError: bad value" in message
    assert "\n" not in message and isinstance(err.value.__cause__, ValueError)


def test_sinks_fan_out_results_and_close_every_sink(tmp_path):
    seen = []

    class Recorder:
        def write(self, result):
            seen.append(("recorder", result.index))

        def close(self, partial=False):
            raise OSError("disk full")

    jsonl = JsonlSink(tmp_path / "e.jsonl")
    sinks = Sinks([jsonl, CallbackSink(lambda r: seen.append(("callback", r.index))), Recorder()])
    sinks.write(_result([{"type": "answer", "text": "hi", "task": "track"}, {"type": "track", "frame": 6}],
                        _black()))
    sinks.write(_result([{"type": "summary"}]))
    assert seen == [("callback", 6), ("recorder", 6), ("callback", None), ("recorder", None)]
    with pytest.raises(OSError, match="disk full"):
        sinks.close()
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 3, "the other sinks were closed"
