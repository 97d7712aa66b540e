"""The TPO losses for the task heads (region, track) and the temporal targets' construction.

Region: 2 * L1 + GIoU / 5 on the normalised box (GIoU only where the predicted box is well formed,
as the release masks it). Track: prompt distillation, L1 between the track adapter's sparse prompt
and the frozen mask head's own prompt-encoder embedding of the ground-truth box, plus L1 of the box
that `track_embed_decode2` reads from the same hidden state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tpo.model.temporal_criterion import TemporalTargets


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Paired GIoU of boxes [N, 4] x1,y1,x2,y2 (well-formed) -> [N]."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c, rb_c = torch.min(a[:, :2], b[:, :2]), torch.max(a[:, 2:], b[:, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(dim=1)
    return iou - (hull - union) / hull.clamp(min=1e-7)


def region_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target [N, 4] normalised x1,y1,x2,y2 -> 2 * L1 + GIoU / 5 (GIoU over well-formed predictions;
    2 when none is, as the release)."""
    l1 = F.l1_loss(pred, target)
    ok = (pred[:, 2:] >= pred[:, :2]).all(dim=1)
    giou = (1 - generalized_box_iou(pred[ok], target[ok])).mean() if bool(ok.any()) else pred.new_tensor(2.0)
    return 2 * l1 + giou / 5


def track_loss(sparse_prompt: torch.Tensor, target_prompt: torch.Tensor, box_pred: torch.Tensor,
               box: torch.Tensor) -> torch.Tensor:
    """sparse_prompt, target_prompt [N, 3, C]; box_pred, box [N, 4] -> L1 distillation + box L1."""
    return F.l1_loss(sparse_prompt, target_prompt) + F.l1_loss(box_pred, box)


def temporal_targets(spans: list[torch.Tensor], saliency: torch.Tensor, lengths: list[int],
                     rng: torch.Generator, pairs: int = 2) -> TemporalTargets:
    """CG-DETR targets: moments (centre, width), and for the saliency losses `pairs` clips inside the
    moment that should outscore `pairs` clips outside it (drawn with `rng`; inside clips stand in
    when a moment covers the whole video)."""
    pos, neg = [], []
    for sal, n in zip(saliency, lengths, strict=True):
        inside = torch.nonzero(sal[:n] > 0).flatten()
        outside = torch.nonzero(sal[:n] == 0).flatten()
        if inside.numel() == 0:
            inside = torch.arange(n)
        if outside.numel() == 0:
            outside = inside
        pos.append(inside[torch.randint(inside.numel(), (pairs,), generator=rng)])
        neg.append(outside[torch.randint(outside.numel(), (pairs,), generator=rng)])
    return TemporalTargets(spans=spans, saliency_pos=torch.stack(pos), saliency_neg=torch.stack(neg),
                           saliency_all=saliency)
