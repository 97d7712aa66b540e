"""Stage 0, third part: the connector's representation stage, before it ever meets the LLM (BLIP-2's stage 1).

The release's Q-Former was pretrained at scale (BLIP-2's image-text stage) before the generative stage; trained
from scratch only through the LLM's answer loss, the tiny Q-Former learned the prior and passed almost no image
information (docs/training.md, "Known limits"). Here it learns, with the vision encoder still trainable, to
describe the clip in its own query tokens, on the synthetic clips' own descriptions: which colour-shape objects
show on which frame (matching: "is there a red circle on frame t?") and where (grounding: their boxes).

Slots: query `k * G + g` (k the colour-shape category in `tpo.data.synthetic.CATEGORIES` order) describes
category k on the g-th of G slot frames, G = min(F, Q // 12) (F = the vision encoder's frame count, Q the
connector's query tokens: the release's 96 give one slot per category and frame; tiny's 16 give G = 1, one slot
per category). A video's F frames are split into G equal runs; a slot says whether its category shows on any
frame of its run, and where it is on the run's first frame (a track query is prompted on the clip's first). An
image (one frame) is described the same way on every g. The description is read from the connector's output
(what the LLM sees, after `project_up`) by a throw-away linear head: a presence logit and a box (sigmoid centre
and size) per slot. Losses per slot: binary cross-entropy on presence; where present on the run's first frame,
L1 (x 5) and GIoU (x 2) on the box (DETR's weights). The vision encoder keeps its stage-0 coverage loss (a fresh
linear probe), so that the temporal head's clip features stay what the vision pretraining made them. What the
slots carry is what the LLM's questions need: a count or a colour / shape question is presence over the clip,
a region query a box on one image, a track query a box on the first frame. Layouts: these category slots, cell
slots (`connector_cells`: where, by position), or both, cell slots first and category slots after them (where
and what: cell slots alone carry less of what is in the clip, docs/training.md).

    pretrain_connector(model, steps, seed)   trains vision_encoder, vision_layernorm and connector in place;
                                             returns (summary, slot head)
    slot_readout(model, head, frames)        per category, presence probability [12] and box [12, 4] of one input
    connector_probe(model, clips)            what the slots pass on held-out clips (region Acc@0.5, count)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpo.data import metrics
from tpo.data.synthetic import CATEGORIES, NUMBER_WORDS, Clip, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.preprocess import middle_frame_indices

from .connector_cells import (
    MIN_PRESENT_PX,
    CellHead,
    cell_attention_loss,
    cell_attention_target,
    cell_slot_targets,
    cells_per_side,
    pass_values_through,
    read_category,
)
from .connector_cells import PRESENCE_WEIGHT as CELL_PRESENCE_WEIGHT
from .losses import generalized_box_iou
from .recipe_config import CONNECTOR_LAYOUTS as LAYOUTS
from .sample import frames_to_pixels, resize_frames
from .schedule import loss_summary, warmup_cosine
from .vision_pretrain import SUB, category_maps, patch_targets

FRAMES_PER_CLIP = 12          # single frames kept per pool clip
LOSS_WEIGHTS = {"presence": 1.0, "l1": 5.0, "giou": 2.0, "coverage": 1.0, "attention": 1.0}
CATEGORY_PREFIX = "category_"    # layout "both": the category slots' loss parts, beside the cell slots' own
# layout "both": the category slots say what shows, the cells where; boxed too, they took the shared connector from
# the cells (connector probe region Acc@0.5 0.67 -> 0.29 on 24 held-out clips, docs/training.md)
BOTH_CATEGORY_UNBOXED = ("l1", "giou")


def num_queries(cfg) -> int:
    return cfg.connector.num_query_tokens + cfg.connector.num_extra_query_tokens


def cell_slots(cfg, layout: str) -> int:
    """How many of the queries are cell slots (they come first): none for category slots."""
    return 0 if layout == "category" else cells_per_side(cfg, layout) ** 2


def slot_frames(cfg, layout: str = "category") -> int:
    """G: slot frames per category, as many of the F video frames as the queries after the cell slots allow."""
    return min(cfg.vision.num_frames, (num_queries(cfg) - cell_slots(cfg, layout)) // len(CATEGORIES))


def check_slots(cfg, layout: str = "category") -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"connector slot layout must be one of {LAYOUTS}, got {layout!r}")
    cells = cell_slots(cfg, layout)           # raises when the cells do not fit
    if layout != "cell" and slot_frames(cfg, layout) < 1:
        raise ConfigError(f"connector pretraining describes {len(CATEGORIES)} categories, one slot each at least; "
                          f"the connector has {num_queries(cfg)} queries ({cells} of them cell slots)")


def slot_targets(clip: Clip, index: np.ndarray, slots_t: int) -> tuple[Tensor, Tensor, Tensor]:
    """Presence [C, slots_t], normalised boxes [C, slots_t, 4] and whether each box counts [C, slots_t] (bool) of
    every category on the frames `index`: one frame (an image) is repeated on every slot; more are split into
    `slots_t` equal runs, a category present on a run when it shows on any of its frames, its box the one on the
    run's first frame (counted where it shows there: a track query prompts on the clip's first frame)."""
    c = len(CATEGORIES)
    present = torch.zeros(c, len(index))
    boxes = torch.zeros(c, len(index), 4)
    scale = np.array([clip.spec.width, clip.spec.height] * 2, np.float64)
    for k, o in enumerate(clip.spec.objects):
        cat = CATEGORIES.index((o.colour, o.shape))
        for j, t in enumerate(index):
            if clip.areas[t, k] >= MIN_PRESENT_PX:
                present[cat, j] = 1.0
                boxes[cat, j] = torch.from_numpy(clip.boxes[t, k] / scale).float()
    if len(index) == 1:
        present, boxes = present.expand(c, slots_t), boxes.expand(c, slots_t, 4)
    elif len(index) != slots_t:
        if len(index) < slots_t:
            raise ValueError(f"{len(index)} frames cannot fill {slots_t} slot frames")
        runs = np.array_split(np.arange(len(index)), slots_t)
        first = [int(r[0]) for r in runs]
        boxed = present[:, first] > 0
        present = torch.stack([present[:, r].amax(dim=1) for r in runs], dim=1)
        return present, boxes[:, first].contiguous(), boxed
    return present.contiguous(), boxes.contiguous(), present > 0


class ConnectorPool:
    """Per clip: FRAMES_PER_CLIP single frames and the video's `num_frames` middle frames, at the MLLM size,
    each as (frames, slot targets, coverage targets); the slot targets (`layout`'s) are a tuple: cell slots'
    (presence, box, boxed), category slots' (presence, box, boxed), or both, cells first."""

    def __init__(self, clips: int, seed: int, cfg, scene: SceneConfig | None = None, layout: str = "category"):
        rng = np.random.default_rng([seed, 9])
        size, f = cfg.vision.image_size, cfg.vision.num_frames
        grid = size // cfg.vision.patch_size
        n = cells_per_side(cfg, layout) if layout != "category" else 0
        g = slot_frames(cfg, layout) if layout != "cell" else 0

        def targets(clip: Clip, index: np.ndarray) -> tuple:
            cells = cell_slot_targets(clip, index, n) if n else ()
            return (*cells, *(slot_targets(clip, index, g) if g else ()))

        self.images: list[tuple] = []
        self.videos: list[tuple] = []
        for i in range(clips):
            clip = make_clip(i, seed, scene)
            singles = np.sort(rng.choice(clip.num_frames, size=min(FRAMES_PER_CLIP, clip.num_frames), replace=False))
            middle = np.array(middle_frame_indices(f, clip.num_frames))
            frames = resize_frames(clip.frames[singles], size)
            cover = patch_targets(category_maps(clip, singles), grid)
            per = grid * grid
            for j, t in enumerate(singles):
                self.images.append((frames[j:j + 1], targets(clip, np.array([t])), cover[j * per:(j + 1) * per]))
            self.videos.append((resize_frames(clip.frames[middle], size), targets(clip, middle),
                                patch_targets(category_maps(clip, middle), grid)))


class SlotHead(nn.Module):
    """The throw-away read-out: connector output [B, Q, H] -> presence logits [B, C, F], boxes [B, C, F, 4]."""

    def __init__(self, width: int, categories: int, frames: int):
        super().__init__()
        self.categories, self.frames = categories, frames
        self.proj = nn.Linear(width, 5)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        out = self.proj(tokens[:, : self.categories * self.frames])
        out = out.unflatten(1, (self.categories, self.frames))                        # (B, C, F, 5)
        centre, size = out[..., 1:3].sigmoid(), out[..., 3:5].sigmoid()
        return out[..., 0], torch.cat([centre - size / 2, centre + size / 2], dim=-1)


class BothHead(nn.Module):
    """Layout "both": the cell slots' read-out on the first `cells` tokens, the category slots' on the rest."""

    def __init__(self, width: int, cells: int, frames: int):
        super().__init__()
        self.cells = cells
        self.cell = CellHead(width, cells)
        self.category = SlotHead(width, len(CATEGORIES), frames)

    def forward(self, tokens: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        return self.cell(tokens), self.category(tokens[:, self.cells:])


def make_head(cfg, layout: str) -> SlotHead | CellHead | BothHead:
    width = cfg.llm.hidden_size
    if layout == "cell":
        return CellHead(width, cell_slots(cfg, layout))
    if layout == "both":
        return BothHead(width, cell_slots(cfg, layout), slot_frames(cfg, layout))
    return SlotHead(width, len(CATEGORIES), slot_frames(cfg, layout))


def slot_loss(logits: Tensor, boxes: Tensor, present: Tensor, target: Tensor,
              boxed: Tensor | None = None) -> dict[str, Tensor]:
    """Presence BCE over every slot; box L1 and GIoU over the slots `boxed` (default: the present ones)."""
    out = {"presence": F.binary_cross_entropy_with_logits(logits, present)}
    on = present > 0 if boxed is None else boxed
    if bool(on.any()):
        p, t = boxes[on], target[on]
        out["l1"] = F.l1_loss(p, t)
        out["giou"] = (1 - generalized_box_iou(p, t)).mean()
    else:
        out["l1"] = out["giou"] = logits.new_zeros(())
    return out


def slot_losses(head: SlotHead | CellHead | BothHead, out: Tensor, targets: list[Tensor], attn: Tensor | None,
                cover: Tensor, grid: int) -> dict[str, Tensor]:
    """The slots' loss parts (presence, l1, giou; attention where the cross-attention `attn` [B, Q, N] is given)
    against `ConnectorPool`'s targets; layout "both" adds the category slots' presence (and attention) under
    CATEGORY_PREFIX (`BOTH_CATEGORY_UNBOXED`)."""
    frames = cover.shape[1] // (grid * grid)

    def cells(h: CellHead, tokens: Tensor, t: list[Tensor], a: Tensor | None) -> dict[str, Tensor]:
        part = slot_loss(*h(tokens), *t)
        if a is not None:
            objects = cover.unflatten(-1, (SUB * SUB, len(CATEGORIES))).mean(2).sum(-1)
            part["attention"] = cell_attention_loss(a, cell_attention_target(grid, frames, math.isqrt(h.slots), objects))
        return part

    def categories(h: SlotHead, tokens: Tensor, t: list[Tensor], a: Tensor | None) -> dict[str, Tensor]:
        part = slot_loss(*h(tokens), *t)
        if a is not None:
            part["attention"] = attention_loss(a, *attention_targets(cover, grid * grid, h.frames))
        return part

    if isinstance(head, CellHead):
        return cells(head, out, targets, attn)
    if isinstance(head, SlotHead):
        return categories(head, out, targets, attn)
    rest = None if attn is None else attn[:, head.cells:]
    what = categories(head.category, out[:, head.cells:], targets[3:], rest)
    return {**cells(head.cell, out, targets[:3], attn),
            **{CATEGORY_PREFIX + k: v for k, v in what.items() if k not in BOTH_CATEGORY_UNBOXED}}


@contextmanager
def eager_attention(module: nn.Module):
    """Within the block, the module's transformers attention runs eagerly, so that it returns its weights (SDPA
    does not); restored after."""
    configs = [m.config for m in module.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")]
    before = [c._attn_implementation for c in configs]
    for c in configs:
        c._attn_implementation = "eager"
    try:
        yield
    finally:
        for c, b in zip(configs, before, strict=True):
            c._attn_implementation = b


def connector_with_attention(model, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """The connector's output [B, Q, H] and its first cross-attention's weights, averaged over heads [B, Q, N]."""
    conn = model.connector
    queries = conn.queries().expand(tokens.shape[0], -1, -1)
    with eager_attention(conn.qformer):
        out = conn.qformer(query_embeds=queries, encoder_hidden_states=tokens, output_attentions=True)
    cross = next(a for a in out.cross_attentions if a is not None)
    q = queries.shape[1]
    return conn.project_up(out.last_hidden_state[:, :q]), cross.mean(1)[:, :q]


def attention_targets(cover: Tensor, tokens_per_frame: int, slots_t: int) -> tuple[Tensor, Tensor]:
    """Where each slot should look: coverage [B, N, SUB*SUB*C] (the vision targets) -> the category's coverage
    over the tokens of the slot's frames, normalised [B, C, G, N], and whether the slot has any [B, C, G]. An
    image's one frame belongs to every slot frame; a video's frames are split into G runs as `slot_targets`."""
    b, n, _ = cover.shape
    per_cat = cover.unflatten(-1, (SUB * SUB, len(CATEGORIES))).mean(2).transpose(1, 2)       # (B, C, N)
    frames = n // tokens_per_frame
    mask = torch.ones(slots_t, n)
    if frames > 1:
        run_of = torch.zeros(frames, dtype=torch.long)
        for g, r in enumerate(np.array_split(np.arange(frames), slots_t)):
            run_of[torch.from_numpy(r)] = g
        mask = (run_of.repeat_interleave(tokens_per_frame)[None] == torch.arange(slots_t)[:, None]).float()
    target = per_cat[:, :, None] * mask                                                          # (B, C, G, N)
    total = target.sum(-1)
    return target / total.clamp(min=1e-6)[..., None], total > 1e-6


def attention_loss(attn: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy of each described slot's cross-attention [B, C*G, N] against its target [B, C, G, N]."""
    b, c, g, n = target.shape
    logp = attn[:, : c * g].reshape(b, c, g, n).clamp(min=1e-8).log()
    ce = -(target * logp).sum(-1)
    return ce[valid].mean() if bool(valid.any()) else attn.new_zeros(())


def pretrain_connector(
    model,
    steps: int = 600,
    seed: int = 0,
    *,
    lr: float = 1e-3,
    vision_lr: float = 5e-4,
    image_batch: int = 16,
    video_batch: int = 4,
    pool_clips: int = 120,
    warmup_steps: int = 20,
    weight_decay: float = 0.02,
    max_grad_norm: float = 1.0,
    attention: bool = False,
    layout: str = "category",
    log: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> tuple[dict, SlotHead | CellHead | BothHead]:
    """Train the vision encoder, `vision_layernorm` and the connector in place on the slot descriptions (and the
    encoder's coverage targets); returns ({steps, seconds, loss_first, loss_last}, the slot head: the read-out the
    recipe throws away, kept for probes). attention: also supervise where each slot's query looks (its first
    cross-attention, head-averaged, against its category's coverage of the vision tokens: `attention_loss`), the
    content addressing a from-scratch Q-Former does not find on its own (docs/training.md); with layout "cell",
    towards the objects in its cell (`connector_cells`). Cell slots also start with the cross-attention's value
    path as the identity and weigh the presence loss up (`connector_cells.pass_values_through`,
    `PRESENCE_WEIGHT`). The caller's torch RNG is left alone; deterministic for a seed."""
    if steps < 1 or image_batch < 0 or video_batch < 0 or image_batch + video_batch < 1 or pool_clips < 1:
        raise ConfigError(f"need steps, pool_clips >= 1 and a non-empty batch; got steps={steps}, "
                          f"image_batch={image_batch}, video_batch={video_batch}, pool_clips={pool_clips}")
    cfg = model.cfg
    check_slots(cfg, layout)
    grid = cfg.vision.image_size // cfg.vision.patch_size
    start_time = time.perf_counter()
    pool = ConnectorPool(pool_clips, seed, cfg, layout=layout)
    rng = np.random.default_rng([seed, 10])
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="connector pretrain", unit="step")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        weights = {**LOSS_WEIGHTS, **{CATEGORY_PREFIX + k: v for k, v in LOSS_WEIGHTS.items()}}
        head = make_head(cfg, layout)
        if layout != "category":
            pass_values_through(model)
            weights["presence"] = CELL_PRESENCE_WEIGHT
        probe = nn.Linear(cfg.vision.width, SUB * SUB * len(CATEGORIES))
        vision = [*model.vision_encoder.parameters(), *model.vision_layernorm.parameters()]
        connector = list(model.connector.parameters())
        params = vision + connector
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.AdamW([{"params": vision, "lr": vision_lr},
                                       {"params": connector + list(head.parameters()) + list(probe.parameters()),
                                        "lr": lr}], weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(warmup_steps, steps, floor=0.05))
        was_training = model.training
        model.vision_encoder.train()
        model.connector.train()
        for step in range(steps):
            t0 = time.perf_counter()
            parts: dict[str, Tensor] = {}
            for items, size in ((pool.images, image_batch), (pool.videos, video_batch)):
                if not size:
                    continue
                chosen = [items[int(j)] for j in rng.choice(len(items), size=min(size, len(items)), replace=False)]
                pixels = torch.stack([frames_to_pixels(f, cfg) for f, _, _ in chosen])     # (B, 3, T, S, S)
                tokens = model.vision_layernorm(model.vision_encoder(pixels))               # (B, N, Dv)
                cover = torch.stack([c[2] for c in chosen])
                targets = [torch.stack(t) for t in zip(*(c[1] for c in chosen), strict=True)]
                if attention:
                    out, attn = connector_with_attention(model, tokens)
                else:
                    out, attn = model.connector(tokens), None
                part = slot_losses(head, out, targets, attn, cover, grid)
                part["coverage"] = F.binary_cross_entropy_with_logits(probe(tokens), cover) * len(CATEGORIES)
                for k, v in part.items():
                    parts[k] = parts.get(k, 0.0) + v * weights[k]
            loss = sum(parts.values())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*params, *head.parameters(), *probe.parameters()], max_grad_norm)
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            if log is not None:
                log({"step": step, "loss": losses[-1], **{k: float(v.detach()) for k, v in parts.items()},
                     "lr": optimiser.param_groups[1]["lr"], "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
        model.train(was_training)
    if bar is not None:
        bar.close()
    return loss_summary(losses, start_time), head.eval()


@torch.no_grad()
def slot_readout(model, head: SlotHead | CellHead | BothHead, frames: np.ndarray) -> tuple[Tensor, Tensor]:
    """uint8 [T, S, S, 3] frames at the MLLM size (T = 1 or num_frames) -> per category, what the slots say of
    it: presence probability [C] and box [C, 4] (normalised). Category slots: the largest probability over its
    G slot frames and their boxes averaged; cell slots: the cell that says it most (`read_category`); both: the
    presence from the category slots, the box from the cells."""
    out = model.encode_visual(frames_to_pixels(frames, model.cfg)[None])
    if isinstance(head, BothHead):
        return _read_categories(*head.category(out[:, head.cells:]))[0], _read_cells(*head.cell(out))[1]
    return (_read_cells if isinstance(head, CellHead) else _read_categories)(*head(out))


def _read_cells(logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    prob, boxes = logits[0].sigmoid(), boxes[0]
    read = [read_category(prob, boxes, c) for c in range(len(CATEGORIES))]
    return torch.tensor([p for p, _ in read]), torch.stack([b for _, b in read])


def _read_categories(logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    return logits[0].sigmoid().amax(1), boxes[0].mean(1)


def slot_answer(clip: Clip, query, prob: Tensor) -> str:
    """The conversation answer the slots give (presence over the video): the count of categories said present,
    or the colour (shape) of the most present category of the asked shape (colour)."""
    if query.object_id is None:
        n = int((prob > 0.5).sum())
        return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    o = clip.spec.objects[query.object_id]
    colour_question = query.answer == o.colour
    ks = [k for k, (c, sh) in enumerate(CATEGORIES) if (sh == o.shape if colour_question else c == o.colour)]
    best = CATEGORIES[max(ks, key=lambda k: float(prob[k]))]
    return best[0] if colour_question else best[1]


def connector_probe(model, head: SlotHead | CellHead | BothHead, clips: list[Clip]) -> dict:
    """What the connector passes, read by the slot head on held-out clips: region Acc@0.5 (the asked category's
    box on the asked frame), from the video's slots the count, the conversation answer (`slot_answer`: the
    LLM's job done by a rule) and presence accuracy per category (shows on any of the video's frames)."""
    cfg = model.cfg
    size, f = cfg.vision.image_size, cfg.vision.num_frames
    ious, counts, presence, answers = [], [], [], []
    for clip in clips:
        scale = np.array([clip.spec.width, clip.spec.height] * 2)
        for q in (q for q in clip.queries if q.task == "region"):
            _, boxes = slot_readout(model, head, resize_frames(clip.frames[q.frame:q.frame + 1], size))
            o = clip.spec.objects[q.object_id]
            box = boxes[CATEGORIES.index((o.colour, o.shape))].numpy()
            ious.append(float(metrics.box_iou(box * scale, q.box)))
        middle = np.array(middle_frame_indices(f, clip.num_frames))
        prob, _ = slot_readout(model, head, resize_frames(clip.frames[middle], size))
        truth = torch.zeros(len(CATEGORIES))
        for k, o in enumerate(clip.spec.objects):
            if (clip.areas[middle, k] >= MIN_PRESENT_PX).any():
                truth[CATEGORIES.index((o.colour, o.shape))] = 1.0
        presence.append(float(((prob > 0.5).float() == truth).float().mean()))
        counts.append(int((prob > 0.5).sum()) == len(clip.spec.objects))
        answers += [slot_answer(clip, q, prob) == q.answer for q in clip.queries if q.task == "conversation"]
    return {"region_Acc@0.5": float(np.mean(np.array(ious) >= 0.5)), "region_mIoU": float(np.mean(ious)),
            "count_accuracy": float(np.mean(counts)), "answer_accuracy": float(np.mean(answers)),
            "presence_accuracy": float(np.mean(presence))}
