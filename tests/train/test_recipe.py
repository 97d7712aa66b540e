"""The recipe's smoke test: a few steps of every stage on a tiny pool, each loss falls; resuming is exact."""

from pathlib import Path

import pytest
import torch

from tpo.data.synthetic import SceneConfig
from tpo.errors import ConfigError
from tpo.model.config import load_config
from tpo.model.tokenizer import load_tokenizer
from tpo.model.tpo_model import build_model
from tpo.train.recipe import RecipeConfig, TrainState, load_state, run_stage, save_state
from tpo.train.samples import build_pool

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 5.0), fps_range=(8, 8))


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("tiny")
    tok = load_tokenizer(cfg.tokenizer)
    pool = build_pool(cfg, tok, clips=4, seed=3, scene=SCENE)
    return cfg, tok, pool


def fresh(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("stage,keys", [(1, ["lm"]), (2, ["region", "temporal", "track"]),
                                        (3, ["lm", "region", "temporal", "track"])])
def test_every_loss_of_every_stage_falls(setup, tmp_path, stage, keys):
    cfg, _, pool = setup
    model = fresh(cfg)
    rc = RecipeConfig(batch_size=16, lr=2e-3, checkpoint_every=10_000, temporal_weight=1.0,
                      **{f"stage{stage}_steps": 12})
    records = []
    run_stage(model, pool, rc, stage, TrainState(stage=stage), tmp_path, records.append, None, False)
    assert len(records) == 12
    for key in keys:
        first, last = mean([r[key] for r in records[:3]]), mean([r[key] for r in records[-3:]])
        assert last < first, f"stage {stage}: {key} went from {first:.4f} to {last:.4f}"


def test_resume_takes_exactly_the_same_steps(setup, tmp_path):
    cfg, _, pool = setup
    rc = RecipeConfig(stage3_steps=4, checkpoint_every=2, lr=1e-3)
    straight = fresh(cfg)
    run_stage(straight, pool, rc, 3, TrainState(stage=3), tmp_path / "a", lambda r: None, None, False)

    (tmp_path / "b").mkdir()
    first = fresh(cfg)
    short = RecipeConfig(stage3_steps=4, checkpoint_every=2, lr=1e-3)
    state = TrainState(stage=3)

    class Stop(Exception):
        pass

    def stop_after_2(record):
        if record["step"] == 3:
            raise Stop
    with pytest.raises(Stop):
        run_stage(first, pool, short, 3, state, tmp_path / "b", stop_after_2, None, False)
    resumed = fresh(cfg)
    state, opt = load_state(tmp_path / "b", resumed, rc)
    assert state.step == 2
    run_stage(resumed, pool, rc, 3, state, tmp_path / "b", lambda r: None, opt, False)
    a, b = straight.state_dict(), resumed.state_dict()
    # the same steps on the same data: equal up to float rounding (a resumed model is another instance, and
    # two instances need not sum in the same order on every CPU)
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--heads"):
        RecipeConfig(heads=("region", "mask"))
    with pytest.raises(ConfigError, match="--stages"):
        RecipeConfig(stages=(1, 5))
    cfg = load_config("tiny")
    model = fresh(cfg)
    save_state(Path(tmp_path), model, None, TrainState(), RecipeConfig(seed=1))
    with pytest.raises(ConfigError, match=r"other settings \(\['seed'\]\)"):
        load_state(Path(tmp_path), fresh(cfg), RecipeConfig(seed=2))


def test_stage0_trains_video_windows_and_resumes_part_by_part(tmp_path, monkeypatch):
    """Stage 0 = mask head (image steps, then video windows through the memory path) + vision encoder;
    each part is saved when done, so a run interrupted in the second part does not redo the first."""
    from tpo.train import mask_pretrain, vision_pretrain
    from tpo.train.recipe import train

    calls = []

    def mask(head, steps, seed, image_steps, log, progress):
        calls.append(("mask", steps, image_steps))
        return {"steps": steps}

    def vision(model, steps, seed, category_weight, lr, pool_clips, log, progress):
        calls.append(("vision", steps))
        raise KeyboardInterrupt

    monkeypatch.setattr(mask_pretrain, "pretrain_mask_head", mask)
    monkeypatch.setattr(vision_pretrain, "pretrain_vision_encoder", vision)
    rc = RecipeConfig(stages=(0,), stage0_steps=10, vision_steps=5)
    with pytest.raises(KeyboardInterrupt):
        train(rc, tmp_path, progress=False)
    assert calls == [("mask", 10, 6), ("vision", 5)]
    calls.clear()
    monkeypatch.setattr(vision_pretrain, "pretrain_vision_encoder",
                        lambda model, steps, seed, log, progress, **settings: calls.append(("vision", steps)) or {})
    train(rc, tmp_path, progress=False)
    assert calls == [("vision", 5)]


def test_stage0_connector_part_takes_the_recipe_settings_and_is_not_redone(tmp_path, monkeypatch):
    """The connector part (`--connector-steps`, `--connector-attention`, `--connector-layout`) runs after the
    vision part (with `--vision-category-weight`, `--vision-lr`, `--vision-pool-clips`) and is saved as done: a
    resumed run goes on to stage 1 without redoing it."""
    from tpo.train import connector_pretrain, mask_pretrain, vision_pretrain
    from tpo.train.recipe import train

    calls = []
    monkeypatch.setattr(mask_pretrain, "pretrain_mask_head", lambda *a, **k: {})
    vision_settings = []
    monkeypatch.setattr(vision_pretrain, "pretrain_vision_encoder",
                        lambda *a, **k: vision_settings.append({n: k[n] for n in ("category_weight", "lr", "pool_clips")})
                        or {})

    def connector(model, steps, seed, attention, layout, log, progress):
        calls.append((steps, attention, layout))
        return {"steps": steps}, None

    monkeypatch.setattr(connector_pretrain, "pretrain_connector", connector)
    rc = RecipeConfig(stages=(0,), stage0_steps=2, vision_steps=2, connector_steps=7, connector_attention=True,
                      connector_layout="cell", vision_category_weight=0.5, vision_lr=1e-3, vision_pool_clips=30)
    train(rc, tmp_path, progress=False)
    assert calls == [(7, True, "cell")]
    assert vision_settings == [{"category_weight": 0.5, "lr": 1e-3, "pool_clips": 30}]
    assert '"part": "connector", "done": true' in (tmp_path / "log.jsonl").read_text()
    train(rc, tmp_path, progress=False)
    assert calls == [(7, True, "cell")]


def test_frozen_visual_parts_are_encoded_once_per_stack_as_at_inference(setup, monkeypatch):
    """With the vision encoder and the connector frozen (stage 2, or --freeze-vision --freeze-connector), each
    frame stack's visual tokens are computed once, without gradients and without the Q-Former's dropout."""
    from tpo.train import recipe

    cfg, _, pool = setup
    model = fresh(cfg)
    model.train()
    recipe.trainable_parameters(model, 1)
    assert not recipe.visual_parts_frozen(model)
    recipe.trainable_parameters(model, 1, freeze_vision=True, freeze_connector=True)
    assert recipe.visual_parts_frozen(model)
    calls = []
    encode = model.encode_visual
    monkeypatch.setattr(model, "encode_visual", lambda pixels: calls.append(len(pixels)) or encode(pixels))
    cache: dict = {}
    batch = pool[:6]
    first = recipe._batch_visual(model, batch, cache)
    again = recipe._batch_visual(model, batch, cache)
    stacks = len({id(s.frames) for s in batch})
    assert sum(calls) == stacks and len(cache) == stacks
    assert all(a is b for a, b in zip(first, again, strict=True)) and not first[0].requires_grad
    assert model.training and model.connector.training                    # modes restored
    model.eval()
    with torch.no_grad():
        expected = recipe._batch_visual(model, batch)
    assert all(torch.allclose(a, b) for a, b in zip(first, expected, strict=True))
