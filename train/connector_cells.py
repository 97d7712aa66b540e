"""Cell slots: the connector's queries describe fixed cells of the frame, not categories.

Category slots (`connector_pretrain`'s first layout: query k describes colour-shape k wherever it is) ask each
fixed query to find its category by content; the from-scratch tiny Q-Former does not learn that, its queries
land on the same few tokens whatever they describe (docs/training.md, "Issue 15"). Addressing by position is
what a cross-attention learns first (the vision tokens carry their position table), so here query s looks at
cell s of an `n x n` partition of the frame (n = isqrt(Q): tiny's 16 queries give 4 x 4 cells, on every frame of
a video) and says which categories have their centre in it and the box of the largest of them. Choosing the
slot that matches the question is left to the LLM, which reads all slots and the question (the LLM reads its
visual slots: docs/training.md). The box is absolute (frame-normalised) and read by one linear head shared by
every slot, so where a slot is must be in its output, as the LLM's task token needs it.

    cells_per_side(cfg, layout)             n (layout "both": cells before one slot per category)
    cell_slot_targets(clip, index, n)       presence [S, C], box [S, 4], whether the box counts [S]
    cell_attention_target(grid, frames, n)  [S, N]: the tokens of each cell, normalised (the attention target;
                                            [B, S, N] leaning towards the objects when their coverage is given)
    CellHead                                connector output [B, Q, H] -> presence logits [B, S, C], boxes [B, S, 4]
    pass_values_through(model)              the cross-attention's value path starts as the identity
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from tpo.data.synthetic import CATEGORIES, Clip
from tpo.errors import ConfigError

MIN_PRESENT_PX = 16           # a category shows on a frame when at least this many of its pixels are visible
BACKGROUND_WEIGHT = 0.05      # attention target weight of a token no object covers, against 1 for a covered one
PRESENCE_WEIGHT = 5.0         # on the presence loss (1 for category slots): 1-2 % of (cell, category) pairs are
                              # positive, and at weight 1 the presence loss stayed at the prior for 1,000 steps


def cells_per_side(cfg, layout: str = "cell") -> int:
    """n: the largest n x n cells the connector's queries hold; with layout "both" after one category slot per
    colour-shape category (the cell slots come first, the category slots after them)."""
    q = cfg.connector.num_query_tokens + cfg.connector.num_extra_query_tokens
    reserved = len(CATEGORIES) if layout == "both" else 0
    n = math.isqrt(max(q - reserved, 0))
    if n < 2:
        raise ConfigError(f"{layout} slots need at least {4 + reserved} connector queries (2 x 2 cells"
                          f"{f' and {reserved} category slots' if reserved else ''}); the connector has {q}")
    return n


def cell_index(cx: float, cy: float, n: int) -> int:
    """The cell (row-major) of a normalised point."""
    return min(int(cy * n), n - 1) * n + min(int(cx * n), n - 1)


def cell_slot_targets(clip: Clip, index: np.ndarray, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Presence [S, C] (S = n * n): category c has its visible box's centre in cell s on any of the frames
    `index`; box [S, 4] (normalised xyxy): on the first of those frames, the largest object centred in the cell;
    boxed [S] (bool): the cell has such an object on that frame (a track query prompts on the clip's first)."""
    s, c = n * n, len(CATEGORIES)
    present = torch.zeros(s, c)
    boxes = torch.zeros(s, 4)
    best = np.zeros(s)
    scale = np.array([clip.spec.width, clip.spec.height] * 2, np.float64)
    for k, o in enumerate(clip.spec.objects):
        cat = CATEGORIES.index((o.colour, o.shape))
        for j, t in enumerate(index):
            area = float(clip.areas[t, k])
            if area < MIN_PRESENT_PX:
                continue
            box = clip.boxes[t, k] / scale
            cell = cell_index((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, n)
            present[cell, cat] = 1.0
            if j == 0 and area > best[cell]:
                best[cell] = area
                boxes[cell] = torch.from_numpy(box).float()
    return present, boxes, torch.from_numpy(best > 0)


def cell_attention_target(grid: int, frames: int, n: int, objects: Tensor | None = None) -> Tensor:
    """[S, frames * grid * grid]: where slot s should look, the tokens whose patch centre lies in cell s (on
    every frame), uniform; token order frame-major, then row-major patches (the vision encoder's). objects
    [B, N] (how much of each token objects cover): within the cell, weighted towards the objects ([B, S, N];
    `BACKGROUND_WEIGHT` for a token no object covers), so that what a slot pools is its object, not the
    background around it."""
    centre = (np.arange(grid) + 0.5) / grid
    cells = np.array([[cell_index(x, y, n) for x in centre] for y in centre]).reshape(-1)      # (grid * grid,)
    onehot = torch.from_numpy(cells[None, :] == np.arange(n * n)[:, None]).float()           # (S, g*g)
    target = onehot.repeat(1, frames)
    if objects is not None:
        target = target[None] * (objects[:, None, :] + BACKGROUND_WEIGHT)                      # (B, S, N)
    return target / target.sum(-1, keepdim=True)


@torch.no_grad()
def pass_values_through(model) -> None:
    """Every cross-attention's value and output projections := identity (biases 0). At the N(0, 0.02) init what
    a query pools reaches its output at ~5 % of the query's own scale: the output hardly depends on the image
    (across-input std / std 0.013) and the slots' presence loss stays at the prior (docs/training.md)."""
    for name, module in model.connector.named_modules():
        if name.endswith("crossattention.attention.value") or name.endswith("crossattention.output.dense"):
            module.weight.copy_(torch.eye(*module.weight.shape))
            module.bias.zero_()


class CellHead(nn.Module):
    """The throw-away read-out, shared by every slot: presence logits [B, S, C] and boxes [B, S, 4]."""

    def __init__(self, width: int, slots: int, categories: int = len(CATEGORIES)):
        super().__init__()
        self.slots, self.categories = slots, categories
        self.proj = nn.Linear(width, categories + 4)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        out = self.proj(tokens[:, : self.slots])
        centre, size = out[..., -4:-2].sigmoid(), out[..., -2:].sigmoid()
        return out[..., : self.categories], torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def cell_attention_loss(attn: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of each slot's cross-attention [B, Q, N] (its first S rows) against its target [(B,) S, N]."""
    s = target.shape[-2]
    return -(target * attn[:, :s].clamp(min=1e-8).log()).sum(-1).mean()


def read_category(presence: Tensor, boxes: Tensor, category: int) -> tuple[float, Tensor]:
    """What the slots say of one category: its largest presence probability and that slot's box."""
    s = int(presence[:, category].argmax())
    return float(presence[s, category]), boxes[s]
