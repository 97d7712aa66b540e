"""Stage 0, second part: pretrain the tiny video ViT on dense "what is where" labels of synthetic frames.

The release starts from a pretrained UMT vision encoder; no pretrained encoder exists at the tiny size, and
trained from scratch through the connector and the LLM only (stages 1-3), its features stay nearly blind
within the recipe's budget: the router's hidden state comes out the same for every frame and the region
head learns the mean box. So, as the mask head is pretrained in stage 0, the vision encoder is pretrained
here on a dense task: every vision token predicts, for each of the `SUB x SUB` sub-cells of its patch, the
fraction covered by each colour-shape category (binary cross-entropy on these soft targets). The
prediction layer is thrown away afterwards; the encoder (and `vision_layernorm`) keep training in stages 1
and 3. The connector is left out on purpose: trained on the same targets through a probe per query, the
Q-Former learned the prior and its output stopped depending on the image (across-image std / std 0.005 at
initialisation -> 1e-5 after 10 steps), which blinded the LLM.

Inputs are what the model sees: single frames (T = 1, the region questions and the temporal head's clip
features) and `num_frames` middle frames of a clip (T = num_frames, the video questions), resized like the
MLLM branch. Deterministic for a seed.

    pretrain_vision_encoder(model, steps, seed)   trains model.vision_encoder + vision_layernorm in place
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpo.data.synthetic import CATEGORIES, Clip, SceneConfig, make_clip
from tpo.errors import ConfigError
from tpo.model.preprocess import middle_frame_indices

from .sample import frames_to_pixels, resize_frames
from .schedule import loss_summary, warmup_cosine

SUB = 2                      # each token predicts a SUB x SUB grid of sub-cells of its patch
FRAMES_PER_CLIP = 12         # single frames kept per pool clip
CATEGORY_MIN_COVER = 0.3     # a token belongs to an object (for the category loss) when it covers this much of it


def category_maps(clip: Clip, index: np.ndarray) -> Tensor:
    """float [F, C, H, W]: 1 where a frame's pixel shows an object of category c (C = len(CATEGORIES))."""
    labels = torch.from_numpy(np.ascontiguousarray(clip.labels[index])).long()        # (F, H, W)
    lut = torch.zeros(len(clip.spec.objects) + 1, dtype=torch.long)
    for k, o in enumerate(clip.spec.objects):
        lut[k + 1] = CATEGORIES.index((o.colour, o.shape)) + 1
    onehot = F.one_hot(lut[labels], len(CATEGORIES) + 1)[..., 1:]                      # (F, H, W, C)
    return onehot.permute(0, 3, 1, 2).float()


def patch_targets(maps: Tensor, grid: int, sub: int = SUB) -> Tensor:
    """[F, C, H, W] category maps -> [F * grid * grid, sub * sub * C] coverage of each sub-cell, in the
    vision encoder's token order (frame-major, then row-major patches)."""
    f, c = maps.shape[:2]
    cover = F.adaptive_avg_pool2d(maps, grid * sub)                                     # (F, C, g*s, g*s)
    cover = cover.reshape(f, c, grid, sub, grid, sub).permute(0, 2, 4, 3, 5, 1)         # (F, g, g, s, s, C)
    return cover.reshape(f * grid * grid, sub * sub * c)


class VisionPool:
    """Frames at the MLLM size and their targets: per clip FRAMES_PER_CLIP single frames and one video."""

    def __init__(self, clips: int, seed: int, image_size: int, grid: int, num_frames: int,
                 scene: SceneConfig | None = None):
        rng = np.random.default_rng([seed, 7])
        self.images: list[tuple[np.ndarray, Tensor]] = []
        self.videos: list[tuple[np.ndarray, Tensor]] = []
        for i in range(clips):
            clip = make_clip(i, seed, scene)
            singles = np.sort(rng.choice(clip.num_frames, size=min(FRAMES_PER_CLIP, clip.num_frames), replace=False))
            middle = np.array(middle_frame_indices(num_frames, clip.num_frames))
            for index, out in ((singles, None), (middle, self.videos)):
                frames = resize_frames(clip.frames[index], image_size)
                targets = patch_targets(category_maps(clip, index), grid)
                if out is None:
                    per = grid * grid
                    self.images += [(frames[j:j + 1], targets[j * per:(j + 1) * per]) for j in range(len(index))]
                else:
                    out.append((frames, targets))


def pretrain_vision_encoder(
    model,
    steps: int = 300,
    seed: int = 0,
    *,
    lr: float = 2e-3,
    image_batch: int = 16,
    video_batch: int = 2,
    pool_clips: int = 100,
    warmup_steps: int = 10,
    weight_decay: float = 0.02,
    max_grad_norm: float = 1.0,
    category_weight: float = 0.0,
    log: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> dict:
    """Train `model.vision_encoder` and `model.vision_layernorm` in place; returns {steps, seconds,
    loss_first, loss_last} (mean of the first and last 10% of steps). The caller's torch RNG is left alone.
    category_weight: also a cross-entropy, per token an object covers by `CATEGORY_MIN_COVER` or more, on that
    object's colour-shape category (a second throw-away probe): the coverage loss is mostly paid by the colour,
    and the tokens learned shape hardly (docs/training.md), which the questions need."""
    if steps < 1 or image_batch < 0 or video_batch < 0 or image_batch + video_batch < 1 or pool_clips < 1:
        raise ConfigError(f"need steps, pool_clips >= 1 and a non-empty batch; got steps={steps}, "
                          f"image_batch={image_batch}, video_batch={video_batch}, pool_clips={pool_clips}")
    start_time = time.perf_counter()
    cfg = model.cfg
    grid = cfg.vision.image_size // cfg.vision.patch_size
    pool = VisionPool(pool_clips, seed, cfg.vision.image_size, grid, cfg.vision.num_frames)
    rng = np.random.default_rng([seed, 8])
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="vision pretrain", unit="step")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = nn.Linear(cfg.vision.width, SUB * SUB * len(CATEGORIES))
        classify = nn.Linear(cfg.vision.width, len(CATEGORIES))
        params = [*model.vision_encoder.parameters(), *model.vision_layernorm.parameters()]
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.AdamW([*params, *probe.parameters(), *classify.parameters()], lr=lr,
                                      weight_decay=weight_decay)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(warmup_steps, steps, floor=0.05))
        was_training = model.training
        model.vision_encoder.train()
        for step in range(steps):
            t0 = time.perf_counter()
            loss = torch.zeros(())
            for items, size in ((pool.images, image_batch), (pool.videos, video_batch)):
                if not size:
                    continue
                chosen = [items[int(j)] for j in rng.choice(len(items), size=min(size, len(items)), replace=False)]
                pixels = torch.stack([frames_to_pixels(f, cfg) for f, _ in chosen])        # (B, 3, T, S, S)
                tokens = model.vision_layernorm(model.vision_encoder(pixels))               # (B, T*g*g, Dv)
                target = torch.stack([t for _, t in chosen])                                # (B, T*g*g, K)
                loss = loss + F.binary_cross_entropy_with_logits(probe(tokens), target) * len(CATEGORIES)
                if category_weight:
                    cover = target.unflatten(-1, (SUB * SUB, len(CATEGORIES))).mean(2)           # (B, N, C)
                    on = cover.amax(-1) >= CATEGORY_MIN_COVER
                    if bool(on.any()):
                        loss = loss + category_weight * F.cross_entropy(classify(tokens[on]), cover[on].argmax(-1))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            if log is not None:
                log({"step": step, "loss": losses[-1], "lr": optimiser.param_groups[0]["lr"],
                     "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
        model.train(was_training)
    if bar is not None:
        bar.close()
    return loss_summary(losses, start_time)
