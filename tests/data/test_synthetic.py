"""The synthetic clip generator: determinism, ground-truth consistency, files written and read back."""

import json
import math

import numpy as np
import pytest

from tpo.data import files as data_module
from tpo.data.cli import main as data_main
from tpo.data.files import (
    CATEGORIES,
    ROLES,
    ROUTES,
    TASKS,
    ClipSpec,
    SceneConfig,
    category_id,
    load_dataset,
    make_clip,
    make_dataset,
    object_footprint,
    qvhighlights_clip_labels,
    seen_when_sampled,
    visible_spans,
    well_visible,
)
from tpo.errors import ConfigError, InputError
from tpo.model.tokenizer import NUMBER_WORDS

# Small frames (width != height so a swapped axis fails), short clips, low fps: fast on 2 cores.
CFG = SceneConfig(width=96, height=72, fps_range=(8, 11), duration_range_s=(4.0, 5.0),
                  size_range_px=(12.0, 30.0), speed_range_px_s=(15.0, 45.0))
SEED = 11
# pycocotools 2.0.x decoding under numpy 2 emits a harmless DeprecationWarning per call
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def clips():
    return [make_clip(i, SEED, CFG) for i in range(12)]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "a"
    make_dataset(out, clips=3, seed=SEED, config=CFG)
    return out


def test_same_seed_same_clip_and_clips_are_independent():
    a, b = make_clip(3, SEED, CFG), make_clip(3, SEED, CFG)
    assert a.spec == b.spec and a.queries == b.queries and a.spans == b.spans
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert make_clip(3, SEED + 1, CFG).spec != a.spec
    assert make_clip(4, SEED, CFG).spec != a.spec


def test_shapes_dtypes_and_ranges(clips):
    for c in clips:
        s = c.spec
        t, n = s.num_frames, len(s.objects)
        assert c.frames.shape == (t, 72, 96, 3) and c.frames.dtype == np.uint8
        assert c.labels.shape == (t, 72, 96) and c.labels.dtype == np.uint8
        assert c.boxes.shape == (t, n, 4) and c.boxes.dtype == np.float32
        assert c.areas.shape == (t, n) and c.occluded.shape == (t, n)
        assert c.mask(0, 0).shape == (72, 96) and c.masks(0).shape == (t, 72, 96)
        assert 8 <= s.fps <= 11 and 4.0 <= s.duration_s <= 5.0 and 2 <= n <= 5
        assert len({(o.colour, o.shape) for o in s.objects}) == n
        assert all(12.0 <= o.size_px <= 30.0 for o in s.objects)
        assert s.background in ("plain", "noise")


def test_spec_round_trips_through_json(clips):
    for c in clips:
        assert ClipSpec.from_dict(json.loads(json.dumps(c.spec.to_dict()))) == c.spec


def test_boxes_are_the_visible_mask_extents(clips):
    for c in clips:
        for k in range(len(c.spec.objects)):
            m = c.masks(k)
            for t in range(c.num_frames):
                if not m[t].any():
                    assert c.box(t, k) is None and np.isnan(c.boxes[t, k]).all() and c.areas[t, k] == 0
                    continue
                ys, xs = np.nonzero(m[t])
                assert c.box(t, k) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                assert c.areas[t, k] == m[t].sum()


def test_spans_match_per_frame_visibility(clips):
    for c in clips:
        for k in range(len(c.spec.objects)):
            rebuilt = np.zeros(c.num_frames, bool)
            for s, e in c.spans[k]:
                assert 0 <= s < e <= c.duration_s
                rebuilt[round(s * c.fps):round(e * c.fps)] = True
            assert np.array_equal(rebuilt, c.visible[:, k])
            assert sum(e - s for s, e in c.spans[k]) >= CFG.min_visible_s - 1e-3
    assert visible_spans(np.array([0, 1, 1, 0, 1], bool), 10) == [(1 / 10, 3 / 10), (4 / 10, 5 / 10)]


def test_occlusion_hides_exactly_what_is_in_front(clips):
    seen = 0
    for c in clips[:6]:
        objs = c.spec.objects
        for t in range(0, c.num_frames, 3):
            feet = [object_footprint(c.spec, k, t) for k in range(len(objs))]
            for k, o in enumerate(objs):
                front = np.zeros_like(feet[k])
                for j, p in enumerate(objs):
                    if p.z > o.z:
                        front |= feet[j]
                assert np.array_equal(c.mask(t, k), feet[k] & ~front)
                assert c.occluded[t, k] == bool((feet[k] & front).any())
                if c.occluded[t, k]:
                    seen += 1
                    assert c.areas[t, k] < feet[k].sum()
    assert seen > 0, "no occlusion in the sampled clips: the test would prove nothing"


def test_frames_paint_object_colours_over_the_background(clips):
    c = clips[0]
    for k, o in enumerate(c.spec.objects):
        assert (c.frames[c.masks(k)] == o.rgb).all()
    bg = c.frames[c.labels == 0]
    assert bg.max() <= 80  # dark


def test_queries_are_balanced_and_match_the_ground_truth(clips):
    for ci, c in enumerate(clips):
        objs = c.spec.objects
        assert [q.task for q in c.queries] == list(TASKS) * CFG.queries_per_task
        assert len({q.qid for q in c.queries}) == len(c.queries)
        for q in c.queries:
            assert q.route == ROUTES[q.task] and q.vid == c.name and q.qid // 100 == ci
            o = objs[q.object_id] if q.object_id is not None else None
            if q.task == "track":
                assert q.question == f"track the {o.colour} {o.shape}"
                assert well_visible(c, q.object_id)[0]
            elif q.task == "region":
                assert q.question == f"where is the {o.colour} {o.shape}?"
                assert q.box == c.box(q.frame, q.object_id) and q.box is not None
                assert c.areas[q.frame, q.object_id] >= 0.5 * c.areas[:, q.object_id].max()
            elif q.task == "temporal":
                assert q.question == f"when does the {o.colour} {o.shape} appear?"
                assert list(q.spans) == c.spans[q.object_id] and o.role in ("window", "return")
            elif q.question == "how many shapes are there?":
                assert q.answer == NUMBER_WORDS[len(objs)] and q.route == "none" and c.spec.countable
                assert all(seen_when_sampled(c, k) for k in range(len(objs)))
            elif q.question.startswith("what colour"):
                assert q.question == f"what colour is the {o.shape}?" and q.answer == o.colour
                assert sum(p.shape == o.shape for p in objs) == 1
            else:
                assert q.question == f"what shape is the {o.colour} object?" and q.answer == o.shape
                assert sum(p.colour == o.colour for p in objs) == 1
            if q.task == "conversation" and q.object_id is not None:
                assert seen_when_sampled(c, q.object_id)      # any 8 even samples show the object asked about


def test_spread_has_entering_leaving_multi_span_and_occlusion(clips):
    temporal = [(c, q) for c in clips for q in c.queries if q.task == "temporal"]
    assert all(list(q.spans) != [(0.0, c.duration_s)] for c, q in temporal)      # never the whole clip
    assert any(len(q.spans) > 1 for c, q in temporal)
    assert sum(c.occluded.any() for c in clips) >= 3
    assert any(s[0][0] > 0 for c in clips for s in c.spans)                       # enters late
    assert any(s[-1][1] < c.duration_s for c in clips for s in c.spans)            # leaves early
    assert len({q.answer for c in clips for q in c.queries if q.task == "conversation"}) >= 3
    roles = {o.role for c in clips for o in c.spec.objects}
    assert roles == set(ROLES)
    returning = [(c, k) for c in clips for k, o in enumerate(c.spec.objects) if o.role == "return"]
    assert returning and all(c.visible[0, k] and c.visible[-1, k] and not c.visible[:, k].all() for c, k in returning)


def test_every_clip_has_several_objects_and_two_in_view_at_the_start(clips):
    for c in clips:
        assert len(c.spec.objects) >= 2
        at_start = [k for k, o in enumerate(c.spec.objects) if o.role != "window"]
        assert len(at_start) >= 2 and all(c.visible[0, k] for k in at_start)


def test_temporal_spans_are_short_and_anywhere():
    """Default scenes: every temporal query's longest span is 10-60 % of the clip (a few frames' slack for the
    entry and exit), the spans start anywhere, and a whole-clip answer reaches IoU 0.5 on few of them."""
    clips = [make_clip(i, 5) for i in range(16)]
    fractions, starts, whole = [], [], []
    for c in clips:
        for q in (q for q in c.queries if q.task == "temporal"):
            longest = max(e - s for s, e in q.spans)
            fractions.append(longest / c.duration_s)
            starts += [s / c.duration_s for s, _ in q.spans]
            whole.append(longest / c.duration_s >= 0.5)       # IoU of [0, duration] with the best span
    slack = 2 / 8                                              # two frames at the lowest fps, in seconds
    assert all(0.1 - slack / 6 <= f <= 0.6 + slack / 6 for f in fractions), fractions
    assert min(starts) == 0.0 and max(starts) > 0.5
    assert np.mean(whole) < 0.2


def test_conversation_answers_are_balanced():
    """No constant answer wins: over 60 clips the most common answer of each question type is a minority."""
    answers: dict[str, list[str]] = {}
    for i in range(60):
        for q in make_clip(i, SEED, CFG).queries:
            if q.task == "conversation":
                answers.setdefault(" ".join(q.question.split()[:2]), []).append(q.answer)
    assert set(answers) == {"how many", "what colour", "what shape"}
    for kind, given in answers.items():
        top = max(given.count(a) for a in set(given))
        assert top / len(given) <= 0.5, (kind, given)
    assert set(answers["how many"]) == {"two", "three", "four", "five"}


def test_qvhighlights_clip_labels_rule():
    # 7 s at 2 s clips -> 3 clips; visible 0.5-3.2 covers clip 0 by 75 %, clip 1 by 60 %
    ids, scores = qvhighlights_clip_labels([(0.5, 3.2)], 7.0)
    assert ids == [0, 1] and scores == [[3, 3, 3], [2, 2, 2]]
    assert qvhighlights_clip_labels([(6.1, 7.0)], 7.0) == ([], [])   # beyond the last whole clip
    assert qvhighlights_clip_labels([(1.6, 2.1)], 7.0) == ([0], [[1, 1, 1]])   # fallback: longest overlap


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="fps_range"):
        SceneConfig(fps_range=(10, 5))
    with pytest.raises(ConfigError, match="size_range_px"):
        SceneConfig(width=64, height=48, size_range_px=(20.0, 50.0))
    with pytest.raises(ConfigError, match="unknown keys"):
        SceneConfig.from_dict({"widht": 3})
    with pytest.raises(ConfigError, match="seed"):
        make_clip(0, -1, CFG)


# ---- files ---------------------------------------------------------------------------------------------


def test_files_are_written(dataset_dir):
    names = sorted(p.name for p in (dataset_dir / "videos").iterdir())
    assert names == ["clip_00000.mp4", "clip_00001.mp4", "clip_00002.mp4"]
    for f in ("coco.json", "qvhighlights.jsonl", "queries.jsonl", "clips.jsonl"):
        assert (dataset_dir / "annotations" / f).stat().st_size > 0
    meta = json.loads((dataset_dir / "meta.json").read_text())
    assert meta["seed"] == SEED and meta["clips"] == 3 and meta["video_codec"] == "mp4v"
    assert meta["counts"]["queries_per_task"] == {t: 3 for t in TASKS}
    assert SceneConfig.from_dict(meta["config"]) == CFG


def test_same_seed_gives_byte_identical_annotations(dataset_dir, tmp_path):
    make_dataset(tmp_path / "b", clips=3, seed=SEED, config=CFG)
    for f in [f"annotations/{name}" for name in data_module.ANNOTATION_FILES] + ["meta.json"]:
        assert (dataset_dir / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_read_back_gives_the_same_ground_truth(dataset_dir):
    ds = load_dataset(dataset_dir)
    assert [c.name for c in ds.clips] == ["clip_00000", "clip_00001", "clip_00002"]
    for i, c in enumerate(ds.clips):
        g = make_clip(i, SEED, CFG)
        assert c.spec == g.spec and c.queries == g.queries and c.spans == g.spans
        assert np.array_equal(c.labels, g.labels) and np.array_equal(c.areas, g.areas)
        assert np.array_equal(c.boxes, g.boxes, equal_nan=True) and np.array_equal(c.occluded, g.occluded)
        assert c.frames.shape == g.frames.shape
        assert np.abs(c.frames.astype(np.int16) - g.frames).mean() < 8   # mp4v is lossy, but close
    exact = load_dataset(dataset_dir, frames="render")
    assert np.array_equal(exact.clips[1].frames, make_clip(1, SEED, CFG).frames)
    assert load_dataset(dataset_dir, frames="none").clips[0].frames is None
    assert len(ds.queries) == 12


def test_coco_rle_decodes_to_the_masks(dataset_dir):
    from pycocotools import mask as mask_util

    coco = json.loads((dataset_dir / "annotations" / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == [f"{c} {s}" for c, s in CATEGORIES]
    assert len({im["id"] for im in coco["images"]}) == len(coco["images"])
    images = {im["id"]: im for im in coco["images"]}
    clips = {i + 1: make_clip(i, SEED, CFG) for i in range(3)}
    assert len(coco["annotations"]) == sum(int(c.visible.sum()) for c in clips.values())
    tracks = {}
    for a in coco["annotations"]:
        c, t, k = clips[a["video_id"]], a["frame_id"], a["object_id"]
        assert images[a["image_id"]]["frame_id"] == t and images[a["image_id"]]["video_id"] == a["video_id"]
        m = mask_util.decode(a["segmentation"]).astype(bool)
        assert np.array_equal(m, c.mask(t, k))
        x1, y1, x2, y2 = c.box(t, k)
        assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1] == list(mask_util.toBbox(a["segmentation"]))
        assert a["area"] == m.sum() == mask_util.area(a["segmentation"])
        o = c.spec.objects[k]
        assert a["category_id"] == category_id(o.colour, o.shape)
        tracks.setdefault((a["video_id"], k), set()).add(a["track_id"])
    assert all(len(v) == 1 for v in tracks.values())
    assert len({next(iter(v)) for v in tracks.values()}) == len(tracks)


def test_qvhighlights_lines_are_valid(dataset_dir):
    lines = [json.loads(s) for s in (dataset_dir / "annotations" / "qvhighlights.jsonl").read_text().splitlines()]
    queries = [json.loads(s) for s in (dataset_dir / "annotations" / "queries.jsonl").read_text().splitlines()]
    temporal = {q["qid"]: q for q in queries if q["task"] == "temporal"}
    assert len(lines) == len(temporal) == 3
    for d in lines:
        assert set(d) == {"qid", "query", "vid", "duration", "relevant_windows", "relevant_clip_ids",
                          "saliency_scores"}
        q = temporal[d["qid"]]
        assert d["query"] == q["question"] and d["vid"] == q["vid"] and d["relevant_windows"] == q["spans"]
        w = np.array(d["relevant_windows"])
        assert (w[:, 0] < w[:, 1]).all() and w.min() >= 0 and w.max() <= d["duration"]
        assert (w[1:, 0] >= w[:-1, 1]).all()                                    # sorted, disjoint
        # as QVHighlights' mk_gt_scores uses them (clip length 2 s)
        num_clips = int(d["duration"] / 2)
        full = np.zeros((num_clips, 3))
        full[np.array(d["relevant_clip_ids"], int)] = np.array(d["saliency_scores"]).reshape(-1, 3)
        assert d["relevant_clip_ids"] and full.max() <= 4 and full.min() >= 0
        assert d["relevant_clip_ids"] == sorted(set(d["relevant_clip_ids"]))


def test_refuses_a_non_empty_folder_and_overwrites_on_request(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        make_dataset(tmp_path, clips=1, seed=0, config=CFG)
    with pytest.raises(InputError, match="not a tpo-data dataset"):
        make_dataset(tmp_path, clips=1, seed=0, config=CFG, overwrite=True)
    out = tmp_path / "ds"
    make_dataset(out, clips=2, seed=0, config=CFG)
    make_dataset(out, clips=1, seed=0, config=CFG, overwrite=True)
    assert len(list((out / "videos").iterdir())) == 1


def test_falls_back_to_mjpg_avi_loudly(tmp_path, monkeypatch, capsys):
    real = data_module._open_writer

    def no_mp4v(path_stem, fps, size_wh, codec):
        return (None, path_stem.with_suffix(".mp4")) if codec == "mp4v" else real(path_stem, fps, size_wh, codec)

    monkeypatch.setattr(data_module, "_open_writer", no_mp4v)
    with pytest.warns(RuntimeWarning, match="mp4v"):
        meta = make_dataset(tmp_path / "d", clips=1, seed=SEED, config=CFG)
    assert "WARNING" in capsys.readouterr().err
    assert meta["video_codec"] == "MJPG" and (tmp_path / "d" / "videos" / "clip_00000.avi").is_file()
    c = load_dataset(tmp_path / "d").clips[0]
    assert np.abs(c.frames.astype(np.int16) - make_clip(0, SEED, CFG).frames).mean() < 8


def test_cli_make_and_info(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["make", "--out", out, "--clips", "1", "--seed", "2", "--width", "80", "--height", "64",
            "--size-range-px", "10", "24", "--duration-range-s", "4", "4.5", "--fps-range", "8", "8", "--json"]
    assert data_main(args) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["config"]["width"] == 80 and meta["config"]["fps_range"] == [8, 8]
    assert data_main(["info", out]) == 0
    assert "1 clips, seed 2" in capsys.readouterr().out
    assert data_main(args) == 2                                   # not empty
    assert "not empty" in capsys.readouterr().err
    assert data_main(["info", str(tmp_path / "nothing")]) == 2


def test_default_config_clip_is_quick_and_in_range():
    c = make_clip(0, 0)
    assert c.frames.shape[1:] == (240, 320, 3)
    assert 8 <= c.fps <= 15 and 6.0 <= c.duration_s <= 12.0
    assert math.isclose(c.duration_s, c.num_frames / c.fps)
