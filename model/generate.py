"""Reference inference: greedy decoding with a KV cache, the task-token router, and the heads.

`generate(model, tokenizer, video, question)` returns the answer text and what each triggered head
produced. On a trigger token (each registered task's `Task.trigger`, e.g. `<box_begin>` -> region) one
more LLM step feeds the task embedding; its final-norm hidden state is the head's prompt, and the head
registered under the task's name (`tpo.model.heads.HEADS`) answers.

The release's quirk: after emitting a trigger at position p, its demo feeds the task embedding at p
(the trigger itself not fed yet), reads the head's hidden state there, DISCARDS that step's cache, and
feeds the trigger at the same position p; decoding goes on from the trigger, so the cache holds
"..., trigger" and never the task embedding. Training sequences read "<trigger><placeholder>" instead.
We follow the TRAINING order by default: the step feeds [trigger, task embedding] and decoding
continues from the task position, so the hidden state equals a plain forward over the same tokens
(pinned by tests/model/test_generate.py). `trigger_order="release"` reproduces the demo (also pinned there:
its hidden state is a plain forward over the tokens before the trigger + the task embedding, its next
logits and cache those of a plain forward with the trigger fed as an ordinary token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tpo.contract.tasks import CHAT, TASK_TOKENS
from tpo.errors import InputError

from .heads import Ask, RegionResult, TemporalResult, TrackResult, head_for
from .preprocess import Video, middle_frame_indices, mllm_pixels
from .prompt import build_prompt
from .temporal_features import TemporalFeatureSource, temporal_source  # noqa: F401  (re-exported)
from .tokenizer import task_token_ids


@dataclass
class GenerationResult:
    text: str                      # the answer without task tokens
    raw_text: str                  # the answer with task tokens as decoded
    task: str                      # first triggered task's name, or CHAT ("none")
    token_ids: list[int]
    answers: dict[str, list[Any]] = field(default_factory=dict)       # task -> its head's results, in order
    prompts: dict[str, torch.Tensor] = field(default_factory=dict)   # task -> the router's hidden state [H]

    def of(self, task: str) -> list[Any]:
        """The results of `task`'s head (a list the caller may append to)."""
        return self.answers.setdefault(task, [])

    # the released heads' results by name, as evaluation, the parity checks and the demo read them
    @property
    def region(self) -> list[RegionResult]:
        return self.of("region")

    @property
    def temporal(self) -> list[TemporalResult]:
        return self.of("temporal")

    @property
    def track(self) -> list[TrackResult]:
        return self.of("track")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    video: Video,
    question: str,
    boxes: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    trigger_order: str = "training",
    features: TemporalFeatureSource | None = None,
    one_bos: bool = False,
) -> GenerationResult:
    """Answer `question` about `video`; run the head of each trigger the model emits.

    video: frames [N, H, W, 3] uint8 RGB with fps; one frame means an image (region questions).
    boxes: [K, 4] normalised x1,y1,x2,y2, one per `<track_box>` in the question.
    trigger_order: "training" feeds [trigger, task embedding] and decodes on after the task embedding;
    "release" feeds the task embedding in the trigger's place, drops it from the cache, then feeds the
    trigger at that same position (the release's demo; see the module docstring).
    """
    if trigger_order not in ("training", "release"):
        raise InputError(f"trigger_order must be 'training' or 'release', got {trigger_order!r}")
    ids = task_token_ids(tokenizer)
    triggers = ids.triggers
    embeds = _prompt_embeddings(model, tokenizer, video, question, boxes, one_bos)
    result = GenerationResult(text="", raw_text="", task=CHAT, token_ids=[])
    logits, _, past = model.llm_step(embeds)
    next_logits = logits[0, -1]
    for _ in range(max_new_tokens):
        token = int(next_logits.argmax())
        result.token_ids.append(token)
        if token == ids.eos:
            break
        task = triggers.get(token)
        if task is None:
            logits, _, past = model.llm_step(model.token_embeddings(torch.tensor([[token]])), past)
            next_logits = logits[0, -1]
            continue
        if result.task == CHAT:
            result.task = task
        h, next_logits, past = _task_step(model, task, token, past, trigger_order)
        result.prompts.setdefault(task, h.float())
        run_head(model, tokenizer, task, h, video, question, result, features)
    result.raw_text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
    text = result.raw_text
    for t in TASK_TOKENS:
        text = text.replace(t, "")
    result.text = " ".join(text.split())
    return result


def _prompt_embeddings(model, tokenizer, video: Video, question: str, boxes: torch.Tensor | None,
                       one_bos: bool) -> torch.Tensor:
    """The prompt's inputs_embeds [1, L, H]: one frame is an image, more are a video (num_frames sampled)."""
    cfg = model.cfg
    media = "image" if video.frames.shape[0] == 1 else "video"
    indices = middle_frame_indices(1 if media == "image" else cfg.vision.num_frames, video.frames.shape[0])
    prompt = build_prompt(tokenizer, question, cfg.num_visual_tokens, media=media, frame_indices=indices,
                          fps=video.fps, one_bos=one_bos)
    frames = video.frames[indices]
    pixels = mllm_pixels(frames, cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std).to(model.device, model.dtype)
    visual = model.encode_visual(pixels)
    return model.embed_prompt(prompt, visual, placeholder_ids={}, boxes=boxes)


def _task_step(model, task: str, token: int, past, trigger_order: str):
    """Feed the task embedding for trigger `token` (emitted, not yet fed): -> (hidden state at the task
    embedding [H], the next token's logits [V], the cache)."""
    task_emb = model.task_embedding(task).to(model.dtype)
    trigger = model.token_embeddings(torch.tensor([[token]]))
    if trigger_order == "training":
        logits, hidden, past = model.llm_step(torch.cat([trigger, task_emb], dim=1), past)
    else:
        _, hidden, past = model.llm_step(task_emb, past)
        past.crop(-1)                    # the release keeps the cache from before the task embedding
        logits, _, past = model.llm_step(trigger, past)
    return hidden[0, -1], logits[0, -1], past


def run_head(model, tokenizer, task: str, h: torch.Tensor, video: Video, question: str,
             result: GenerationResult, features: TemporalFeatureSource | None) -> None:
    """Run `task`'s head on the router's hidden state h [H] and append its result to `result.of(task)`."""
    result.of(task).append(head_for(task).answer(model, h, Ask(tokenizer, video, question, features)))
