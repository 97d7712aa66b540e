"""Stage 0's vision pretraining: targets in the encoder's token order, the loss falls, RNG left alone."""

import numpy as np
import torch

from tpo.data.synthetic import CATEGORIES, SceneConfig, make_clip
from tpo.model.config import load_config
from tpo.model.tpo_model import build_model
from tpo.train.recipe import stage0_image_steps
from tpo.train.vision_pretrain import SUB, category_maps, patch_targets, pretrain_vision_encoder

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 5.0), fps_range=(8, 8))


def test_patch_targets_follow_the_token_order():
    maps = torch.zeros(2, len(CATEGORIES), 8, 8)
    maps[1, 3, 0:2, 6:8] = 1.0          # frame 1, category 3, the top-right 2x2 pixels
    t = patch_targets(maps, grid=2, sub=2)  # 2 frames x 2x2 patches, each 2x2 sub-cells of 2x2 pixels
    assert t.shape == (8, SUB * SUB * len(CATEGORIES))
    hot = torch.nonzero(t)
    # token 5 = frame 1, row 0, col 1; sub-cell (0, 1) of it; category 3
    assert hot.tolist() == [[5, 1 * len(CATEGORIES) + 3]] and float(t[5, 1 * len(CATEGORIES) + 3]) == 1.0


def test_category_maps_name_each_objects_category():
    clip = make_clip(0, 3, SCENE)
    maps = category_maps(clip, np.array([0]))
    for k, o in enumerate(clip.spec.objects):
        c = CATEGORIES.index((o.colour, o.shape))
        assert torch.equal(maps[0, c].bool(), torch.from_numpy(clip.mask(0, k)))


def test_vision_pretraining_loss_falls_and_leaves_the_rng_alone():
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    before = torch.get_rng_state()
    records = []
    summary = pretrain_vision_encoder(model, steps=20, pool_clips=3, image_batch=4, video_batch=1,
                                      log=records.append)
    assert torch.equal(torch.get_rng_state(), before)
    assert [r["step"] for r in records] == list(range(20))
    assert summary["loss_last"] < 0.5 * summary["loss_first"], summary


def test_stage0_always_trains_video_windows():
    """A fixed 150 single-image steps made a 150-step stage 0 all images: the memory path never trained."""
    for steps in (2, 10, 150, 250, 1000):
        assert 1 <= stage0_image_steps(steps) < steps
    assert stage0_image_steps(250) == 150      # pretrain_mask_head's own split


def test_category_loss_is_added_per_covered_token_and_learns():
    """--vision-category-weight adds a 12-way cross-entropy on the tokens an object covers (the coverage loss is
    mostly paid by the colour: docs/training.md): at the start it is about 2 ln 12 more than without it."""
    first = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model(load_config("tiny"))
        records = []
        summary = pretrain_vision_encoder(model, steps=20 if weight else 1, pool_clips=3, image_batch=4,
                                          video_batch=1, category_weight=weight, log=records.append)
        first[weight] = records[0]["loss"]
    assert 3.5 < first[1.0] - first[0.0] < 6.5, first        # one term for the images, one for the videos: 2 ln 12 = 4.97
    assert summary["loss_last"] < 0.5 * summary["loss_first"], summary
