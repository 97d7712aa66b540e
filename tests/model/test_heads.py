"""The model-side task registry: one head per registered task, each head's prompt is the exported router's
output, and `generate` routes through the registry (a toy task answers where a released one did)."""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tpo.contract import graphs as G
from tpo.contract import tasks
from tpo.model import heads as heads_module
from tpo.model.config import load_config
from tpo.model.demo import demo_video
from tpo.model.generate import GenerationResult, generate, run_head
from tpo.model.graphs import graph_defs, graph_sizes
from tpo.model.heads import HEADS, Ask, head_for, register_head
from tpo.model.preprocess import Video
from tpo.model.tokenizer import load_tokenizer, task_token_ids
from tpo.model.tpo_model import build_model

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    return build_model(cfg), load_tokenizer(cfg.tokenizer)


def test_every_registered_task_has_one_head_and_its_tokens():
    assert list(HEADS) == list(tasks.TASKS)
    for name, head in HEADS.items():
        assert head.task is tasks.TASKS[name] and head.example_question
    with pytest.raises(KeyError, match="no model head registered for task 'audio'"):
        head_for("audio")


def test_token_ids_and_task_embeddings_follow_the_registry(tiny):
    model, tok = tiny
    ids = task_token_ids(tok)
    assert ids.triggers == {tok.convert_tokens_to_ids(t.trigger): t.name for t in tasks.TASKS.values()}
    assert ids.placeholders == {t.name: tok.convert_tokens_to_ids(t.placeholder) for t in tasks.TASKS.values()}
    for t in tasks.TASKS.values():
        assert model.task_embedding(t.name) is getattr(model, t.embedding)


@torch.no_grad()
def test_each_heads_prompt_is_the_exported_routers_output(tiny):
    model, _ = tiny
    router = graph_defs(model, only=(G.TASK_ROUTER.name,))[0]
    hidden = torch.randn(2, model.cfg.llm.hidden_size)
    outputs = dict(zip(G.TASK_ROUTER.output_names, router.module(hidden), strict=True))
    _, specs = G.TASK_ROUTER.tensors(graph_sizes(model.cfg))
    shapes = {s.name: s.shape for s in specs}
    for head in HEADS.values():
        prompt = head.route(model, hidden)
        torch.testing.assert_close(prompt, outputs[head.task.router_output], rtol=0, atol=0)
        want = shapes[head.task.router_output]
        assert list(prompt.shape[1:]) == list(want[1:])


# ---- a toy task, routed by the region trigger in place of region -------------------------------------------

class ForceTokens:
    """The LLM emits `script`: a large logit on the n-th scripted token at the n-th LM-head call (as in
    test_generate.py)."""

    def __init__(self, model, script: list[int]):
        self.script, self.calls = script, 0
        self.handle = model.lm.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, module, args, out):
        if self.calls < len(self.script):
            out = out.clone()
            out[0, -1, self.script[self.calls]] += 1e4
        self.calls += 1
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@dataclass
class ToyResult:
    norm: float
    frames: int


class ToyHead:
    """Answers with the norm of its prompt and the number of frames it was shown."""

    task = tasks.Task("toy", "<box_begin>", "<boxes>", "box_token", "region_box", "video")
    example_question = "how big is the toy?"

    def route(self, model, hidden):
        return model.region_box(hidden)

    def answer(self, model, hidden, ask: Ask) -> ToyResult:
        return ToyResult(float(self.route(model, hidden[None]).norm()), ask.video.frames.shape[0])

    def describe(self, result: ToyResult) -> str:
        return f"toy norm {result.norm:.3f}"


@pytest.fixture
def toy_instead_of_region():
    """The registries with region replaced by the toy task (its tokens and embedding), restored afterwards."""
    saved_tasks, saved_heads = dict(tasks.TASKS), dict(HEADS)
    tasks.unregister("region")
    heads_module.unregister_head("region")
    head = ToyHead()
    tasks.register(head.task)
    register_head(head)
    try:
        yield head
    finally:
        tasks.TASKS.clear()
        tasks.TASKS.update(saved_tasks)
        HEADS.clear()
        HEADS.update(saved_heads)


@torch.no_grad()
def test_generate_routes_a_registered_toy_task_to_its_head(tiny, toy_instead_of_region):
    model, tok = tiny
    ids = task_token_ids(tok)
    assert ids.triggers[ids.box_begin] == "toy"
    video = demo_video(num_frames=6)
    with ForceTokens(model, [ids.box_begin, ids.eos]):
        res = generate(model, tok, video, "how big is the toy?")
    assert res.task == "toy" and list(res.answers) == ["toy"] and not res.region
    (answer,) = res.of("toy")
    assert answer.frames == 6
    want = float(model.region_box(res.prompts["toy"][None]).norm())
    assert answer.norm == pytest.approx(want, rel=1e-5)
    again = GenerationResult(text="", raw_text="", task="toy", token_ids=[])
    run_head(model, tok, "toy", res.prompts["toy"], Video(video.frames[:1], 8.0), "q", again, None)
    assert again.of("toy")[0].frames == 1


def test_registering_a_head_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_head(HEADS["track"])


def test_mask_head_does_not_import_the_tracker():
    """The tracker builds on the head; the head never imports the tracker (no import cycle)."""
    tree = ast.parse((MODEL_DIR / "mask_head.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("mask_tracker" in m for m in imported), imported
