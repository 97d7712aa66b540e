"""Layout "both" (`--connector-layout both`): the cell slots first (where), then one category slot per colour-shape
(what); each kind gets its own targets and losses, the probe reads the box from the cells and the presence from
the categories, and the slot attention finds the cell slots at the front."""

import numpy as np
import pytest
import torch

from tpo.data.synthetic import CATEGORIES, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.preprocess import middle_frame_indices
from tpo.model.tpo_model import build_model
from tpo.train.connector_cells import cell_slot_targets, cells_per_side
from tpo.train.connector_pretrain import (
    CATEGORY_PREFIX,
    BothHead,
    ConnectorPool,
    check_slots,
    connector_probe,
    pretrain_connector,
    slot_frames,
    slot_readout,
    slot_targets,
)
from tpo.train.recipe import RecipeConfig
from tpo.train.sample import frames_to_pixels, resize_frames
from tpo.train.samples import clip_samples
from tpo.train.slot_attention import SlotMap, attention_target, slot_attention_loss, slot_position
from tpo.train.train_cli import build_parser, recipe_from_args

from .test_connector_pretrain import with_queries
from .test_slot_attention import sample

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 5.0), fps_range=(8, 8))


def test_cells_come_first_and_leave_a_slot_per_category():
    c = len(CATEGORIES)
    assert cells_per_side(with_queries(31, 30), "both") == 7 and slot_frames(with_queries(31, 30), "both") == 1
    assert cells_per_side(with_queries(31, 30), "cell") == 7                 # 12 queries left over, unused
    assert cells_per_side(with_queries(8, 8), "both") == 2 and slot_frames(with_queries(8, 8), "both") == 1
    assert slot_frames(with_queries(34, 39), "both") == 2                     # 73 = 49 + 2 x 12
    with pytest.raises(ConfigError, match=f"at least {4 + c} connector queries"):
        check_slots(with_queries(6, 8), "both")
    with pytest.raises(ConfigError, match="layout"):
        check_slots(with_queries(8, 8), "grid")


def test_pool_targets_hold_the_cells_then_the_categories():
    cfg = with_queries(31, 30)
    pool = ConnectorPool(1, 3, cfg, SCENE, layout="both")
    frames, targets, cover = pool.videos[0]
    assert len(targets) == 6 and cover.shape[0] == frames.shape[0] * 49
    clip = make_clip(0, 3, SCENE)
    middle = np.array(middle_frame_indices(cfg.vision.num_frames, clip.num_frames))
    for got, want in zip(targets, (*cell_slot_targets(clip, middle, 7), *slot_targets(clip, middle, 1)), strict=True):
        assert torch.equal(got, want)


def test_both_part_learns_each_kind_and_the_probe_reads_boxes_from_the_cells():
    cfg = with_queries(8, 8)                          # 2 x 2 cells + 12 category slots
    torch.manual_seed(0)
    model = build_model(cfg)
    before = torch.get_rng_state()
    records = []
    _, head = pretrain_connector(model, steps=30, pool_clips=3, image_batch=4, video_batch=1, lr=3e-3,
                                 attention=True, layout="both", log=records.append)
    assert isinstance(head, BothHead) and head.cells == 4 and torch.equal(torch.get_rng_state(), before)
    assert CATEGORY_PREFIX + "l1" not in records[0] and "l1" in records[0]     # the boxes come from the cells
    for part in ("presence", "attention", CATEGORY_PREFIX + "presence", CATEGORY_PREFIX + "attention"):
        assert np.mean([r[part] for r in records[-5:]]) < np.mean([r[part] for r in records[:5]]), part
    clip = make_clip(0, 1000)
    frames = resize_frames(clip.frames[:1], cfg.vision.image_size)
    prob, boxes = slot_readout(model, head, frames)
    with torch.no_grad():
        (cell_logits, cell_boxes), (cat_logits, _) = head(model.encode_visual(frames_to_pixels(frames, cfg)[None]))
    assert torch.allclose(prob, cat_logits[0].sigmoid().amax(1))
    for k in range(len(CATEGORIES)):
        assert torch.equal(boxes[k], cell_boxes[0, cell_logits[0, :, k].argmax()])
    assert set(connector_probe(model, head, [clip])) >= {"region_Acc@0.5", "answer_accuracy"}


def test_slot_attention_takes_the_cells_at_the_front():
    # 2 x 2 cells then 12 category slots: centre (0.6, 0.1) is cell 1, the second visual token
    assert slot_position(sample("region", [0.5, 0.0, 0.7, 0.2], n_visual=16), 2) == 3 + 1
    RecipeConfig(connector_layout="both", slot_attention=1.0)
    rc = recipe_from_args(build_parser().parse_args(["--out", "x", "--connector-layout", "both",
                                                     "--slot-attention", "1"]))
    assert rc.connector_layout == "both"


def test_a_question_naming_one_object_attends_to_its_category_slot():
    """With category slots, "what colour is the square?" is answered from the category slot of the square that
    shows: the position predicting the answer's first token attends there. Counts and cell-only maps have none."""
    from tpo.model.tokenizer import load_tokenizer

    cfg = with_queries(31, 30)
    slots = SlotMap.of(cfg, "both")
    assert slots == SlotMap(7, 1) and SlotMap.of(cfg, "cell") == SlotMap(7, 0)
    named, counts = [], []
    for i in range(6):
        clip = make_clip(i, 1000)
        samples = [s for s in clip_samples(clip, cfg, load_tokenizer("tiny")) if s.task == "conversation"]
        for s, q in zip(samples, (q for q in clip.queries if q.task == "conversation"), strict=True):
            (counts if q.object_id is None else named).append((s, q, clip))
    for s, q, clip in named:
        o = clip.spec.objects[q.object_id]
        assert s.category == CATEGORIES.index((o.colour, o.shape))
        row, keys = attention_target(s, slots)
        visual = torch.nonzero(s.visual_mask).flatten()
        assert keys == [int(visual[49 + s.category])]
        assert s.labels[row] == -100 and s.labels[row + 1] != -100          # it predicts the answer's first token
        assert attention_target(s, SlotMap(7)) is None
    assert named and counts
    for s, _, _ in counts:
        assert s.category == -1 and attention_target(s, slots) is None
    s = named[0][0]
    row, keys = attention_target(s, slots)
    attention = torch.zeros(1, 2, len(s.input_ids), len(s.input_ids))
    attention[0, 0, row, keys[0]], attention[0, 1, row, keys[0]] = 0.2, 0.6
    assert slot_attention_loss(attention, [s], slots).item() == pytest.approx(-np.log(0.4 + 1e-6), rel=1e-5)
