"""Reference inference: greedy decoding with a KV cache, the task-token router, and the heads.

`generate(model, tokenizer, video, question)` returns the answer text and what each triggered head
produced. On a trigger token (`<box_begin>` -> region, `<time_begin>` -> temporal, `<track_begin>`
-> track) one more LLM step feeds the task embedding; its final-norm hidden state is the head's
prompt.

The release's quirk: its demo never feeds the trigger back before that step (the cache holds
"..., task embedding, trigger" afterwards), while training sequences read "<trigger><placeholder>".
We follow the TRAINING order by default: the step feeds [trigger, task embedding] and decoding
continues from the task position, so the hidden state equals a plain forward over the same tokens
(pinned by tests/model/test_generate.py). `trigger_order="release"` reproduces the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tpo.errors import InputError

from .mask_tracker import track_clip
from .preprocess import Video, mask_pixels, middle_frame_indices, mllm_pixels
from .prompt import build_prompt
from .temporal_features import ExternalEncoders, InternalFeatures, TemporalFeatureSource
from .temporal_head import decode_saliency, decode_windows
from .tokenizer import TASK_TOKENS, task_token_ids


@dataclass
class RegionResult:
    box_xyxy: list[float]          # pixels of the frame the question was about
    box_normalised: list[float]    # x1, y1, x2, y2 in [0, 1] (as the head outputs them, unclamped)
    frame: int


@dataclass
class TemporalResult:
    windows: list[list[float]]     # [[start_s, end_s, score], ...], best first
    saliency: list[float]          # one score per clip
    clip_len_s: float
    windows_raw: list[list[float]] = field(default_factory=list)   # not snapped to the clip grid


@dataclass
class TrackResult:
    masks: np.ndarray              # [T, H, W] bool, source pixels
    boxes: list[list[float] | None]  # per frame [x1, y1, x2, y2] pixels, None where the mask is empty
    scores: list[float]            # per frame object score (logit of "object present")


@dataclass
class GenerationResult:
    text: str                      # the answer without task tokens
    raw_text: str                  # the answer with task tokens as decoded
    task: str                      # first triggered task: "region" | "temporal" | "track" | "none"
    token_ids: list[int]
    region: list[RegionResult] = field(default_factory=list)
    temporal: list[TemporalResult] = field(default_factory=list)
    track: list[TrackResult] = field(default_factory=list)
    prompts: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> the router's hidden state [H]


def temporal_source(model, tokenizer) -> TemporalFeatureSource:
    cfg = model.cfg
    if cfg.temporal_features == "internal":
        return InternalFeatures(model, tokenizer, cfg.temporal_clip_s, cfg.temporal_clip_frames,
                                cfg.temporal_head.max_text_len)
    return ExternalEncoders()


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
    """
    if trigger_order not in ("training", "release"):
        raise InputError(f"trigger_order must be 'training' or 'release', got {trigger_order!r}")
    cfg = model.cfg
    ids = task_token_ids(tokenizer)
    media = "image" if video.frames.shape[0] == 1 else "video"
    prompt = build_prompt(tokenizer, question, cfg.num_visual_tokens, media=media, one_bos=one_bos)
    n_frames = 1 if media == "image" else cfg.vision.num_frames
    frames = video.frames[middle_frame_indices(n_frames, video.frames.shape[0])]
    pixels = mllm_pixels(frames, cfg.vision.image_size, cfg.pixel_mean, cfg.pixel_std).to(model.device, model.dtype)
    visual = model.encode_visual(pixels)
    embeds = model.embed_prompt(prompt, visual, placeholder_ids={}, boxes=boxes)

    result = GenerationResult(text="", raw_text="", task="none", token_ids=[])
    logits, _, past = model.llm_step(embeds)
    next_logits = logits[0, -1]
    for _ in range(max_new_tokens):
        token = int(next_logits.argmax())
        result.token_ids.append(token)
        if token == ids.eos:
            break
        task = ids.triggers.get(token)
        if task is None:
            logits, _, past = model.llm_step(model.token_embeddings(torch.tensor([[token]])), past)
            next_logits = logits[0, -1]
            continue
        if result.task == "none":
            result.task = task
        task_emb = model.task_embedding(task).to(model.dtype)
        if trigger_order == "training":
            step = torch.cat([model.token_embeddings(torch.tensor([[token]])), task_emb], dim=1)
            logits, hidden, past = model.llm_step(step, past)
            next_logits = logits[0, -1]
        else:
            _, hidden, past = model.llm_step(task_emb, past)
            logits, _, past = model.llm_step(model.token_embeddings(torch.tensor([[token]])), past)
            next_logits = logits[0, -1]
        h = hidden[0, -1]
        result.prompts.setdefault(task, h.float())
        run_head(model, tokenizer, task, h, video, question, result, features)
    result.raw_text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
    text = result.raw_text
    for t in TASK_TOKENS:
        text = text.replace(t, "")
    result.text = " ".join(text.split())
    return result


def run_head(model, tokenizer, task: str, h: torch.Tensor, video: Video, question: str,
             result: GenerationResult, features: TemporalFeatureSource | None) -> None:
    """Run one head on the router's hidden state h [H] and append its result."""
    height, width = video.size_hw
    if task == "region":
        box = model.region_box(h[None])[0].float()
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        result.region.append(RegionResult(
            box_xyxy=(box * scale).tolist(), box_normalised=box.tolist(), frame=0))
    elif task == "temporal":
        source = features or temporal_source(model, tokenizer)
        feats = source(video, question)
        out = model.cg_model(
            text_feats=feats.text.to(model.dtype), text_mask=feats.text_mask,
            video_feats=feats.video.to(model.dtype), video_mask=feats.video_mask,
            prompt_token=h[None, None].to(model.dtype),
        )
        duration = min(feats.video.shape[1] * feats.clip_len_s, video.duration_s)
        result.temporal.append(TemporalResult(
            windows=decode_windows(out, duration_s=duration, clip_len_s=feats.clip_len_s),
            saliency=decode_saliency(out), clip_len_s=feats.clip_len_s,
            windows_raw=decode_windows(out, duration_s=duration, clip_len_s=feats.clip_len_s, snap=False)))
    elif task == "track":
        cfg = model.cfg
        sparse = model.track_prompt(h[None]).to(model.dtype)           # (1, 3, C)
        pixels = mask_pixels(video.frames, cfg.mask_head.image_size, cfg.pixel_mean, cfg.pixel_std)
        masks, boxes, scores = track_clip(model.sam, pixels.to(model.device, model.dtype), sparse, (height, width))
        result.track.append(TrackResult(masks=np.stack(masks), boxes=boxes, scores=scores))
    else:
        raise AssertionError(task)

