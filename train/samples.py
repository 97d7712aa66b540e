"""Training samples: synthetic clips turned into prompts, answers and head targets, cached small.

Each query of a clip becomes one `Sample` (sample.py): the question's prompt plus the answer the model must
produce, then EOS. A query routed to a task (`tpo.contract.tasks`) answers its trigger and placeholder
(`<box_begin><boxes>`, `<time_begin><temp>`, `<track_begin><tracking>`), and that task's training head
(`tpo.train.heads`) fills the targets; a conversation query answers its text.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from tpo.contract.tasks import TASKS
from tpo.data.synthetic import CATEGORIES, Clip, Query, SceneConfig, make_clip
from tpo.model.config import TPOConfig
from tpo.model.preprocess import middle_frame_indices
from tpo.model.prompt import build_prompt
from tpo.model.tokenizer import TaskTokenIds, task_token_ids

from .heads import train_head
from .sample import Sample, resize_frames


def clip_samples(clip: Clip, cfg: TPOConfig, tokenizer) -> list[Sample]:
    ids = task_token_ids(tokenizer)
    video = resize_frames(clip.frames[middle_frame_indices(cfg.vision.num_frames, clip.num_frames)],
                          cfg.vision.image_size)
    shared: dict = {}       # what every query of the clip may reuse (the temporal head's per-clip frames)
    out = []
    for q in clip.queries:
        sample = _query_sample(clip, q, video, cfg, tokenizer, ids)
        task = TASKS.get(q.route)
        if task is not None and not train_head(task.name).targets(sample, clip, q, cfg, shared):
            continue
        out.append(sample)
    return out


def _query_sample(clip: Clip, q: Query, video, cfg: TPOConfig, tokenizer, ids: TaskTokenIds) -> Sample:
    """The prompt and answer of one query (no head targets yet): `<trigger><placeholder>` for a routed
    query, whose placeholder is never decoded (the task embedding is fed there), else the answer text."""
    task = TASKS.get(q.route)
    media = task.media if task is not None else "video"
    prompt = build_prompt(tokenizer, q.question, cfg.num_visual_tokens, media=media,
                          frame_indices=middle_frame_indices(cfg.vision.num_frames, clip.num_frames), fps=clip.fps)
    if task is not None:
        answer = [ids.by_token[task.trigger], ids.by_token[task.placeholder]]
    else:
        answer = tokenizer(q.answer, add_special_tokens=False).input_ids
    answer = answer + [ids.eos]
    n = len(prompt)
    input_ids = torch.cat([prompt.input_ids, torch.tensor(answer)])
    labels = torch.full_like(input_ids, -100)
    labels[n:] = torch.tensor(answer)
    placeholder = -1
    if task is not None:
        placeholder = n + 1
        labels[placeholder] = -100
    return Sample(
        task=q.task, route=q.route, clip=clip.name, frames=video, input_ids=input_ids, labels=labels,
        visual_mask=torch.cat([prompt.visual_mask, torch.zeros(len(answer), dtype=torch.bool)]),
        placeholder=placeholder, question_ids=tokenizer(q.question, add_special_tokens=False).input_ids,
        media=media, category=_named_category(clip, q) if task is None else -1,
    )


def _named_category(clip: Clip, q: Query) -> int:
    """The CATEGORIES index of the object a question names (-1: none)."""
    if q.object_id is None:
        return -1
    o = clip.spec.objects[q.object_id]
    return CATEGORIES.index((o.colour, o.shape))


def build_pool(cfg: TPOConfig, tokenizer, clips: int, seed: int, scene: SceneConfig | None = None,
               progress: bool = False) -> list[Sample]:
    """Samples of `clips` synthetic clips of the stream `seed` (deterministic)."""
    samples: list[Sample] = []
    for i in tqdm(range(clips), desc="rendering clips", disable=not progress, leave=False):
        samples += clip_samples(make_clip(i, seed, scene), cfg, tokenizer)
    return samples
