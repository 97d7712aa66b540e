"""Stage 0: pretrain the tiny SAM2 mask head on synthetic clips, then freeze it.

No pretrained SAM2 exists at the tiny size, so the head learns SAM2's video task from scratch: a box prompt
on one frame gives a mask there, and the memory path (memory encoder + memory attention + object pointers)
carries the object through the following frames. The release freezes SAM2 while training the rest of the
model; `freeze_mask_head` does that afterwards.

Recipe (`pretrain_mask_head`), all from one seed:
- `init_mask_head`: transformers' initialisation is for loading checkpoints and does not train from
  scratch; see there.
- `image_steps` image steps (SAM2 also trains on images): single frames, each object prompted with SAM2's own
  box embedding of its ground-truth box. The decoder must first learn to use the prompt; mixed with video
  frames from the start, the tracked frames' easiest answer ("every object") wins.
- then video steps: windows of `clip_frames` frames, `stride` frames apart (forwards or backwards in time,
  maybe mirrored left-right). Frame 0 is prompted; the others are tracked exactly as
  `mask_tracker.track_next_frame` does (same memory slots, time rows and pointer choice), with gradients
  through all frames; frames 1.. are also decoded from their own box, without memory.
Losses per decoded frame follow SAM2's training recipe (`sam2/training/loss_fns.py`): focal 20 : dice 1 on the
mask logits upsampled to image_size (vs the ground-truth mask resized to image_size), on the best of the
multimask outputs on tracked frames; IoU-prediction MSE on every output mask; object-score BCE. Mask and IoU
losses count only where the object is visible. Plus `feature_scale` (see FEATURE_RMS_MAX).

    pretrain_mask_head(head, steps, seed)   initialises and trains in place, returns a summary
    evaluate_mask_head(head, clips, seed)   J&F, success AUC, precision@20px with `mask_tracker.track`
    freeze_mask_head(head)                  eval mode, no gradients

Threads: on a shared 2-core machine run with OMP_WAIT_POLICY=PASSIVE (set before torch is imported); with
torch's 2 spinning OpenMP threads and another busy process, a step took 10-15x longer here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoAttention

from tpo.data.metrics import jf_score, tracking_precision, tracking_success_auc
from tpo.data.synthetic import Clip, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.mask_head import NO_OBJECT_SCORE, ImageFeatures, MaskHead
from tpo.model.mask_tracker import track_clip
from tpo.model.preprocess import mask_pixels

from .heads.track import SMALL_OBJECT_PX
from .schedule import loss_summary, warmup_cosine

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # as `TPOConfig.pixel_mean` / `pixel_std`
IMAGENET_STD = (0.229, 0.224, 0.225)
# Training clips: the generator's defaults, but short, so that a pool of many scenes is quick to render and small.
PRETRAIN_SCENE = SceneConfig(duration_range_s=(2.0, 4.0))
# SAM2's loss weights (sam2/configs/sam2.1_training: loss_mask 20, loss_dice 1, loss_iou 1, loss_class 1)
# and its focal-loss parameters.
LOSS_WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "object": 1.0, "feature_scale": 1.0}
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# Not SAM2's: a from-scratch encoder inflates its features (rms 0.1 -> 30 in 100 steps), which drowns the
# prompts' and the image grid's positional encodings (rms 0.7) in the decoder so that it never learns to use
# the box. `feature_scale` = sum over the decoder's three inputs of relu(rms - FEATURE_RMS_MAX) ** 2.
FEATURE_RMS_MAX = 1.0
# Decoder attention q/k projections start tied and scaled so that q . k ~ PE(point) . PE(pixel) from step 0.
TIED_QK_SCALE = 3.0
# Size balance (`size_weights`): an object covering SIZE_REF_FRACTION of the image counts 1, a smaller one up to
# SIZE_WEIGHT_MAX (about 1,500 px of a 320 x 240 frame is 2 % of it).
SIZE_REF_FRACTION = 0.02
SIZE_WEIGHT_MAX = 4.0
# A prompted object shows at least this many pixels in the source frame (tiny slivers make useless prompts).
MIN_PROMPT_AREA_PX = 64
_MAX_DRAWS = 1000  # draws of (clip, object, stride, direction) before `sample_window` gives up


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Window:
    """One training sample: F frames of one clip and its N prompted objects (S = image_size)."""

    pixels: Tensor  # [F, 3, S, S] float32, ImageNet-normalised
    masks: Tensor  # [F, N, S, S] float32 in {0, 1}, each object's visible pixels resized to S x S
    present: Tensor  # [F, N] float32, 1 where the object has a visible pixel
    boxes: Tensor  # [F, N, 4] float32 boxes x1, y1, x2, y2 normalised to [0, 1] of the frame; 0 where invisible


def make_clip_pool(clips: int, seed: int, scene: SceneConfig = PRETRAIN_SCENE) -> list[Clip]:
    """Render `clips` training clips of the stream `seed` (clip i is `make_clip(i, seed, scene)`)."""
    return [make_clip(i, seed, scene) for i in range(clips)]


def sample_window(
    pool: list[Clip], rng: np.random.Generator, frames: int, max_stride: int, image_size: int
) -> Window:
    """Draw a window: clip, direction, stride, first frame, mirror. Only `rng` decides it.

    Every object showing at least MIN_PROMPT_AREA_PX pixels on the first frame is prompted (SAM2 too trains
    on several objects of a video at once); the image encoder runs once for all of them.
    """
    for _ in range(_MAX_DRAWS):
        clip = pool[int(rng.integers(len(pool)))]
        stride = int(rng.integers(1, max_stride + 1))
        backwards = bool(rng.integers(2))
        span = stride * (frames - 1)
        t = np.arange(clip.num_frames)
        fits = t - span >= 0 if backwards else t + span < clip.num_frames
        starts = np.flatnonzero(fits & (clip.areas.max(axis=1) >= MIN_PROMPT_AREA_PX))
        if starts.size:
            break
    else:
        raise ConfigError(
            f"no window of {frames} frames, stride <= {max_stride}, with a prompt of >= {MIN_PROMPT_AREA_PX} px in "
            f"{_MAX_DRAWS} draws from a pool of {len(pool)} clips; use longer clips or fewer frames"
        )
    start = int(starts[rng.integers(starts.size)])
    index = start + (-stride if backwards else stride) * np.arange(frames)
    objects = np.flatnonzero(clip.areas[start] >= MIN_PROMPT_AREA_PX)  # (N,)
    rgb = clip.frames[index]  # (F, H, W, 3)
    masks = clip.labels[index][:, None] == objects[None, :, None, None] + 1  # (F, N, H, W)
    boxes = np.nan_to_num(clip.boxes[index][:, objects].astype(np.float64))  # (F, N, 4)
    height, width = masks.shape[2:]
    if rng.integers(2):  # mirror left-right
        rgb, masks = rgb[:, :, ::-1], masks[..., ::-1]
        boxes = np.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], axis=-1)
        boxes[~masks.any(axis=(2, 3))] = 0.0
    gt = torch.from_numpy(np.ascontiguousarray(masks)).float()  # (F, N, H, W)
    gt = F.interpolate(gt, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return Window(
        pixels=mask_pixels(rgb, image_size, IMAGENET_MEAN, IMAGENET_STD),
        masks=(gt >= 0.5).float(),
        present=torch.from_numpy(masks.any(axis=(2, 3))).float(),
        boxes=torch.tensor(boxes / [width, height, width, height], dtype=torch.float32),
    )


# ---------------------------------------------------------------------------------------------- forward
@dataclass
class FrameOutput:
    """Raw decoder outputs of one frame for B objects (M = 1 on the prompted frame, 3 on tracked frames)."""

    mask_logits: Tensor  # [B, M, S/4, S/4] every output mask, before the absent-object score is written
    iou: Tensor  # [B, M] predicted IoU per mask
    object_score: Tensor  # [B, 1] logit, > 0 = object present


def _decode_raw(head: MaskHead, image: Tensor, s4: Tensor, s8: Tensor, prompt: Tensor, multimask: bool):
    """`MaskHead.decode` keeping every output mask, and the (chosen mask, pointer) the tracker would store.

    The chosen mask and pointer follow `MaskHead.decode` in training mode (token 0 when not multimask, else the
    best predicted IoU; NO_OBJECT_SCORE and `no_object_pointer` where the object score is <= 0).
    """
    batch, _, h, w = image.shape
    image_pe = head.image_positional_encoding().to(image.dtype).expand(batch, -1, -1, -1)
    dense = head.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
    masks, iou, tokens, object_score = head.mask_decoder(
        image_embeddings=image,
        image_positional_embeddings=image_pe,
        sparse_prompt_embeddings=prompt.unsqueeze(1),  # (B, point batch 1, N, C)
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_resolution_features=[s4, s8],
    )
    masks, iou, tokens, object_score = masks[:, 0], iou[:, 0], tokens[:, 0], object_score[:, 0]
    # masks (B, M, 4h, 4w), iou (B, M), tokens (B, M, C), object_score (B, 1)
    best = iou.detach().argmax(dim=-1)  # (B,)
    rows = torch.arange(batch)
    present = (object_score > 0).to(masks.dtype)  # (B, 1)
    chosen = torch.where(present[:, :, None, None] > 0, masks[rows, best][:, None], NO_OBJECT_SCORE)
    pointer = head.object_pointer_proj(tokens[rows, best])  # (B, C)
    pointer = present * pointer + (1 - present) * head.no_object_pointer
    return FrameOutput(masks, iou, object_score), chosen, pointer


class WindowOutputs(NamedTuple):
    """`forward_windows` output: per frame, raw decoder outputs over the O objects."""

    tracked: list[FrameOutput]  # F: frame 0 from its box prompt, frames 1.. from memory (the tracker's path)
    prompted: list[FrameOutput]  # frames 1.. decoded from their own box prompt without memory (empty if not asked)
    features: ImageFeatures  # `encode_image` of the B*F frames


def forward_windows(
    head: MaskHead, pixels: Tensor, boxes: Tensor, owner: Tensor, frame_boxes: Tensor | None = None
) -> WindowOutputs:
    """Prompt frame 0 of each window with its objects' boxes and track the rest, with gradients.

    pixels: [B, F, 3, S, S] float32 normalised frames of B windows (each frame encoded once).
    boxes: [O, 4] float32 normalised x1, y1, x2, y2 on frame 0 of O objects; owner: [O] int64 window of each.
    frame_boxes: optional [F, O, 4] boxes of every frame: frames 1.. are then also decoded from their own box as
      prompted frames (SAM2 trains on single images too; the encoder features are shared, so this is cheap).
    Frame t attends to what `track_next_frame` would give it: frame 0's memory (time row num_maskmem - 1) and
    frames t-1 .. t-(num_maskmem-1) (row t - f - 1); pointers of frame 0 and frames t-1 .. t-(max_pointers-1).
    """
    cfg = head.config
    windows, num_frames = pixels.shape[:2]
    batch = boxes.shape[0]
    features = head.encode_image(pixels.flatten(0, 1))  # every frame once: (B*F, ...)
    image, image_pos, s4, s8 = (
        x.unflatten(0, (windows, num_frames))[owner]  # (O, F, ...)
        for x in (features.image, features.image_pos, features.high_res_s4, features.high_res_s8)
    )

    out, mask, pointer = _decode_raw(
        head, head.add_no_memory(image[:, 0]), s4[:, 0], s8[:, 0], head.prompt_embedding(boxes), multimask=False
    )
    memory = head.encode_memory(image[:, 0], mask, is_conditioning_frame=True)
    memories, pointers, tracked = [memory], [pointer], [out]
    empty = head.empty_prompt(batch)
    for t in range(1, num_frames):
        frames = [0] + [f for f in range(max(1, t - cfg.num_maskmem + 1), t)]
        pointer_frames = [0] + [f for f in range(max(1, t - cfg.max_object_pointers + 1), t)]
        memory_time = torch.tensor([cfg.num_maskmem - 1 if f == 0 else t - f - 1 for f in frames]).expand(batch, -1)
        conditioned = head.attend_memory(
            image[:, t],
            image_pos[:, t],
            torch.stack([memories[f].memory for f in frames], dim=1),  # (B, K, Cm, h, w)
            torch.stack([memories[f].memory_pos for f in frames], dim=1),
            memory_time,
            torch.ones(batch, len(frames), dtype=torch.bool),
            torch.stack([pointers[f] for f in pointer_frames], dim=1),  # (B, P, C)
            torch.ones(batch, len(pointer_frames), dtype=torch.bool),
        )
        out, mask, pointer = _decode_raw(head, conditioned, s4[:, t], s8[:, t], empty, multimask=True)
        memories.append(head.encode_memory(image[:, t], mask, is_conditioning_frame=False))
        pointers.append(pointer)
        tracked.append(out)
    prompted = []
    if frame_boxes is not None:
        for t in range(1, num_frames):
            prompt = head.prompt_embedding(frame_boxes[t])
            prompted.append(_decode_raw(head, head.add_no_memory(image[:, t]), s4[:, t], s8[:, t], prompt, False)[0])
    return WindowOutputs(tracked, prompted, features)


# ------------------------------------------------------------------------------------------------ losses
def frame_losses(out: FrameOutput, gt: Tensor, present: Tensor, weight: Tensor | float = 1.0) -> dict[str, Tensor]:
    """SAM2's per-frame losses, each averaged over the B objects.

    gt: [B, 1, S, S] float {0, 1} masks at image_size; present: [B] float, 1 where the object is visible;
    weight: [B] float (or a scalar) multiplying every term of each object.
    The mask loss (focal, dice) is that of the output mask with the lowest 20 * focal + dice; the IoU head
    learns the real IoU of every output mask; mask and IoU terms count only where the object is visible.
    """
    size = gt.shape[-2:]
    logits = F.interpolate(out.mask_logits.float(), size=size, mode="bilinear", align_corners=False)  # (B, M, S, S)
    target = gt.expand_as(logits)
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    focal = (alpha_t * bce * (1 - p_t) ** FOCAL_GAMMA).flatten(2).mean(-1)  # (B, M)
    dice = 1 - (2 * (prob * target).flatten(2).sum(-1) + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    combined = LOSS_WEIGHTS["focal"] * focal + LOSS_WEIGHTS["dice"] * dice
    best = combined.detach().argmin(dim=-1, keepdim=True)  # (B, 1)
    with torch.no_grad():
        hard = logits > 0
        inter = (hard & (target > 0)).flatten(2).sum(-1).float()
        union = (hard | (target > 0)).flatten(2).sum(-1).float()
        true_iou = inter / union.clamp(min=1)  # (B, M)
    iou = ((out.iou.float() - true_iou) ** 2).mean(-1)  # (B,)
    obj = F.binary_cross_entropy_with_logits(out.object_score.float()[:, 0], present, reduction="none")
    counted = present * weight
    return {
        "focal": (focal.gather(1, best)[:, 0] * counted).mean(),
        "dice": (dice.gather(1, best)[:, 0] * counted).mean(),
        "iou": (iou * counted).mean(),
        "object": (obj * weight).mean(),
    }


def size_weights(masks: Tensor, size_balance: float) -> Tensor:
    """Per object weights [O] from its ground-truth masks [O, S, S] at image_size: (SIZE_REF_FRACTION * S^2 /
    area) ** size_balance, between 1 and SIZE_WEIGHT_MAX, so a small object's mask counts as much as a large
    one's (1 where the object is not visible, or size_balance = 0)."""
    area = masks.flatten(1).sum(1)
    ref = SIZE_REF_FRACTION * masks.shape[-1] * masks.shape[-2]
    w = (ref / area.clamp(min=1.0)) ** size_balance
    return torch.where(area > 0, w.clamp(1.0, SIZE_WEIGHT_MAX), torch.ones_like(w))


def window_loss(
    head: MaskHead, windows: list[Window], prompt_every_frame: bool = True, size_balance: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted loss of a batch of equally long windows: (total, {focal, dice, iou, object, feature_scale}).

    prompt_every_frame: also decode frames 1.. from their own box (see `forward_windows`); their losses count
    where the object is visible. size_balance: each object's terms weighted by `size_weights` (0: equal).
    Each part is averaged over all the windows' objects and over the decoded frames; `feature_scale` bounds the
    encoder's output (see FEATURE_RMS_MAX); total = sum of LOSS_WEIGHTS[p] * p.
    """
    owner = torch.cat([torch.full((w.boxes.shape[1],), b, dtype=torch.int64) for b, w in enumerate(windows)])
    frame_boxes = torch.cat([w.boxes for w in windows], dim=1)  # (F, O, 4)
    outputs = forward_windows(
        head, torch.stack([w.pixels for w in windows]), frame_boxes[0], owner,
        frame_boxes if prompt_every_frame else None,
    )
    masks = torch.cat([w.masks for w in windows], dim=1)  # (F, O, S, S)
    present = torch.cat([w.present for w in windows], dim=1)  # (F, O)
    decoded = [(t, out, 1.0) for t, out in enumerate(outputs.tracked)]
    decoded += [(t, out, present[t]) for t, out in enumerate(outputs.prompted, start=1)]
    parts = {name: torch.zeros(()) for name in LOSS_WEIGHTS}
    for t, out, weight in decoded:
        if size_balance:
            weight = weight * size_weights(masks[t], size_balance)
        frame = frame_losses(out, masks[t][:, None], present[t], weight)
        for name, value in frame.items():
            parts[name] = parts[name] + value / len(decoded)
    for x in (outputs.features.image, outputs.features.high_res_s4, outputs.features.high_res_s8):
        parts["feature_scale"] = parts["feature_scale"] + F.relu(x.float().pow(2).mean().sqrt() - FEATURE_RMS_MAX) ** 2
    return sum(LOSS_WEIGHTS[name] * value for name, value in parts.items()), parts


def init_mask_head(head: MaskHead) -> MaskHead:
    """Initialise `head` for training from scratch, in place, from the global torch RNG.

    transformers initialises SAM2 for loading checkpoints: N(0, 0.02) weights and zero biases. Trained from
    there, the mask decoder's attention gradients (1e-10 .. 1e-13) sit under AdamW's eps, so a box prompt never
    comes to change the mask. The image encoder keeps that initialisation; the rest is re-initialised:
    - prompt encoder and mask decoder: PyTorch's defaults, as the original SAM2 code (random biases too,
      which measurably helped the decoder start using the prompt); and each decoder attention starts with
      k_proj = q_proj = TIED_QK_SCALE x q_proj, so that a query scores the keys by the similarity of their
      positional encodings: a prompt corner attends to the image around it from the first step;
    - memory encoder, memory attention, object-pointer projection: PyTorch's default weights, zero biases
      (random biases outweigh a fresh encoder's small features, and the memory attention's layer-normalised
      output comes out nearly the same at every position).
    """
    for part, zero_bias in ((head.prompt_encoder, False), (head.mask_decoder, False), (head.memory_encoder, True),
                            (head.memory_attention, True), (head.object_pointer_proj, True)):
        for module in part.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
                module.reset_parameters()
                if zero_bias and getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
    with torch.no_grad():
        for module in head.mask_decoder.modules():
            if isinstance(module, Sam2VideoAttention):
                module.q_proj.weight.mul_(TIED_QK_SCALE)
                module.k_proj.weight.copy_(module.q_proj.weight)
    return head


# ---------------------------------------------------------------------------------------------- training
def pretrain_mask_head(
    head: MaskHead,
    steps: int = 250,
    seed: int = 0,
    *,
    lr: float = 2e-3,
    image_steps: int = 150,
    image_batch: int = 8,
    batch: int = 4,
    clip_frames: int = 4,
    max_stride: int = 4,
    pool_clips: int = 64,
    warmup_steps: int = 10,
    weight_decay: float = 0.05,
    max_grad_norm: float = 1.0,
    prompt_every_frame: bool = True,
    size_balance: float = 0.0,
    initialise: bool = True,
    scene: SceneConfig = PRETRAIN_SCENE,
    log: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> dict:
    """Initialise (unless `initialise=False`) and train `head` in place; returns a summary.

    steps: optimiser steps in all; the first `image_steps` use `image_batch` single frames, the others `batch`
      windows of `clip_frames` frames (1 prompted + tracked ones) 1..`max_stride` frames apart. The clips come
      from a pool of `pool_clips` rendered from `scene` and `seed`.
    lr: AdamW peak rate, reached after `warmup_steps` linear steps, then cosine to 0 at `steps`.
    prompt_every_frame: on video steps, also decode frames 1.. from their own box.
    size_balance: exponent of the per-object size weights (`size_weights`; 0: every object counts the same).
    initialise: `init_mask_head` first (from `seed`); False continues training the head as it is.
    log: called after every step with {step, loss, <each of LOSS_WEIGHTS>, lr, seconds}.
    progress: a tqdm bar.
    Deterministic for a seed: initialisation, pool, windows and dropout draws depend only on the arguments
    (the caller's global torch RNG state is left as it was). Returns {steps, seconds, loss_first, loss_last}
    (mean loss of the first and last 10% of steps).
    """
    if steps < 1 or batch < 1 or image_batch < 1 or clip_frames < 1 or max_stride < 1 or pool_clips < 1:
        raise ConfigError(
            f"need steps, batch, image_batch, clip_frames, max_stride, pool_clips >= 1; got steps={steps}, "
            f"batch={batch}, image_batch={image_batch}, clip_frames={clip_frames}, max_stride={max_stride}, "
            f"pool_clips={pool_clips}"
        )
    start_time = time.perf_counter()
    pool = make_clip_pool(pool_clips, seed, scene)
    rng = np.random.default_rng([seed, 1])
    params, optimiser = _adamw(head, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(warmup_steps, steps))
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="mask pretrain", unit="step")
    was_training = head.training
    head.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if initialise:
            init_mask_head(head)
        for step in range(steps):
            step_start = time.perf_counter()
            frames, size = (1, image_batch) if step < image_steps else (clip_frames, batch)
            windows = [sample_window(pool, rng, frames, max_stride, head.config.image_size) for _ in range(size)]
            loss, parts = window_loss(head, windows, prompt_every_frame, size_balance)
            _optimiser_step(loss, params, optimiser, scheduler, max_grad_norm)
            losses.append(loss.item())
            record = {"step": step, "loss": losses[-1], **{name: value.item() for name, value in parts.items()},
                      "lr": optimiser.param_groups[0]["lr"], "seconds": time.perf_counter() - step_start}
            if log is not None:
                log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                bar.update()
    head.train(was_training)
    if bar is not None:
        bar.close()
    return loss_summary(losses, start_time)


def _adamw(head: MaskHead, lr: float, weight_decay: float) -> tuple[list[nn.Parameter], torch.optim.AdamW]:
    """The head's trainable parameters and AdamW over them: weight decay on matrices and kernels only."""
    params = [p for p in head.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    return params, optimiser


def _optimiser_step(loss: torch.Tensor, params: list[nn.Parameter], optimiser: torch.optim.Optimizer,
                    scheduler, max_grad_norm: float) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimiser.step()
    scheduler.step()


def freeze_mask_head(head: MaskHead) -> MaskHead:
    """Freeze the pretrained head as the release does: eval mode, no parameter takes gradients."""
    head.eval()
    head.requires_grad_(False)
    return head


# -------------------------------------------------------------------------------------------- evaluation
def _track_object(clip: Clip) -> int:
    """The clip's tracking query object (well visible in frame 0), else its largest object in frame 0."""
    for query in clip.queries:
        if query.task == "track" and query.object_id is not None and clip.areas[0, query.object_id] > 0:
            return query.object_id
    return int(np.argmax(clip.areas[0]))


@torch.no_grad()
def evaluate_mask_head(
    head: MaskHead, clips: int, seed: int, *, scene: SceneConfig | None = None, max_frames: int | None = None
) -> dict:
    """Track held-out clips with `mask_tracker.track`, prompted with the ground-truth frame-0 box's embedding.

    clips: how many clips `make_clip(i, seed, scene)` (scene: the generator's defaults unless given); each is
    tracked over all its frames (the first `max_frames` if given) for its tracking-query object. Masks are
    the low-res logits upsampled to the frame size, boxes the masks' boxes. Returns the means over clips of
    J, F, J&F (every frame, DAVIS), success AUC and precision at 20 px (OTB, frames with the object visible),
    J&F apart for objects under / over SMALL_OBJECT_PX (median visible area; absent when no clip has one) and
    the absent-frame accuracy (frames where the object is not visible and the tracker reports nothing, over all
    such frames), all in [0, 1], plus {clips, frames, seconds}.
    """
    if clips < 1:
        raise ConfigError(f"evaluate_mask_head needs clips >= 1, got {clips}")
    start_time = time.perf_counter()
    was_training = head.training
    head.eval()
    size = head.config.image_size
    scores: dict[str, list[float]] = {"J": [], "F": [], "J&F": [], "success_auc": [], "precision_20px": [],
                                      "J&F_small": [], "J&F_large": []}
    total_frames = absent_frames = absent_right = 0
    for i in range(clips):
        clip = make_clip(i, seed, scene)
        k = _track_object(clip)
        num_frames = clip.num_frames if max_frames is None else min(max_frames, clip.num_frames)
        height, width = clip.labels.shape[1:]
        box = torch.tensor(clip.boxes[0, k] / [width, height, width, height], dtype=torch.float32)[None]
        pixels = mask_pixels(clip.frames[:num_frames], size, IMAGENET_MEAN, IMAGENET_STD)
        pred_masks, pred_boxes, _ = track_clip(head, pixels, head.prompt_embedding(box), (height, width))
        gt_masks = clip.masks(k)[:num_frames]
        gt_boxes = [clip.box(t, k) for t in range(num_frames)]
        jf = jf_score(pred_masks, gt_masks)
        for name in ("J", "F", "J&F"):
            scores[name].append(jf[name])
        scores["success_auc"].append(tracking_success_auc(pred_boxes, gt_boxes))
        scores["precision_20px"].append(tracking_precision(pred_boxes, gt_boxes))
        visible = clip.visible[:num_frames, k]
        small = float(np.median(clip.areas[:num_frames, k][visible])) < SMALL_OBJECT_PX
        scores["J&F_small" if small else "J&F_large"].append(jf["J&F"])
        absent_frames += int((~visible).sum())
        absent_right += sum(b is None for b, v in zip(pred_boxes, visible, strict=True) if not v)
        total_frames += num_frames
    head.train(was_training)
    return {
        **{name: float(np.mean(values)) for name, values in scores.items() if values},
        **({"absent_accuracy": absent_right / absent_frames} if absent_frames else {}),
        "clips": clips,
        "frames": total_frames,
        "seconds": time.perf_counter() - start_time,
    }
