"""Result sinks: COCO RLE, JSON lines, QVHighlights lines, the annotated video, callbacks, fan-out."""

import io
import json
import math

import cv2
import numpy as np
import pytest

from tpo.errors import InputError, TPOError
from tpo.runtime.rle import rle_decode, rle_encode
from tpo.runtime.sinks import (
    COLOURS,
    MASK_ALPHA,
    AnnotatedVideoSink,
    CallbackSink,
    JsonlSink,
    QVHighlightsSink,
    Sinks,
    annotate,
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
    part = tmp_path / "out" / "events.jsonl.part"
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


def test_qvhighlights_sink_lines(tmp_path):
    path = tmp_path / "preds.jsonl"
    with QVHighlightsSink(path, qid=42, query="a dog jumps", vid="clip_60.0_90.0") as sink:
        sink.write_event({"type": "answer", "text": "ignored"})
        sink.write_event({"type": "temporal", "windows": [[0, 4, 0.2], [10, 12, 0.9]], "saliency": [0.1, 0.7]})
        sink.write_event({"type": "temporal", "qid": 43, "pred_relevant_windows": [[1, 2, 0.3]]})
        sink.write_event({"type": "temporal", "event": "open", "time_s": 3.0})
        sink.write_event({"type": "temporal", "event": "close", "windows": [[3, 5, 0.4]]})
        sink.write_event({"type": "temporal", "event": "close", "windows": [[8, 9, 0.8]], "saliency": [0.5]})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"qid": 42, "query": "a dog jumps", "vid": "clip_60.0_90.0",
                        "pred_relevant_windows": [[10, 12, 0.9], [0, 4, 0.2]], "pred_saliency_scores": [0.1, 0.7]}
    assert lines[1]["qid"] == 43 and lines[1]["pred_relevant_windows"] == [[1, 2, 0.3]]
    assert lines[2]["pred_relevant_windows"] == [[8, 9, 0.8], [3, 5, 0.4]] and lines[2]["pred_saliency_scores"] == [0.5]
    assert len(lines) == 3 and all(list(line) == ["qid", "query", "vid", "pred_relevant_windows",
                                                  "pred_saliency_scores"] for line in lines)


# ------------------------------------------------------------------------------------------ drawing
def _black(h=48, w=64, t=0.5):
    return Frame(6, t, np.zeros((h, w, 3), np.uint8))


def test_annotate_draws_mask_box_and_timeline():
    mask = np.zeros((48, 64), bool)
    mask[20:30, 5:25] = True
    track = {"type": "track", "frame": 6, "time_s": 0.5, "box": [40, 10, 60, 30], "score": 0.8,
             "mask_rle": rle_encode(mask)}
    frame = _black()
    img = annotate(frame, [track], windows=[[0.25, 0.5, 1.0]], duration_s=1.0)
    assert (frame.rgb == 0).all(), "the input frame is not drawn on"
    tinted = (np.array(COLOURS["mask"]) * MASK_ALPHA + 0.5).astype(np.uint8).tolist()
    assert img[25, 10].tolist() == tinted and img[25, 30].tolist() == [0, 0, 0]
    assert img[20, 60].tolist() == list(COLOURS["track"])         # right edge of the box
    assert img[20, 50].tolist() == [0, 0, 0]                      # inside the box: untouched
    strip = img[-1]                                               # timeline: 0..1 s over 64 px
    assert strip[20].tolist() == list(COLOURS["window"])          # inside [0.25, 0.5]
    assert strip[5].tolist() == list(COLOURS["strip"])
    assert strip[32].tolist() == list(COLOURS["cursor"])          # t = 0.5
    same = annotate(frame, [{**track, "mask_rle": None, "mask": mask}], windows=[[0.25, 0.5, 1.0]], duration_s=1.0)
    assert np.array_equal(same, img), "a boolean mask draws like its RLE"

    low = annotate(frame, [], windows=[[0.25, 0.5, 0.0]], duration_s=1.0)
    assert low[-1, 20].tolist() == (np.array(COLOURS["window"]) * 0.35).astype(np.uint8).tolist()
    with_answer = annotate(frame, [], answer="the cup on the left", timeline=False)
    assert (with_answer[:24] > 150).all(axis=2).sum() > 20 and with_answer[24:].max() == 0   # white text, top


def test_annotate_scales_a_small_mask_and_skips_missing_boxes():
    small = np.zeros((12, 16), bool)
    small[:6, :8] = True                                          # top-left quadrant
    img = annotate(_black(), [{"type": "track", "box": None, "score": 0.1, "mask_rle": rle_encode(small)}],
                   timeline=False)
    assert img[10, 10].any() and not img[40, 50].any()


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_annotated_video_sink_writes_a_playable_video(tmp_path, suffix):
    path = tmp_path / f"annotated{suffix}"
    mask = np.zeros((48, 64), bool)
    mask[10:30, 10:40] = True
    with AnnotatedVideoSink(path, 12, (48, 64), duration_s=1.0) as sink:
        assert sink._part.exists() and not path.exists()
        sink.write_event({"type": "answer", "text": "the ball", "task": "track"})
        sink.write_event({"type": "temporal", "pred_relevant_windows": [[0.0, 0.5, 0.9]]})
        for i in range(8):
            event = {"type": "track", "frame": i, "time_s": i / 12, "box": [10, 10, 40, 30], "score": 0.9,
                     "mask_rle": rle_encode(mask)}
            sink.write(Frame(i, i / 12, np.full((48, 64, 3), 30, np.uint8)), [event])
        sink.write(Frame(8, 8 / 12, np.full((96, 128, 3), 30, np.uint8)), [])   # another size: resized
    assert path.is_file() and not sink._part.exists() and sink.frames == 9
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 9
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    inside = bgr[18:24, 15:35].reshape(-1, 3).mean(axis=0)       # masked: blue up, red down (BGR)
    outside = bgr[35:40, 50:60].reshape(-1, 3).mean(axis=0)
    assert inside[0] > outside[0] + 40 and abs(outside - 30).max() < 10
    with pytest.raises(TPOError, match="after close"):
        sink.write(_black(), [])


def test_annotated_video_sink_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(InputError, match=r"out\.mkv: video suffix must be one of .mp4, .avi"):
        AnnotatedVideoSink(tmp_path / "out.mkv", 25, (48, 64))
    with pytest.raises(InputError, match="fps"):
        AnnotatedVideoSink(tmp_path / "out.mp4", 0, (48, 64))
    assert not list(tmp_path.iterdir())


def test_video_sink_draws_online_windows(tmp_path):
    sink = AnnotatedVideoSink(tmp_path / "w.avi", 10, (48, 64), duration_s=1.0)
    sink.write_event({"type": "temporal", "event": "open", "time_s": 0.25})
    assert sink._open_start == 0.25
    sink.write_event({"type": "temporal", "event": "close", "windows": [[0.25, 0.5, 1.0]]})
    assert sink.windows == [[0.25, 0.5, 1.0]] and sink._open_start is None
    sink.close()


# ------------------------------------------------------------------------------------------ callback, fan-out
def test_callback_sink_passes_events_and_reports_failures():
    seen = []
    CallbackSink(seen.append).write_event({"type": "answer", "text": "x"})
    assert seen == [{"type": "answer", "text": "x"}]

    def on_event(event):
        raise ValueError("bad value\nsecond line")

    with pytest.raises(TPOError) as err:
        CallbackSink(on_event).write_event({"type": "track"})
    message = str(err.value)
    assert "on_event" in message and "track event" in message and "ValueError: bad value" in message
    assert "\n" not in message and isinstance(err.value.__cause__, ValueError)


def test_sinks_fan_out_events_to_all_and_frames_to_frame_sinks(tmp_path):
    seen, frames = [], []

    class FrameRecorder:
        takes_frames = True

        def write_event(self, event):
            seen.append(("recorder", event["type"]))

        def write(self, frame, events):
            frames.append((frame.index, [e["type"] for e in events]))

        def close(self):
            raise OSError("disk full")

    jsonl = JsonlSink(tmp_path / "e.jsonl")
    sinks = Sinks([jsonl, CallbackSink(lambda e: seen.append(("callback", e["type"]))), FrameRecorder()])
    sinks.write_event({"type": "answer", "text": "hi", "task": "track"})
    track = {"type": "track", "frame": 0, "box": None}
    sinks.write_event(track)
    sinks.write(_black(), [track])
    assert seen == [("callback", "answer"), ("recorder", "answer"), ("callback", "track"), ("recorder", "track")]
    assert frames == [(6, ["track"])]
    with pytest.raises(OSError, match="disk full"):
        sinks.close()
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 2, "the other sinks were closed"
