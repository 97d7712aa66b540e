"""`tpo-eval`: the scoring rules (stub models with known answers), the real model end to end, the CLI."""

import json

import numpy as np
import pytest
import torch

from tpo.data.files import ROUTES, SceneConfig, load_dataset, make_dataset
from tpo.data.metrics import PERFECT_SUCCESS_AUC
from tpo.errors import CheckpointError, InputError
from tpo.model.checkpoint import INDEX_NAME, default_checkpoint, save_checkpoint
from tpo.model.config import load_config
from tpo.model.generate import GenerationResult, run_head
from tpo.model.heads import RegionResult, TemporalResult, TrackResult
from tpo.model.tokenizer import load_tokenizer, resolve_tokenizer_dir
from tpo.model.tpo_model import build_model
from tpo.train import evaluate as evaluate_module
from tpo.train.eval_cli import main as eval_main
from tpo.train.evaluate import ROUTE_NAMES, evaluate

# Small frames (width != height), short clips at low fps (the tracker runs on every frame): fast on
# 2 cores. Seed 5 gives one clip with one object and one with four and a two-span temporal query.
CFG = SceneConfig(width=96, height=72, fps_range=(6, 8), duration_range_s=(3.0, 3.5), size_range_px=(12.0, 30.0),
                  speed_range_px_s=(15.0, 45.0), qvh_clip_length_s=1.0)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalds") / "ds"
    make_dataset(out, clips=2, seed=5, config=CFG)
    return out


@pytest.fixture(scope="module")
def dataset(data_dir):
    return load_dataset(data_dir, frames="video")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    return build_model(cfg), load_tokenizer(cfg.tokenizer)


def scripted_generate(dataset, answer):
    """A stand-in for `generate` that walks the dataset's queries in evaluate's order and returns
    answer(query, clip, video) for each."""
    clips = {c.name: c for c in dataset.clips}
    queries = iter(dataset.queries)

    def fake(model, tokenizer, video, question, **kw):
        q = next(queries)
        assert question == q.question
        assert video.frames.shape[0] == (1 if q.task == "region" else clips[q.vid].num_frames)
        return answer(q, clips[q.vid], video)

    return fake


def perfect_result(q, clip, task: str) -> GenerationResult:
    """Every head's output equal to the query's ground truth, first trigger `task`."""
    res = GenerationResult(text=q.answer, raw_text=q.answer, task=task, token_ids=[])
    if q.task == "region":
        res.region.append(RegionResult(box_xyxy=list(q.box), box_normalised=[0.0] * 4, frame=0))
    elif q.task == "temporal":
        res.temporal.append(TemporalResult(windows=[[s, e, 1.0] for s, e in q.spans], saliency=[], clip_len_s=2.0))
    elif q.task == "track":
        boxes = [None if clip.box(t, q.object_id) is None else list(clip.box(t, q.object_id))
                 for t in range(clip.num_frames)]
        res.track.append(TrackResult(masks=clip.masks(q.object_id), boxes=boxes, scores=[1.0] * clip.num_frames))
    return res


def all_task_metrics(m: dict) -> dict[str, float]:
    return {f"{task}/{k}": v for task in ("track", "region", "temporal", "conversation") for k, v in m[task].items()}


def test_perfect_answers_score_one(dataset, monkeypatch):
    fake = scripted_generate(dataset, lambda q, clip, video: perfect_result(q, clip, q.route))
    monkeypatch.setattr(evaluate_module, "generate", fake)
    out = evaluate(None, None, dataset)
    m = out["metrics"]
    assert m["routing_accuracy"] == 1.0
    scores = all_task_metrics(m)
    assert scores.pop("track/success_AUC") == pytest.approx(PERFECT_SUCCESS_AUC)   # OTB's 20/21, see metrics
    assert scores.pop("track/success_AUC_multi") == pytest.approx(PERFECT_SUCCESS_AUC)
    assert scores == dict.fromkeys(scores, 1.0)
    assert set(m["temporal"]) == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "mAP", "mAP@0.5", "mAP@0.75"}
    assert {"success_AUC", "precision@20px", "J", "F", "J&F", "success_AUC_multi"} <= set(m["track"]) <= {"success_AUC", "precision@20px", "J", "F", "J&F",
                                                      "success_AUC_multi", "absent_accuracy", "J&F_small",
                                                      "J&F_large"}
    assert "J&F_small" in m["track"] or "J&F_large" in m["track"]
    assert set(m["region"]) == {"Acc@0.5", "mIoU"}
    # every blind baseline scores below the perfect model: positive margins everywhere
    for task, values in out["margins"].items():
        for name, rec in ([(task, values)] if "margin" in values else values.items()):
            assert rec["margin"] >= 0, (task, name, rec)
    c = out["counts"]
    assert c["clips"] == 2 and c["queries"] == len(dataset.queries) == sum(c["queries_per_task"].values())
    assert c["routed_correctly"] == c["queries_per_task"]
    for task, n in c["queries_per_task"].items():
        assert c["confusion"][ROUTES[task]] == {r: n * (r == ROUTES[task]) for r in ROUTE_NAMES}


def test_routing_nothing_scores_only_conversation(dataset, monkeypatch):
    def answer(q, clip, video):
        return GenerationResult(text=q.answer, raw_text=q.answer, task="none", token_ids=[])

    monkeypatch.setattr(evaluate_module, "generate", scripted_generate(dataset, answer))
    m = evaluate(None, None, dataset)["metrics"]
    conversation = sum(q.task == "conversation" for q in dataset.queries)
    assert m["routing_accuracy"] == pytest.approx(conversation / len(dataset.queries))
    scores = all_task_metrics(m)
    assert scores.pop("conversation/exact_match") == 1.0
    assert scores == dict.fromkeys(scores, 0.0)


def test_wrong_first_trigger_is_a_miss_even_with_the_right_head_output(dataset, monkeypatch):
    """The right head's perfect output does not count when the first trigger was another task."""
    wrong = {"track": "region", "region": "temporal", "temporal": "track", "none": "track"}
    fake = scripted_generate(dataset, lambda q, clip, video: perfect_result(q, clip, wrong[q.route]))
    monkeypatch.setattr(evaluate_module, "generate", fake)
    out = evaluate(None, None, dataset, records=True)
    assert out["metrics"]["routing_accuracy"] == 0.0
    scores = all_task_metrics(out["metrics"])
    assert scores == dict.fromkeys(scores, 0.0)
    assert out["counts"]["routed_correctly"] == dict.fromkeys(out["counts"]["routed_correctly"], 0)
    assert all(not r["route_correct"] and r["routed"] == wrong[r["route"]] for r in out["records"])
    assert "miss" in out["scoring"]


def test_tasks_and_max_clips_select_queries(dataset, monkeypatch):
    first = [q for q in dataset.clips[0].queries if q.task in ("region", "conversation")]
    fake_queries = iter(first)

    def fake(model, tokenizer, video, question, **kw):
        q = next(fake_queries)
        return perfect_result(q, dataset.clips[0], q.route)

    monkeypatch.setattr(evaluate_module, "generate", fake)
    out = evaluate(None, None, dataset, max_clips=1, tasks=["region", "conversation"], records=True)
    assert set(out["metrics"]) == {"routing_accuracy", "region", "conversation"}
    assert out["counts"]["clips"] == 1 and out["counts"]["queries"] == len(first)
    assert set(out["counts"]["confusion"]) == {"region", "none"}
    assert [r["qid"] for r in out["records"]] == [q.qid for q in first]
    json.dumps(out)


@pytest.mark.parametrize("kw, match", [
    ({"tasks": ["tracking"]}, "choose one or more of"),
    ({"tasks": []}, "choose one or more of"),
    ({"max_clips": 0}, "max_clips"),
])
def test_bad_arguments_are_refused(dataset, kw, match):
    with pytest.raises(InputError, match=match):
        evaluate(None, None, dataset, **kw)


def test_dataset_without_frames_is_refused(data_dir):
    with pytest.raises(InputError, match="no frames"):
        evaluate(None, None, load_dataset(data_dir, frames="none"))


def test_real_heads_outputs_are_scored_in_range(tiny, dataset, monkeypatch):
    """Route every query right and run the real (random-weight) heads: shapes and types fit the metrics."""
    model, tok = tiny

    def answer(q, clip, video):
        res = GenerationResult(text="", raw_text="", task=q.route, token_ids=[])
        if q.route != "none":
            h = model.task_embedding(q.route)[0, 0].float()
            run_head(model, tok, q.route, h, video, q.question, res, None)
        return res

    monkeypatch.setattr(evaluate_module, "generate", scripted_generate(dataset, answer))
    out = evaluate(model, tok, dataset, max_clips=1, records=True)
    assert out["metrics"]["routing_accuracy"] == 1.0
    for name, v in all_task_metrics(out["metrics"]).items():
        assert 0.0 <= v <= 1.0, name
    track = next(r for r in out["records"] if r["task"] == "track")
    assert len(track["pred_boxes"]) == dataset.clips[0].num_frames
    temporal = next(r for r in out["records"] if r["task"] == "temporal")
    assert all(len(w) == 3 and w[0] <= w[1] for w in temporal["pred_windows"])


def test_real_model_end_to_end(tiny, dataset):
    model, tok = tiny
    out = evaluate(model, tok, dataset, max_clips=1, tasks=["region", "conversation"], records=True)
    assert set(out) == {"data", "scoring", "metrics", "baselines", "margins", "counts", "records"}
    assert 0.0 <= out["metrics"]["routing_accuracy"] <= 1.0
    assert out["counts"]["queries"] == len(out["records"]) == 2
    conf = out["counts"]["confusion"]
    assert sum(sum(row.values()) for row in conf.values()) == 2
    rec = out["records"][0]
    assert rec["task"] == "region" and rec["routed"] in ROUTE_NAMES and 0.0 <= rec["iou"] <= 1.0
    json.loads(json.dumps(out))


def test_default_checkpoint_is_the_packaged_folder_or_says_how_to_make_it():
    try:
        path = default_checkpoint()
    except CheckpointError as e:
        assert "checkpoints/tiny" in str(e) and "tpo-train" in str(e)
    else:
        assert (path / INDEX_NAME).is_file() and path.parts[-2:] == ("checkpoints", "tiny")


def test_cli_missing_data_dir_is_one_line_and_exit_2(tmp_path, capsys):
    assert eval_main(["--data", str(tmp_path / "absent"), "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tpo-eval: error:") and "absent" in err and "\n" not in err


def test_cli_json_and_predictions_file(tiny, data_dir, tmp_path, capsys):
    model, _ = tiny
    ckpt = save_checkpoint(model, tmp_path / "ckpt", tokenizer_dir=resolve_tokenizer_dir("tiny"))
    preds = tmp_path / "preds.jsonl"
    rc = eval_main(["--data", str(data_dir), "--checkpoint", str(ckpt), "--json", "--max-clips", "1",
                    "--tasks", "region", "conversation", "--frames", "render", "--out", str(preds)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    assert out["checkpoint"] == str(ckpt) and out["frames"] == "render" and "records" not in out
    assert out["records_file"] == str(preds)
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["task"] for r in lines] == ["region", "conversation"]
    assert np.isfinite(out["metrics"]["region"]["Acc@0.5"])


# ---- blind baselines and the query swap -------------------------------------------------------------------


def blind_result(q, clip, mean_box, majority) -> GenerationResult:
    """What each blind baseline answers: the mean box, the whole clip, the first-frame box held, the majority
    answer of the question's type."""
    res = GenerationResult(text=majority.get(" ".join(q.question.split()[:2]), ""), raw_text="", task=q.route,
                           token_ids=[])
    w, h = clip.spec.width, clip.spec.height
    if q.task == "region":
        res.region.append(RegionResult(box_xyxy=list(mean_box * [w, h, w, h]), box_normalised=[], frame=0))
    elif q.task == "temporal":
        res.temporal.append(TemporalResult(windows=[[0.0, clip.duration_s, 1.0]], saliency=[], clip_len_s=1.0))
    elif q.task == "track":
        first = clip.box(0, q.object_id)
        res.track.append(TrackResult(masks=np.repeat(clip.masks(q.object_id)[:1], clip.num_frames, axis=0),
                                     boxes=[list(first)] * clip.num_frames, scores=[]))
    return res


def test_blind_answers_score_their_baselines_and_no_margin(dataset, monkeypatch):
    """A model that answers exactly as a blind baseline does scores that baseline, so its margin is 0 (or
    below, where another baseline is better): the baselines are computed, not assumed."""
    region = [q for q in dataset.queries if q.task == "region"]
    clips = {c.name: c for c in dataset.clips}
    answers: dict[str, list[str]] = {}
    for q in dataset.queries:
        if q.task == "conversation":
            answers.setdefault(" ".join(q.question.split()[:2]), []).append(q.answer)
    majority = {t: max(set(a), key=a.count) for t, a in answers.items()}
    mean_box = np.mean([np.array(q.box) / np.array([clips[q.vid].spec.width, clips[q.vid].spec.height] * 2)
                        for q in region], axis=0)
    fake = scripted_generate(dataset, lambda q, clip, video: blind_result(q, clip, mean_box, majority))
    monkeypatch.setattr(evaluate_module, "generate", fake)
    out = evaluate(None, None, dataset)
    m, b = out["metrics"], out["baselines"]
    assert m["region"] == pytest.approx(b["region"]["mean box"])
    assert m["temporal"] == pytest.approx(b["temporal"]["whole clip"])
    held = b["track"]["first-frame box held"]
    assert {k: m["track"][k] for k in held} == pytest.approx(held)
    assert m["conversation"]["exact_match"] == pytest.approx(b["conversation"]["constant answer"]["exact_match"])
    assert b["routing_accuracy"]["constant route"] == pytest.approx(0.25)
    for task in ("region", "temporal", "track", "conversation"):
        assert all(rec["margin"] <= 1e-9 for rec in out["margins"][task].values()), task


def test_query_swap_passes_only_when_the_answer_follows_the_question(dataset, monkeypatch):
    """Asked about another object, a model that answers about the object named passes; one that answers
    about the first object whatever the question says fails."""
    def run(follow: bool) -> dict:
        records = {}

        def ask(clip, video, q):
            key = (clip.name, q.task)
            if key not in records:
                records[key] = q
            shown = q if follow else records[key]
            return perfect_result(shown, clip, q.route)

        return evaluate(None, None, dataset, swap=True, ask=ask)["swap"]

    good, bad = run(follow=True), run(follow=False)
    assert set(good) == set(bad) and set(good) <= {"region", "track"} and good
    for task in good:
        assert good[task]["pass_rate"] == 1.0 and bad[task]["pass_rate"] == 0.0
        assert good[task]["clips"] == bad[task]["clips"] >= 1


def test_runtime_events_become_the_results_evaluate_scores(dataset):
    from tpo.train.runtime_eval import result_from_events

    clip = dataset.clips[0]
    track = next(q for q in clip.queries if q.task == "track")
    mask = clip.masks(track.object_id)[0]
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    events = [{"type": "answer", "task": "track", "model_text": ""},
              {"type": "track", "frame": 0, "object": 0, "present": True, "box": list(clip.box(0, track.object_id)),
               "mask_rle": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}},
              {"type": "track", "frame": 1, "object": 0, "present": False, "box": None}]
    res = result_from_events(events, clip, track)
    assert res.task == "track" and res.track[0].boxes[0] == list(clip.box(0, track.object_id))
    assert res.track[0].boxes[1] is None and np.array_equal(res.track[0].masks[0], mask)
    assert not res.track[0].masks[1:].any() and len(res.track[0].boxes) == clip.num_frames
    temporal = next(q for q in clip.queries if q.task == "temporal")
    res = result_from_events([{"type": "answer", "task": "temporal", "model_text": ""},
                              {"type": "temporal", "event": "open", "time_s": 0.5},
                              {"type": "temporal", "text": "x", "windows": [[0.5, 1.5, 0.9]]}], clip, temporal)
    assert res.temporal[0].windows == [[0.5, 1.5, 0.9]]
    chat = next(q for q in clip.queries if q.task == "conversation")
    res = result_from_events([{"type": "answer", "task": "none", "model_text": "three"}], clip, chat)
    assert res.task == "none" and res.text == "three"


def test_absent_frames_count_only_when_the_tracker_says_nothing(dataset):
    """The absent-frame accuracy: over the frames where the object is not visible, the share with no box."""
    from dataclasses import replace

    from tpo.train.heads import TrackScorer

    clip = dataset.clips[0]
    k = next(q.object_id for q in clip.queries if q.task == "temporal")      # an object that is not always in view
    q = replace(next(q for q in clip.queries if q.task == "track"), object_id=k)
    absent = int((~clip.visible[:, k]).sum())
    assert absent > 0
    exact, held = TrackScorer(), TrackScorer()
    exact.add(clip, q, perfect_result(q, clip, "track").track[0])
    box = next(clip.box(t, k) for t in range(clip.num_frames) if clip.visible[t, k])
    held.add(clip, q, TrackResult(masks=np.repeat(clip.masks(k)[:1], clip.num_frames, axis=0),
                                  boxes=[list(box)] * clip.num_frames, scores=[]))
    assert exact.summary()["absent_accuracy"] == 1.0 and held.summary()["absent_accuracy"] == 0.0
    assert held.baselines()["first-frame box held"]["absent_accuracy"] == (0.0 if clip.visible[0, k] else 1.0)
