"""Training samples: synthetic clips turned into prompts, answers and head targets, cached small.

Each query of a clip becomes one `Sample`: the question's prompt plus the answer the model must
produce (`<box_begin><boxes>`, `<time_begin><temp>`, `<track_begin><tracking>`, or the answer
text), then EOS. Frames are kept only at the MLLM's input size (uint8), so a pool of a few hundred
clips fits in memory and batches are cheap to assemble.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from tpo.data.synthetic import Clip, SceneConfig, make_clip
from tpo.model.config import TPOConfig
from tpo.model.preprocess import middle_frame_indices, normalise, resize_uint8
from tpo.model.prompt import build_prompt
from tpo.model.temporal_features import clip_frame_indices, tef
from tpo.model.tokenizer import task_token_ids

TRIGGER_ANSWERS = {"region": ("box_begin", "boxes"), "temporal": ("time_begin", "temp"),
                   "track": ("track_begin", "tracking")}


@dataclass
class Sample:
    """One query, ready to batch. Frames are uint8 [T, S, S, 3] at the MLLM size."""

    task: str                      # "region" | "temporal" | "track" | "conversation"
    route: str                     # the head it must trigger, or "none"
    clip: str
    frames: np.ndarray             # video: the num_frames middle frames; region: the one frame asked about
    input_ids: torch.Tensor        # [L] prompt + answer + EOS
    labels: torch.Tensor           # [L] -100 on the prompt and the placeholder; answer ids + EOS elsewhere
    visual_mask: torch.Tensor      # [L] bool
    placeholder: int = -1          # index of the task placeholder in input_ids (-1: none)
    box: torch.Tensor | None = None           # region: target box normalised; track: frame-0 box normalised
    spans: torch.Tensor | None = None         # temporal: [n, 2] (centre, width), fractions of the duration
    saliency: torch.Tensor | None = None      # temporal: [Lv] 1 inside the moment, 0 outside
    clip_frames: np.ndarray | None = None     # temporal: [Lv, Tc, S, S, 3] uint8 frames of each clip
    question_ids: list[int] = field(default_factory=list)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, size, size, 3] uint8 (the MLLM branch's resize)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return resize_uint8(t, size).permute(0, 2, 3, 1).numpy()


def frames_to_pixels(frames: np.ndarray, cfg: TPOConfig) -> torch.Tensor:
    """uint8 [T, S, S, 3] (already at size) -> normalised [3, T, S, S] float32."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
    return normalise(x, cfg.pixel_mean, cfg.pixel_std).permute(1, 0, 2, 3)


def norm_box(box, width: int, height: int) -> torch.Tensor:
    x1, y1, x2, y2 = box
    return torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height], dtype=torch.float32)


def clip_samples(clip: Clip, cfg: TPOConfig, tokenizer) -> list[Sample]:
    ids = task_token_ids(tokenizer)
    s = cfg.vision.image_size
    w, h = clip.spec.width, clip.spec.height
    video = resize_frames(clip.frames[middle_frame_indices(cfg.vision.num_frames, clip.num_frames)], s)
    clip_frames = None      # the temporal head's per-clip frames: shared by every temporal query of the clip
    out = []
    for q in clip.queries:
        media = "image" if q.task == "region" else "video"
        prompt = build_prompt(tokenizer, q.question, cfg.num_visual_tokens, media=media)
        if q.route in TRIGGER_ANSWERS:
            trig, ph = TRIGGER_ANSWERS[q.route]
            answer = [getattr(ids, trig), getattr(ids, ph)]
        else:
            answer = tokenizer(q.answer, add_special_tokens=False).input_ids
        answer = answer + [ids.eos]
        n = len(prompt)
        input_ids = torch.cat([prompt.input_ids, torch.tensor(answer)])
        labels = torch.full_like(input_ids, -100)
        labels[n:] = torch.tensor(answer)
        placeholder = -1
        if q.route in TRIGGER_ANSWERS:
            placeholder = n + 1
            labels[placeholder] = -100      # never decoded: the task embedding is fed there
        sample = Sample(
            task=q.task, route=q.route, clip=clip.name, frames=video, input_ids=input_ids, labels=labels,
            visual_mask=torch.cat([prompt.visual_mask, torch.zeros(len(answer), dtype=torch.bool)]),
            placeholder=placeholder,
            question_ids=tokenizer(q.question, add_special_tokens=False).input_ids,
        )
        if q.task == "region":
            sample.frames = resize_frames(clip.frames[q.frame:q.frame + 1], s)
            sample.box = norm_box(q.box, w, h)
        elif q.task == "track":
            box = clip.box(0, q.object_id)
            if box is None:
                continue   # the object is not in frame 0: nothing to prompt the tracker with
            sample.box = norm_box(box, w, h)
        elif q.task == "temporal":
            d = clip.duration_s
            spans = torch.tensor(q.spans, dtype=torch.float32) / d
            sample.spans = torch.stack([(spans[:, 0] + spans[:, 1]) / 2, spans[:, 1] - spans[:, 0]], dim=1)
            clips = clip_frame_indices(clip.num_frames, clip.fps, cfg.temporal_clip_s, cfg.temporal_clip_frames)
            if clip_frames is None:
                clip_frames = resize_frames(clip.frames[np.concatenate(clips)], s).reshape(
                    len(clips), cfg.temporal_clip_frames, s, s, 3)
            sample.clip_frames = clip_frames
            starts = np.arange(len(clips)) * cfg.temporal_clip_s
            inside = [sum(max(0.0, min(e, a + cfg.temporal_clip_s) - max(b, a)) for b, e in q.spans)
                      for a in starts]
            sample.saliency = torch.tensor([float(c >= 0.5 * cfg.temporal_clip_s) for c in inside])
        out.append(sample)
    return out


def build_pool(cfg: TPOConfig, tokenizer, clips: int, seed: int, scene: SceneConfig | None = None,
               progress: bool = False) -> list[Sample]:
    """Samples of `clips` synthetic clips of the stream `seed` (deterministic)."""
    samples: list[Sample] = []
    for i in tqdm(range(clips), desc="rendering clips", disable=not progress, leave=False):
        samples += clip_samples(make_clip(i, seed, scene), cfg, tokenizer)
    return samples


def temporal_inputs(model, batch: list[Sample]) -> dict[str, torch.Tensor]:
    """The temporal head's inputs for temporal samples, from the model's own parts (no gradient):
    padded video features [B, Lv, Dv+2] + mask and text features [B, Lq, H] + mask."""
    cfg = model.cfg
    vids, texts = [], []
    done: dict[int, torch.Tensor] = {}      # queries of one clip share its clip frames: encode them once
    with torch.no_grad():
        for s in batch:
            key = id(s.clip_frames)
            if key not in done:
                pixels = torch.stack([frames_to_pixels(f, cfg) for f in s.clip_frames])   # (Lv, 3, Tc, S, S)
                feats = model.clip_features(pixels.to(model.device, model.dtype)).float()
                done[key] = torch.cat([feats, tef(feats.shape[0])], dim=1)
            vids.append(done[key])
            ids = s.question_ids[: cfg.temporal_head.max_text_len]
            texts.append(model.token_embeddings(torch.tensor([ids]))[0].float())
    lv, lq = max(v.shape[0] for v in vids), max(t.shape[0] for t in texts)
    b = len(batch)
    video = torch.zeros(b, lv, vids[0].shape[1])
    video_mask = torch.zeros(b, lv, dtype=torch.bool)
    text = torch.zeros(b, lq, texts[0].shape[1])
    text_mask = torch.zeros(b, lq, dtype=torch.bool)
    saliency = torch.zeros(b, lv)
    for i, (v, t, s) in enumerate(zip(vids, texts, batch)):
        video[i, : v.shape[0]], video_mask[i, : v.shape[0]] = v, True
        text[i, : t.shape[0]], text_mask[i, : t.shape[0]] = t, True
        saliency[i, : v.shape[0]] = s.saliency
    return {"video": video, "video_mask": video_mask, "text": text, "text_mask": text_mask, "saliency": saliency}
