"""Cell slots (stage 0's connector part, `--connector-layout cell`): targets name each object's cell and box,
the attention target covers each cell's tokens (towards its objects), the value path starts as the identity,
the part learns, and the probe's answer rule gives the true answers when the slots are right."""

import numpy as np
import pytest
import torch

from tpo.data.synthetic import CATEGORIES, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.config import config_from_dict, load_config
from tpo.model.tpo_model import build_model
from tpo.train.connector_cells import (
    BACKGROUND_WEIGHT,
    MIN_PRESENT_PX,
    CellHead,
    cell_attention_loss,
    cell_attention_target,
    cell_index,
    cell_slot_targets,
    cells_per_side,
    pass_values_through,
    read_category,
)
from tpo.train.connector_pretrain import connector_probe, pretrain_connector, slot_answer

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 5.0), fps_range=(8, 8))


def test_cells_follow_the_query_count():
    cfg = load_config("tiny").to_dict()
    cfg["connector"].update(num_query_tokens=8, num_extra_query_tokens=8)
    assert cells_per_side(config_from_dict(cfg)) == 4                     # 16 queries: 4 x 4 cells
    cfg["connector"].update(num_query_tokens=25, num_extra_query_tokens=24)
    assert cells_per_side(config_from_dict(cfg)) == 7                     # 49: 7 x 7, one per vision patch
    cfg["connector"].update(num_query_tokens=2, num_extra_query_tokens=1)
    with pytest.raises(ConfigError, match="cell slots"):
        cells_per_side(config_from_dict(cfg))
    assert cell_index(0.0, 0.0, 4) == 0 and cell_index(0.99, 0.0, 4) == 3 and cell_index(0.3, 0.6, 4) == 9
    assert cell_index(1.0, 1.0, 4) == 15                                  # the far edge belongs to the last cell


def test_cell_targets_name_each_objects_cell_and_the_largest_box():
    clip = make_clip(0, 3, SCENE)
    index = np.array([0, 6, 12])
    present, boxes, boxed = cell_slot_targets(clip, index, 4)
    assert present.shape == (16, len(CATEGORIES)) and boxes.shape == (16, 4) and boxed.shape == (16,)
    expected = torch.zeros(16, len(CATEGORIES))
    best = {}
    for k, o in enumerate(clip.spec.objects):
        c = CATEGORIES.index((o.colour, o.shape))
        for j, t in enumerate(index):
            if clip.areas[t, k] < MIN_PRESENT_PX:
                continue
            x1, y1, x2, y2 = clip.box(t, k)
            cell = cell_index((x1 + x2) / 2 / 160, (y1 + y2) / 2 / 120, 4)
            expected[cell, c] = 1
            if j == 0 and clip.areas[t, k] > best.get(cell, (0, None))[0]:
                best[cell] = (clip.areas[t, k], [x1 / 160, y1 / 120, x2 / 160, y2 / 120])
    assert torch.equal(present, expected) and present.sum() >= 1
    assert sorted(np.flatnonzero(boxed.numpy()).tolist()) == sorted(best)
    for cell, (_, box) in best.items():
        assert boxes[cell].tolist() == pytest.approx(box)
    assert boxes[~boxed].abs().sum() == 0


def test_attention_target_covers_each_cell_and_leans_on_its_objects():
    target = cell_attention_target(grid=7, frames=2, n=4)
    assert target.shape == (16, 98) and torch.allclose(target.sum(-1), torch.ones(16))
    assert torch.equal((target > 0).sum(0), torch.ones(98, dtype=torch.long))    # every token in exactly one cell
    assert torch.equal(target[:, :49], target[:, 49:])                          # the same cell on every frame
    assert target[0, 0] > 0 and target[0, 6] == 0 and target[15, 48] > 0       # corners
    objects = torch.zeros(1, 98)
    objects[0, 0] = 1.0                                                        # an object on token 0 (cell 0)
    leaning = cell_attention_target(7, 2, 4, objects)
    assert leaning.shape == (1, 16, 98) and torch.allclose(leaning.sum(-1), torch.ones(1, 16))
    assert leaning[0, 0, 0] / leaning[0, 0, 1] == pytest.approx((1 + BACKGROUND_WEIGHT) / BACKGROUND_WEIGHT)
    assert torch.allclose(leaning[0, 5], target[5])                            # no object: the cell, uniform
    attn = torch.full((1, 16, 98), 1 / 98)
    assert cell_attention_loss(leaning.clamp(min=1e-4), leaning) < cell_attention_loss(attn, leaning)


def test_value_path_starts_as_the_identity_and_passes_the_image():
    torch.manual_seed(0)
    model = build_model(load_config("tiny"))
    tokens = torch.randn(2, 49, model.cfg.vision.width)

    def spread() -> float:
        with torch.no_grad():
            out = model.connector(tokens)
        return float(out.std(0).mean() / out.std())

    before = spread()
    pass_values_through(model)
    names = [n for n, _ in model.connector.named_modules() if n.endswith(("crossattention.attention.value",
                                                                        "crossattention.output.dense"))]
    assert names
    for name in names:
        module = model.connector.get_submodule(name)
        assert torch.equal(module.weight, torch.eye(*module.weight.shape)) and not module.bias.any()
    assert spread() > 5 * before, (before, spread())


def test_cell_head_and_read_category():
    head = CellHead(8, 16)
    p, b = head(torch.randn(2, 20, 8))
    assert p.shape == (2, 16, len(CATEGORIES)) and b.shape == (2, 16, 4) and bool((b[..., 2:] >= b[..., :2]).all())
    prob, boxes = torch.zeros(16, len(CATEGORIES)), torch.rand(16, 4)
    prob[9, 4] = 0.8
    score, box = read_category(prob, boxes, 4)
    assert score == pytest.approx(0.8) and torch.equal(box, boxes[9])


def test_slot_answer_gives_the_true_answer_from_true_presence():
    """The probe's rule, fed the true presence of each category over the clip, answers every conversation
    question right (count, colour of the shape, shape of the colour): a probe number measures the slots."""
    checked = 0
    for i in range(12):
        clip = make_clip(i, 1000)
        truth = torch.zeros(len(CATEGORIES))
        for o in clip.spec.objects:
            truth[CATEGORIES.index((o.colour, o.shape))] = 1.0
        for q in (q for q in clip.queries if q.task == "conversation"):
            assert slot_answer(clip, q, truth) == q.answer, q
            checked += 1
    assert checked >= 12


def test_cell_connector_part_learns_and_leaves_the_rng_alone():
    torch.manual_seed(0)
    model = build_model(load_config("tiny"))
    before = torch.get_rng_state()
    records = []
    summary, head = pretrain_connector(model, steps=30, pool_clips=3, image_batch=4, video_batch=1, lr=3e-3,
                                       attention=True, layout="cell", log=records.append)
    assert isinstance(head, CellHead) and torch.equal(torch.get_rng_state(), before)
    assert records[-1]["attention"] < records[0]["attention"]
    assert np.mean([r["presence"] for r in records[-5:]]) < 0.75 * records[0]["presence"]
    assert summary["loss_last"] < summary["loss_first"]
    probe = connector_probe(model, head, [make_clip(0, 1000)])
    assert set(probe) == {"region_Acc@0.5", "region_mIoU", "count_accuracy", "answer_accuracy", "presence_accuracy"}
    with pytest.raises(ConfigError, match="layout"):
        pretrain_connector(model, steps=1, layout="grid")
