"""Stage 0's connector representation stage: slot targets in the slot order, the losses fall, the RNG is left
alone, and the slots describe what they should."""

import numpy as np
import pytest
import torch

from tpo.data.synthetic import CATEGORIES, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.config import config_from_dict, load_config
from tpo.model.tpo_model import build_model
from tpo.train.connector_pretrain import (
    MIN_PRESENT_PX,
    SlotHead,
    attention_loss,
    attention_targets,
    check_slots,
    pretrain_connector,
    slot_frames,
    slot_loss,
    slot_targets,
)
from tpo.train.vision_pretrain import SUB

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 5.0), fps_range=(8, 8))


def with_queries(num_query_tokens: int, num_extra_query_tokens: int):
    cfg = load_config("tiny").to_dict()
    cfg["connector"].update(num_query_tokens=num_query_tokens, num_extra_query_tokens=num_extra_query_tokens)
    return config_from_dict(cfg)


def test_slot_frames_follow_the_query_count():
    assert slot_frames(with_queries(32, 64)) == 8        # the release's 96 queries: one slot per category and frame
    assert slot_frames(with_queries(8, 8)) == 1          # 16: one slot per category


def test_slot_targets_name_each_category_on_each_frame():
    clip = make_clip(0, 3, SCENE)
    index = np.array([0, 5, 9])
    present, boxes, boxed = slot_targets(clip, index, 3)
    assert torch.equal(boxed, present > 0)
    assert present.shape == (len(CATEGORIES), 3) and boxes.shape == (len(CATEGORIES), 3, 4)
    for k, o in enumerate(clip.spec.objects):
        c = CATEGORIES.index((o.colour, o.shape))
        for j, t in enumerate(index):
            shown = clip.areas[t, k] >= MIN_PRESENT_PX
            assert bool(present[c, j]) == shown
            if shown:
                x1, y1, x2, y2 = clip.box(t, k)
                assert boxes[c, j].tolist() == pytest.approx([x1 / 160, y1 / 120, x2 / 160, y2 / 120])
    absent = [c for c in range(len(CATEGORIES)) if all(CATEGORIES[c] != (o.colour, o.shape) for o in clip.spec.objects)]
    assert present[absent].sum() == 0 and boxes[absent].abs().sum() == 0
    # an image is described the same way on every slot frame
    present1, boxes1, boxed1 = slot_targets(clip, np.array([5]), 4)
    assert torch.equal(present1, present[:, 1:2].expand(-1, 4)) and torch.equal(boxes1, boxes[:, 1:2].expand(-1, 4, 4))
    assert torch.equal(boxed1, present1 > 0)
    # fewer slot frames than frames: presence on any frame of each run, the box on its first frame
    runs, run_boxes, boxed_runs = slot_targets(clip, index, 2)     # runs [0, 5] and [9]
    assert torch.equal(runs[:, 0], present[:, :2].amax(1)) and torch.equal(runs[:, 1], present[:, 2])
    assert torch.equal(run_boxes, boxes[:, [0, 2]]) and torch.equal(boxed_runs, present[:, [0, 2]] > 0)


def test_slot_loss_counts_boxes_only_where_present():
    logits, boxes = torch.zeros(1, 2, 1), torch.tensor([[[[0.1, 0.1, 0.3, 0.3]], [[0.0, 0.0, 1.0, 1.0]]]])
    present = torch.tensor([[[1.0], [0.0]]])
    target = torch.tensor([[[[0.1, 0.1, 0.3, 0.3]], [[0.5, 0.5, 0.6, 0.6]]]])
    parts = slot_loss(logits, boxes, present, target)
    assert float(parts["l1"]) == 0.0 and float(parts["giou"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["presence"]) == pytest.approx(np.log(2), rel=1e-5)
    head = SlotHead(8, 2, 3)
    p, b = head(torch.randn(1, 10, 8))
    assert p.shape == (1, 2, 3) and b.shape == (1, 2, 3, 4) and bool((b[..., 2:] >= b[..., :2]).all())


def test_too_few_queries_is_refused():
    with pytest.raises(ConfigError, match="queries"):
        check_slots(with_queries(4, 4))


def test_connector_pretraining_learns_and_leaves_the_rng_alone():
    cfg = with_queries(32, 64)
    torch.manual_seed(0)
    model = build_model(cfg)
    before = torch.get_rng_state()
    records = []
    summary, head = pretrain_connector(model, steps=30, pool_clips=3, image_batch=4, video_batch=1, lr=3e-3,
                                       attention=True, log=records.append)
    assert model.connector.qformer.config._attn_implementation == "sdpa"      # restored after the eager steps
    assert records[-1]["attention"] < records[0]["attention"]
    assert torch.equal(torch.get_rng_state(), before)
    assert [r["step"] for r in records] == list(range(30))
    first, last = records[0], np.mean([r["presence"] for r in records[-5:]])
    assert last < 0.75 * first["presence"], (first, last)
    assert summary["loss_last"] < summary["loss_first"]
    assert not any(name.startswith("slot") for name in model.state_dict())


def test_attention_targets_follow_each_category_over_its_slot_frames():
    c = len(CATEGORIES)
    cover = torch.zeros(1, 8, SUB * SUB * c)           # a video of 2 frames x 4 tokens
    cover[0, 1, c * 0 + 3] = 1.0                      # category 3 covers a sub-cell of token 1 (frame 0)
    cover[0, 6, :] = 1.0                              # token 6 (frame 1) is covered by every category
    target, valid = attention_targets(cover, tokens_per_frame=4, slots_t=2)
    assert target.shape == (1, c, 2, 8) and valid.shape == (1, c, 2)
    assert target[0, 3, 0].tolist() == [0, 1, 0, 0, 0, 0, 0, 0] and target[0, 3, 1, 6] == 1
    assert not valid[0, 0, 0] and valid[0, 0, 1]
    image, valid1 = attention_targets(cover[:, :4], tokens_per_frame=4, slots_t=2)   # an image: every slot frame
    assert torch.equal(image[0, 3, 0], image[0, 3, 1]) and torch.equal(valid1[0, :, 0], valid1[0, :, 1])
    # the loss is smallest where the attention is the target
    attn = torch.full((1, 16 * 2, 8), 1 / 8)
    best = attn.clone()
    best[:, : c * 2] = target.reshape(1, c * 2, 8).clamp(min=1e-3)
    assert attention_loss(best, target, valid) < attention_loss(attn, target, valid)


def test_experiment_curve_averages_each_loss_part_per_run_of_steps():
    from tpo.train.connector_experiment import curve

    records = [{"presence": float(i), "l1": 1.0, "giou": 2.0, "coverage": 0.5} for i in range(5)]
    assert curve(records, every=2) == {"presence": [0.5, 2.5, 4.0], "l1": [1.0] * 3, "giou": [2.0] * 3,
                                       "coverage": [0.5] * 3}
