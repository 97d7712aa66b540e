"""Reference inference: decoding with the KV cache, the task-token router, and each head's result."""

import numpy as np
import pytest
import torch

from tpo.errors import InputError
from tpo.model.config import load_config
from tpo.model.demo import demo_video
from tpo.model.generate import generate
from tpo.model.preprocess import Video, middle_frame_indices, mllm_pixels
from tpo.model.prompt import build_prompt
from tpo.model.tokenizer import load_tokenizer, task_token_ids
from tpo.model.tpo_model import build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = build_model(cfg)
    return model, load_tokenizer(cfg.tokenizer)


class ForceTokens:
    """Makes the LLM emit a scripted sequence: adds a large logit to the scripted token at each step.

    A forward hook on the LM head; the n-th call scripts the n-th token (the prefill is call 0)."""

    def __init__(self, model, script: list[int]):
        self.script, self.calls = script, 0
        head = model.lm.get_output_embeddings()
        self.handle = head.register_forward_hook(self.hook)

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


def full_forward_hidden(model, tok, video, question, generated: list[int], task: str) -> torch.Tensor:
    """The final-norm hidden state at the task embedding from ONE uncached forward over
    prompt + generated tokens (trigger last) + the task embedding."""
    cfg = model.cfg
    ids = task_token_ids(tok)
    image = video.frames.shape[0] == 1
    prompt = build_prompt(tok, question, cfg.num_visual_tokens, media="image" if image else "video")
    frames = video.frames[middle_frame_indices(1 if image else cfg.vision.num_frames, video.frames.shape[0])]
    visual = model.encode_visual(mllm_pixels(frames, cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std))
    placeholder = ids.placeholders[task]
    prompt.input_ids = torch.cat([prompt.input_ids, torch.tensor(generated + [placeholder])])
    prompt.visual_mask = torch.cat([prompt.visual_mask, torch.zeros(len(generated) + 1, dtype=torch.bool)])
    embeds = model.embed_prompt(prompt, visual, placeholder_ids={task: placeholder})
    out = model.lm(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1][0, -1]


@torch.no_grad()
@pytest.mark.parametrize("task", ["region", "temporal", "track"])
def test_router_state_with_cache_equals_one_full_forward(tiny, task):
    model, tok = tiny
    ids = task_token_ids(tok)
    trigger = {"region": ids.box_begin, "temporal": ids.time_begin, "track": ids.track_begin}[task]
    text = tok("it is", add_special_tokens=False).input_ids
    video = demo_video(num_frames=12)
    question = "track the red circle"
    with ForceTokens(model, text + [trigger, ids.eos]):
        res = generate(model, tok, video if task != "region" else Video(video.frames[:1], 8.0), question)
    assert res.task == task and res.token_ids == text + [trigger, ids.eos]
    clip = video if task != "region" else Video(video.frames[:1], 8.0)
    want = full_forward_hidden(model, tok, clip, question, text + [trigger], task)
    torch.testing.assert_close(res.prompts[task], want, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_each_head_returns_its_result_in_source_pixels(tiny):
    model, tok = tiny
    ids = task_token_ids(tok)
    video = demo_video(num_frames=12)
    h, w = video.size_hw
    with ForceTokens(model, [ids.track_begin, ids.eos]):
        res = generate(model, tok, video, "track the red circle")
    assert len(res.track) == 1
    tr = res.track[0]
    assert tr.masks.shape == (12, h, w) and tr.masks.dtype == bool
    assert len(tr.boxes) == len(tr.scores) == 12
    for box, mask in zip(tr.boxes, tr.masks, strict=True):
        assert (box is None) == (not mask.any())
    with ForceTokens(model, [ids.box_begin, ids.eos]):
        res = generate(model, tok, Video(video.frames[:1], 8.0), "where is the red circle?")
    box = res.region[0]
    assert np.allclose(box.box_xyxy, np.array(box.box_normalised) * [w, h, w, h], atol=1e-4)
    with ForceTokens(model, [ids.time_begin, ids.eos]):
        res = generate(model, tok, video, "when does the red circle appear?")
    t = res.temporal[0]
    n_clips = int(np.ceil(video.duration_s / model.cfg.temporal_clip_s))
    assert len(t.saliency) == n_clips and len(t.windows) == model.cfg.temporal_head.num_queries
    assert all(0 <= s <= e <= video.duration_s + 1e-6 for s, e, _ in t.windows)
    assert [w[2] for w in t.windows] == sorted((w[2] for w in t.windows), reverse=True)
    assert res.text == "" and "<time_begin>" in res.raw_text


@torch.no_grad()
def test_release_trigger_order_is_available_and_differs(tiny):
    model, tok = tiny
    ids = task_token_ids(tok)
    video = demo_video(num_frames=12)
    with ForceTokens(model, [ids.box_begin, ids.eos]):
        a = generate(model, tok, video, "where is the red circle?")
    with ForceTokens(model, [ids.box_begin, ids.eos]):
        b = generate(model, tok, video, "where is the red circle?", trigger_order="release")
    assert a.task == b.task == "region"
    assert not torch.allclose(a.prompts["region"], b.prompts["region"])
    with pytest.raises(InputError, match="trigger_order"):
        generate(model, tok, video, "where?", trigger_order="sideways")


@torch.no_grad()
def test_no_trigger_means_text_only_and_track_box_embeds_the_users_box(tiny):
    model, tok = tiny
    ids = task_token_ids(tok)
    video = demo_video(num_frames=12)
    words = tok("three", add_special_tokens=False).input_ids
    with ForceTokens(model, words + [ids.eos]):
        res = generate(model, tok, video, "how many shapes are there?")
    assert res.task == "none" and res.text == "three" and not (res.region or res.temporal or res.track)
    q = "track this <track_box>"
    with ForceTokens(model, [ids.track_begin, ids.eos]):
        a = generate(model, tok, video, q, boxes=torch.tensor([[0.1, 0.2, 0.5, 0.6]]))
    with ForceTokens(model, [ids.track_begin, ids.eos]):
        b = generate(model, tok, video, q, boxes=torch.tensor([[0.6, 0.1, 0.9, 0.4]]))
    assert not torch.allclose(a.prompts["track"], b.prompts["track"])
    with pytest.raises(ValueError, match="1 <track_box> token"):
        generate(model, tok, video, q)


class RecordSteps:
    """Wraps `model.llm_step`: per call the cache length before and after, the logits and hidden states."""

    def __init__(self, model):
        self.model, self.step, self.calls = model, model.llm_step, []

    def __call__(self, embeds, past=None):
        before = 0 if past is None else past.get_seq_length()
        logits, hidden, cache = self.step(embeds, past)
        self.calls.append((before, cache.get_seq_length(), logits[0, -1].clone(), hidden[0, -1].clone()))
        return logits, hidden, cache

    def __enter__(self):
        self.model.llm_step = self
        return self

    def __exit__(self, *exc):
        del self.model.llm_step


@torch.no_grad()
def test_release_trigger_order_discards_the_task_step_and_feeds_the_trigger_in_its_place(tiny):
    """The release's rule: the task embedding goes where the trigger would go (the head's state), that step's
    cache is dropped, the trigger is fed at the same position, and decoding goes on as if no task step was made."""
    model, tok = tiny
    cfg = model.cfg
    ids = task_token_ids(tok)
    video = demo_video(num_frames=12)
    question = "when does the red circle appear?"
    text = tok("it is", add_special_tokens=False).input_ids
    with RecordSteps(model) as steps, ForceTokens(model, text + [ids.time_begin]):
        res = generate(model, tok, video, question, max_new_tokens=len(text) + 3, trigger_order="release")
    assert res.token_ids[: len(text) + 1] == text + [ids.time_begin] and res.task == "temporal"

    # the sequences by hand: prompt + text + task embedding, and prompt + text + trigger
    idx = middle_frame_indices(cfg.vision.num_frames, video.frames.shape[0])
    prompt = build_prompt(tok, question, cfg.num_visual_tokens, frame_indices=idx, fps=video.fps)
    visual = model.encode_visual(mllm_pixels(video.frames[idx], cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std))
    base = torch.cat([model.embed_prompt(prompt, visual, placeholder_ids={}),
                      model.token_embeddings(torch.tensor([text]))], dim=1)
    n = base.shape[1]                                           # the trigger's position
    with_task = torch.cat([base, model.task_embedding("temporal").to(model.dtype)], dim=1)
    want_h = model.lm(inputs_embeds=with_task, output_hidden_states=True, use_cache=False).hidden_states[-1][0, -1]
    with_trigger = torch.cat([base, model.token_embeddings(torch.tensor([[ids.time_begin]]))], dim=1)
    want_logits = model.lm(inputs_embeds=with_trigger, use_cache=False).logits[0, -1]

    # calls: prefill, one per text token, the task step, the trigger step, then plain decoding
    task_call, trigger_call = steps.calls[len(text) + 1], steps.calls[len(text) + 2]
    assert task_call[0] == n and trigger_call[0] == n and trigger_call[1] == n + 1   # same position, one entry
    torch.testing.assert_close(res.prompts["temporal"], want_h, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(trigger_call[2], want_logits, rtol=1e-4, atol=1e-4)
    assert res.token_ids[len(text) + 1] == int(want_logits.argmax())
    if len(steps.calls) > len(text) + 3:                        # decoding went on from n + 1
        assert steps.calls[len(text) + 3][0] == n + 1


@torch.no_grad()
def test_a_timestamp_question_gets_the_frame_time_sentence(tiny, monkeypatch):
    import tpo.model.generate as gen

    model, tok = tiny
    built = []

    def record(*args, **kwargs):
        built.append(build_prompt(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(gen, "build_prompt", record)
    video = demo_video(num_frames=12)
    ids = task_token_ids(tok)
    for question in ("at which timestamp does the red circle appear?", "when does the red circle appear?"):
        with ForceTokens(model, [ids.eos]):
            generate(model, tok, video, question)
    idx = middle_frame_indices(model.cfg.vision.num_frames, 12)
    want = build_prompt(tok, "at which timestamp does the red circle appear?", model.cfg.num_visual_tokens,
                        frame_indices=idx, fps=video.fps)
    assert built[0].input_ids.tolist() == want.input_ids.tolist()
    times = ", ".join(str(round(i / video.fps, 1)) for i in np.array(idx))      # the release's formula
    assert f"The video contains {len(idx)} frames sampled at {times} seconds.[/INST]" in tok.decode(built[0].input_ids)
    assert "The video contains" not in tok.decode(built[1].input_ids)
