"""The probes that locate where the tiny checkpoint loses the image (tpo.train.probes)."""

import numpy as np
import pytest
import torch

from tpo.data.synthetic import make_clip
from tpo.errors import InputError
from tpo.model.checkpoint import default_checkpoint, load_checkpoint
from tpo.model.tokenizer import load_tokenizer
from tpo.train.probes import (
    blind_answer_em,
    box_from_map,
    category_of,
    main,
    recorded_layout,
    region_reading,
    track_prompt_probe,
    vision_region_probe,
    vision_shape_probe,
)


def test_box_from_map_takes_the_cells_over_half_the_maximum():
    cover = np.zeros((14, 14))
    cover[2:5, 7:10] = 0.9          # rows 2-4, columns 7-9
    cover[3, 8] = 1.0
    cover[10, 1] = 0.3              # under half the maximum: left out
    assert box_from_map(cover, 280, 140) == [140.0, 20.0, 200.0, 50.0]
    assert box_from_map(np.zeros((14, 14)), 280, 140) == [0.0, 0.0, 0.0, 0.0]


def test_category_of_names_exactly_one_category():
    assert category_of("where is the red circle?") != category_of("where is the blue circle?")
    with pytest.raises(InputError, match="names 0"):
        category_of("where is it?")


def test_blind_answers_score_the_majority_per_question_type():
    clips = [make_clip(i, 1000) for i in range(20)]
    out = blind_answer_em(clips)
    assert out["queries"] == sum(q.task == "conversation" for c in clips for q in c.queries)
    assert 0.25 <= out["exact_match"] < 1.0


def test_the_shipped_vision_tokens_locate_what_its_region_head_does_not():
    """The diagnosis of docs/training.md, pinned: a linear probe on the shipped checkpoint's own vision
    tokens boxes held-out objects (0.57 Acc@0.5 on 30 clips) where its region head scores 0."""
    model, _ = load_checkpoint(default_checkpoint(), dtype="fp32")
    probe = vision_region_probe(model, [make_clip(i, 1000) for i in range(12)], train_clips=30)
    assert probe["queries"] == 12
    assert probe["Acc@0.5"] >= 0.3


def test_bad_arguments_give_one_line(capsys):
    assert main(["--held-clips", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --train-clips, --held-clips and --track-clips must be >= 1"


def test_track_probe_scores_three_prompts_and_the_exact_box_is_used_on_frame_0():
    """docs/training.md: from the exact box the shipped mask head finds the object on frame 0 (IoU 0.68 over
    12 clips, 0.20 from a centre box) but loses it later (clip-level J&F alike for every prompt)."""
    path = default_checkpoint()
    model, _ = load_checkpoint(path, dtype="fp32")
    out = track_prompt_probe(model, load_tokenizer(path), [make_clip(1, 1000)])   # frame-0 IoU 0.73 vs 0.00
    assert out["queries"] == 1
    assert set(out) == {"queries", "exact_box", "centre_box", "model"}
    assert out["exact_box"]["frame0_IoU"] > out["centre_box"]["frame0_IoU"] + 0.3
    for scores in (out["exact_box"], out["centre_box"], out["model"]):
        assert 0.0 <= scores["success_AUC"] <= 1.0 and 0.0 <= scores["J&F"] <= 1.0


class _PatchEncoder(torch.nn.Module):
    """A stand-in vision encoder: each token is its patch's raw pixels (or noise), so what the shape probe
    reads is known: the colour of a covered patch is in its pixels, noise names nothing."""

    def __init__(self, cfg, noise: bool):
        super().__init__()
        self.cfg, self.noise = cfg, noise

    def forward(self, pixels):                                   # (B, 3, T, S, S) -> (B, T*g*g, 3*p*p)
        p = self.cfg.vision.patch_size
        x = pixels.unfold(3, p, p).unfold(4, p, p)               # (B, 3, T, g, g, p, p)
        x = x.permute(0, 2, 3, 4, 1, 5, 6).flatten(4).flatten(1, 3)
        return torch.randn_like(x) if self.noise else x


def test_vision_shape_probe_reads_tokens_in_the_targets_order():
    """Tokens that carry their patch's pixels name the covering colour well above tokens of noise; tokens read
    out of order against the targets would score as noise does."""
    from types import SimpleNamespace

    from tpo.model.config import load_config

    cfg = load_config("tiny")
    held = [make_clip(i, 1000) for i in range(6)]
    colour = {}
    for noise in (False, True):
        torch.manual_seed(0)
        model = SimpleNamespace(cfg=cfg, vision_encoder=_PatchEncoder(cfg, noise),
                                vision_layernorm=torch.nn.Identity())
        out = vision_shape_probe(model, held, train_clips=8)
        assert out["tokens"] > 20
        colour[noise] = out["colour_accuracy"]
    assert colour[False] > colour[True] + 0.25 and colour[True] < 0.45, colour      # 4 colours: chance 0.25


def test_region_reading_measures_the_attention_the_slot_loss_supervises():
    """The probe's attention on the asked slot at the supervised layer is exp(-loss) of `slot_attention_loss` for
    the same one-query batch: it reads the slot the training pulls towards, from the same position."""
    from tpo.model.config import load_config
    from tpo.model.tpo_model import build_model
    from tpo.train.recipe import RecipeConfig, batch_losses, eager_attention
    from tpo.train.samples import clip_samples
    from tpo.train.slot_attention import SlotMap, slot_attention_layer

    from .test_recipe import SCENE

    cfg = load_config("tiny")
    tok = load_tokenizer(cfg.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    clips = [make_clip(i, 3, SCENE) for i in range(2)]
    slots = SlotMap.of(cfg, "cell")
    out = region_reading(model, tok, clips[:1], clips[1:], slots)
    assert out["held"]["queries"] == sum(q.route == "region" for q in clips[1].queries) == 1
    by_layer = out["held"]["slot_attention_by_layer"]
    assert len(by_layer) == cfg.llm.num_layers and all(0.0 <= v <= 1.0 for v in by_layer)
    assert out["train"]["head_Acc@0.5"] in (0.0, 1.0)            # one query each
    sample = [s for s in clip_samples(clips[1], cfg, tok) if s.route == "region"]
    rc = RecipeConfig(connector_layout="cell", slot_attention=1.0)
    with torch.no_grad(), eager_attention(model, True):
        loss = batch_losses(model, sample, rc, 3, torch.Generator().manual_seed(0))["slot_attention"]
    assert by_layer[slot_attention_layer(cfg)] == pytest.approx(float(torch.exp(-loss)), rel=1e-4, abs=1e-5)
    assert region_reading(model, tok, clips[:1], clips[1:], None)["held"]["slot_attention_by_layer"] is None


def test_the_layout_comes_from_the_training_record(tmp_path):
    import json
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(default_checkpoint(), ckpt)
    (ckpt / "training.json").unlink()
    assert recorded_layout(ckpt) is None
    (ckpt / "training.json").write_text(json.dumps({"recipe": {"connector_layout": "cell"}}))
    assert recorded_layout(ckpt) == "cell"
    (ckpt / "training.json").write_text(json.dumps({"recipe": {}}))       # older than the setting: its default
    assert recorded_layout(ckpt) == "category"
    (ckpt / "training.json").write_text("{")
    with pytest.raises(InputError, match="training.json: not a training record"):
        recorded_layout(ckpt)
