"""The training-side task registry: one training head per task, stage 2 trains what the heads declare, and
the recipe's losses come from the registry (a toy task's head gets its samples' states)."""

import dataclasses

import pytest
import torch

from tpo.contract import tasks
from tpo.data.synthetic import SceneConfig
from tpo.errors import ConfigError
from tpo.model.config import load_config
from tpo.model.tokenizer import load_tokenizer
from tpo.model.tpo_model import build_model
from tpo.train import heads as train_heads
from tpo.train.heads import TRAIN_HEADS, register_train_head, train_head
from tpo.train.recipe import RecipeConfig, batch_losses, trainable_parameters
from tpo.train.samples import build_pool

SCENE = SceneConfig(width=160, height=120, duration_range_s=(4.0, 4.5), fps_range=(8, 8))


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("tiny")
    tok = load_tokenizer(cfg.tokenizer)
    torch.manual_seed(0)
    return build_model(cfg), build_pool(cfg, tok, clips=1, seed=3, scene=SCENE)


def test_every_registered_task_has_a_training_head():
    assert list(TRAIN_HEADS) == list(tasks.TASKS)
    for name, head in TRAIN_HEADS.items():
        assert head.task is tasks.TASKS[name] and head.parameters
    with pytest.raises(ConfigError, match="task 'audio' has no training head"):
        train_head("audio")


def test_stage_two_trains_the_heads_parameters_and_the_task_embeddings(setup):
    model, _ = setup
    prefixes = [p for h in TRAIN_HEADS.values() for p in h.parameters]
    embeddings = [t.embedding for t in tasks.TASKS.values()]
    names = [n for n, p in model.named_parameters() if any(p is q for q in trainable_parameters(model, 2))]
    assert names and all(n.startswith(tuple(prefixes)) or n in embeddings for n in names)
    for prefix in prefixes + embeddings:
        assert any(n.startswith(prefix) for n in names), prefix


def test_samples_answer_with_the_registered_tokens(setup):
    model, pool = setup
    tok = load_tokenizer(model.cfg.tokenizer)
    for s in pool:
        task = tasks.TASKS.get(s.route)
        if task is None:
            assert s.placeholder == -1 and s.media == "video"
            continue
        want = tok.convert_tokens_to_ids([task.trigger, task.placeholder])
        assert s.input_ids[s.placeholder - 1: s.placeholder + 1].tolist() == want
        assert s.labels[s.placeholder] == -100 and s.media == task.media


class ToyTraining:
    """A toy task's training head: the squared region box of its states; remembers what it was given.
    (No `scorer`: the synthetic data never routes a query to it, so evaluation does not ask.)"""

    task = tasks.Task("toy", "<toy_begin>", "<boxes>", "box_token", "region_box", "image")
    parameters = ("loc_decoder.",)

    def __init__(self):
        self.seen = []

    def targets(self, sample, clip, q, cfg, shared):
        return True

    def loss(self, model, hidden, samples, rc, rng):
        self.seen.append((hidden.shape, [s.route for s in samples]))
        return model.region_box(hidden).pow(2).mean()


@pytest.fixture
def toy():
    head = ToyTraining()
    tasks.register(head.task)
    register_train_head(head)
    try:
        yield head
    finally:
        train_heads.unregister_train_head("toy")
        tasks.unregister("toy")


def test_the_recipe_asks_each_head_in_rc_heads_for_its_loss(setup, toy):
    model, pool = setup
    batch = [dataclasses.replace(s, route="toy") if s.route == "region" else s for s in pool]
    n = sum(s.route == "toy" for s in batch)
    assert n > 0
    rc = RecipeConfig(heads=("toy", "track"))
    trainable_parameters(model, 2)
    losses = batch_losses(model, batch, rc, stage=2, rng=torch.Generator().manual_seed(0))
    assert list(losses) == ["toy", "track"]
    assert toy.seen == [(torch.Size([n, model.cfg.llm.hidden_size]), ["toy"] * n)]
    losses["toy"].backward()
    assert model.loc_decoder[0].weight.grad is not None and model.box_token.grad is not None
    model.zero_grad(set_to_none=True)
