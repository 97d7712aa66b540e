"""Slot attention: the region and track task tokens' attention is pulled towards the asked object's cell slot."""

import pytest
import torch

from tpo.errors import ConfigError
from tpo.train.recipe import RecipeConfig, TrainState, run_stage
from tpo.train.sample import Sample
from tpo.train.slot_attention import SlotMap, slot_attention_loss, slot_position

from .test_recipe import fresh, mean, setup  # noqa: F401  (the module fixture)


def sample(route: str, box, visual_from: int = 3, n_visual: int = 16, length: int = 24, placeholder: int = 22):
    mask = torch.zeros(length, dtype=torch.bool)
    mask[visual_from: visual_from + n_visual] = True
    return Sample(task=route, route=route, clip="c", frames=None, input_ids=torch.zeros(length, dtype=torch.long),
                  labels=torch.zeros(length, dtype=torch.long), visual_mask=mask, placeholder=placeholder,
                  box=None if box is None else torch.tensor(box))


def test_the_slot_is_the_cell_of_the_box_centre_in_prompt_order():
    # 4 x 4 cells; centre (0.6, 0.1): row 0, column 2 -> the third visual token; (0.1, 0.9): row 3, column 0
    assert slot_position(sample("region", [0.5, 0.0, 0.7, 0.2]), 4) == 3 + 2
    assert slot_position(sample("track", [0.0, 0.8, 0.2, 1.0]), 4) == 3 + 12
    with pytest.raises(ValueError, match="16 cell slots"):
        slot_position(sample("region", [0.5, 0.0, 0.7, 0.2], n_visual=9), 4)


def test_the_loss_is_minus_log_of_the_head_mean_attention_on_the_slot():
    batch = [sample("region", [0.5, 0.0, 0.7, 0.2]), sample("none", None), sample("temporal", None)]
    attention = torch.zeros(3, 2, 24, 24)
    attention[0, 0, 22, 5], attention[0, 1, 22, 5] = 0.5, 0.3
    attention[1, :, 22, 5] = 1.0                                     # not a slotted task: ignored
    loss = slot_attention_loss(attention, batch, SlotMap(4))
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(0.4 + 1e-6)).item(), rel=1e-6)
    assert slot_attention_loss(attention, batch[1:], SlotMap(4)) is None


def test_it_needs_cell_slots_and_a_weight_of_at_least_zero():
    with pytest.raises(ConfigError, match="--connector-layout cell"):
        RecipeConfig(slot_attention=1.0)
    with pytest.raises(ConfigError, match="must be >= 0"):
        RecipeConfig(slot_attention=-1.0, connector_layout="cell")


def test_stage3_learns_to_attend_to_the_slot_and_leaves_sdpa_behind(setup, tmp_path):  # noqa: F811
    cfg, _, pool = setup
    model = fresh(cfg)
    rc = RecipeConfig(batch_size=16, lr=2e-3, checkpoint_every=10_000, connector_layout="cell", slot_attention=1.0,
                      stage3_steps=12)
    records = []
    run_stage(model, pool, rc, 3, TrainState(stage=3), tmp_path, records.append, None, False)
    values = [r["slot_attention"] for r in records if "slot_attention" in r]
    assert len(values) == 12
    assert mean(values[-3:]) < mean(values[:3])
    assert model.lm.config._attn_implementation == "sdpa"
