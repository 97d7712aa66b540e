"""Training losses of the temporal head: CG-DETR's Hungarian matcher and set criterion, as released.

`TemporalCriterion` holds the checkpoint's `cg_criterion.empty_weight` buffer ([2]: 1 for foreground,
`eos_coef` for background) and returns the release's loss dictionary:
  loss_span, loss_giou, loss_label (+ class_error, logged only)  matched moments, and for each
                                       earlier decoder layer i the same with suffix `_i`
  loss_saliency   clip ranking/contrast on the saliency scores plus the same on the t2v attention
  loss_ms_align   moment token vs sentence / dummy-sentence tokens, and moment token vs clips
  loss_distill    t2v attention distilled from the moment-to-word similarity
  loss_orthogonal_dummy   dummy tokens and global prompt tokens kept apart
`weighted_total` sums them with the release's weights (VideoChat-TPO then scales the sum by 0.05).

Deviations: the matcher's costs are float32 (the release rounds the L1 cost to bfloat16). The release adds a spurious axis to the false-negative ranking term when exactly one
sample of the batch is paired with its own video, which makes that term ~1e-6; it is computed like
the multi-sample case here. The release also computes that term on the t2v attention but adds it to
a variable it no longer reads; it is left out here (no value changes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from tpo.errors import InputError

from .temporal_head import TemporalHeadOutput

FOREGROUND, BACKGROUND = 0, 1
RANK_TAU = 0.5           # temperature of the rank-contrastive saliency loss
RANK_LEVELS = range(1, 12)  # saliency thresholds 1..11; the release divides the sum by 12
RANK_DIVISOR = 12


@dataclass
class TemporalCriterionConfig:
    """Matcher costs and loss weights; the defaults are the release's `CGDETRConfig`."""

    cost_span: float = 10.0
    cost_giou: float = 1.0
    cost_class: float = 4.0
    span_loss_coef: float = 10.0
    giou_loss_coef: float = 1.0
    label_loss_coef: float = 4.0
    eos_coef: float = 0.1          # background class weight in the label loss
    lw_saliency: float = 4.0
    lw_wattn: float = 1.0          # weight of the t2v-attention part inside loss_saliency
    lw_ms_align: float = 1.0
    lw_distill: float = 1.0        # the release also weights loss_orthogonal_dummy with it
    saliency_margin: float = 0.2


@dataclass
class TemporalTargets:
    """Ground truth for a batch of B samples with Lv clips.

    spans          B tensors (n_b, 2): moments as (centre, width), fractions of the video
    saliency_pos   (B, P) long: clip indices that should score higher ...
    saliency_neg   (B, P) long: ... than these (None: no saliency loss)
    saliency_all   (B, Lv) float: per-clip saliency labels, 0 outside the moments (also the model's
                   `relevant_clips`); ranks 1..11 count, values > 100 mark clips to leave out
    """

    spans: list[torch.Tensor]
    saliency_pos: torch.Tensor | None = None
    saliency_neg: torch.Tensor | None = None
    saliency_all: torch.Tensor | None = None


def span_cxw_to_xx(spans: torch.Tensor) -> torch.Tensor:
    """(..., 2) (centre, width) -> (..., 2) (start, end)."""
    return torch.stack([spans[..., 0] - 0.5 * spans[..., 1], spans[..., 0] + 0.5 * spans[..., 1]], dim=-1)


def generalized_temporal_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of 1-D spans: a (N, 2), b (M, 2) as (start, end) -> (N, M), in float32."""
    a, b = a.float(), b.float()
    inter = (torch.min(a[:, None, 1], b[:, 1]) - torch.max(a[:, None, 0], b[:, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0]) - inter
    enclosing = (torch.max(a[:, None, 1], b[:, 1]) - torch.min(a[:, None, 0], b[:, 0])).clamp(min=0)
    return inter / union - (enclosing - union) / enclosing


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predicted moments to ground-truth moments (scipy linear_sum_assignment)
    minimising cost_span * L1 + cost_giou * (-GIoU) + cost_class * (-p_foreground)."""

    def __init__(self, cost_span: float, cost_giou: float, cost_class: float):
        super().__init__()
        self.cost_span = cost_span
        self.cost_giou = cost_giou
        self.cost_class = cost_class

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, spans: torch.Tensor,
                target_spans: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """logits (B, Q, 2), spans (B, Q, 2) (centre, width) -> per sample (query indices, target indices)."""
        b, q = spans.shape[:2]
        sizes = [len(t) for t in target_spans]
        if sum(sizes) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(b)]
        prob = logits.flatten(0, 1).float().softmax(-1)  # (B*Q, 2)
        out = spans.flatten(0, 1).float()  # (B*Q, 2)
        tgt = torch.cat(target_spans).float().to(out.device)  # (T, 2)
        cost = (self.cost_span * torch.cdist(out, tgt, p=1)
                - self.cost_giou * generalized_temporal_iou(span_cxw_to_xx(out), span_cxw_to_xx(tgt))
                - self.cost_class * prob[:, FOREGROUND:FOREGROUND + 1])  # (B*Q, T)
        cost = cost.view(b, q, -1).cpu()
        indices = [linear_sum_assignment(c[i].numpy()) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


def rank_contrastive(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """CG-DETR's rank-contrastive saliency loss. scores, labels, valid (N, L) -> scalar.

    For each level r in 1..11, clips labelled >= r are positives in a softmax over the sample's clips
    (temperature 0.5, padding and clips labelled > 100 pushed to -1000). A level with no positive in
    the whole batch adds exactly 0, which is what the release's `continue` amounts to.
    """
    scores = valid * scores + (1.0 - valid) * -1e3
    keep = ~(labels > 100)
    total = scores.new_zeros(())
    for level in RANK_LEVELS:
        pos = labels >= level
        cur = scores * keep / RANK_TAU + ~keep * -1e3
        logits = cur - cur.max(dim=1, keepdim=True)[0]
        log_prob = logits - torch.log(logits.exp().sum(1, keepdim=True) + 1e-6)
        mean_log_prob_pos = (pos * log_prob * valid).sum(1) / (pos.sum(1) + 1e-6)
        total = total + (-mean_log_prob_pos * (pos.sum(1) > 0)).mean()
    return total / RANK_DIVISOR


def margin_ranking(scores: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge: each positive clip should beat its paired negative by `margin`. scores (B, L), idx (B, P)."""
    pos, neg = scores.gather(1, pos_idx), scores.gather(1, neg_idx)
    return torch.clamp(margin + neg - pos, min=0).sum() / pos.numel() * 2


class TemporalCriterion(nn.Module):
    """The release's `SetCriterion` for the temporal head; state: `empty_weight` only."""

    def __init__(self, cfg: TemporalCriterionConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TemporalCriterionConfig()
        self.matcher = HungarianMatcher(cfg.cost_span, cfg.cost_giou, cfg.cost_class)
        empty_weight = torch.ones(2)
        empty_weight[BACKGROUND] = cfg.eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self.weights = {
            "loss_span": cfg.span_loss_coef, "loss_giou": cfg.giou_loss_coef, "loss_label": cfg.label_loss_coef,
            "loss_saliency": cfg.lw_saliency, "loss_ms_align": cfg.lw_ms_align, "loss_distill": cfg.lw_distill,
            "loss_orthogonal_dummy": cfg.lw_distill,
        }

    def forward(self, output: TemporalHeadOutput, targets: TemporalTargets) -> dict[str, torch.Tensor]:
        """All losses, unweighted; `weighted_total` combines them."""
        for i, t in enumerate(targets.spans):
            if t.ndim != 2 or t.shape[-1] != 2:
                raise InputError(f"targets.spans[{i}]: expected (n, 2) (centre, width), got {tuple(t.shape)}")
        losses = self.moment_losses(output.logits, output.spans, targets.spans)
        losses["loss_saliency"] = self.loss_saliency(output, targets)
        losses["loss_ms_align"] = self.loss_ms_align(output, targets)
        losses["loss_distill"] = self.loss_distill(output)
        losses["loss_orthogonal_dummy"] = self.loss_orthogonal_dummy(output)
        for i in range(output.aux_logits.shape[0]):
            aux = self.moment_losses(output.aux_logits[i], output.aux_spans[i], targets.spans)
            losses.update({f"{k}_{i}": v for k, v in aux.items()})
        return losses

    def weighted_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of weight x loss; auxiliary `<name>_<i>` losses take `<name>`'s weight; class_error is not a loss."""
        total = None
        for key, value in losses.items():
            base = key
            if key not in self.weights:
                match = re.fullmatch(r"(.+)_\d+", key)
                if match is None or match.group(1) not in self.weights or match.group(1) == "loss_saliency":
                    continue
                base = match.group(1)
            term = value * self.weights[base]
            total = term if total is None else total + term
        return total

    def moment_losses(self, logits: torch.Tensor, spans: torch.Tensor,
                      target_spans: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Matched span L1 + GIoU and the weighted foreground/background cross-entropy of one layer."""
        indices = self.matcher(logits, spans, target_spans)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(spans.device)
        query_idx = torch.cat([src for src, _ in indices]).to(spans.device)
        matched = spans[batch_idx, query_idx].float()  # (M, 2)
        target = torch.cat([t[j] for t, (_, j) in zip(target_spans, indices, strict=True)]).float().to(spans.device)
        giou = generalized_temporal_iou(span_cxw_to_xx(matched), span_cxw_to_xx(target))
        classes = torch.full(logits.shape[:2], BACKGROUND, dtype=torch.int64, device=logits.device)
        classes[batch_idx, query_idx] = FOREGROUND
        ce = F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight.to(logits.dtype), reduction="none")
        with torch.no_grad():
            correct = (logits[batch_idx, query_idx].argmax(-1) == FOREGROUND).float()
        return {
            "loss_span": F.l1_loss(matched, target, reduction="none").mean(),
            "loss_giou": (1 - torch.diag(giou)).mean(),
            "loss_label": ce.mean(),  # a plain mean of weighted terms, as the release does
            "class_error": 100 - correct.mean() * 100,
        }

    def loss_saliency(self, output: TemporalHeadOutput, targets: TemporalTargets) -> torch.Tensor:
        if targets.saliency_pos is None or targets.saliency_neg is None or targets.saliency_all is None:
            return output.saliency.new_zeros(())
        m = self.cfg.saliency_margin
        sal, att = output.saliency, output.t2v_saliency  # (B, Lv)
        valid = output.video_mask.to(sal.dtype)
        labels = targets.saliency_all.to(sal.dtype)
        pos, neg = targets.saliency_pos, targets.saliency_neg
        bce = F.binary_cross_entropy(att.reshape(-1), labels.clamp(0, 1).reshape(-1))  # padding included

        if output.saliency_neg is None:  # no negative pairs (e.g. batch of one)
            loss = margin_ranking(sal, pos, neg, m) + rank_contrastive(sal, labels, valid)
            loss_attn = rank_contrastive(att, labels, valid) + bce + margin_ranking(att, pos, neg, m)
            return loss + self.cfg.lw_wattn * loss_attn

        real, fake = output.real_negative, ~output.real_negative
        v_real = valid[real]
        both_labels = torch.cat([labels[real], torch.zeros_like(labels[real])], dim=1)  # (N, 2Lv)
        neg_pair = (-torch.log(1.0 - torch.sigmoid(output.saliency_neg)) * v_real).sum(1).mean()
        rank = rank_contrastive(torch.cat([sal[real], output.saliency_neg], 1), both_labels, v_real.repeat(1, 2))
        if bool(fake.any()):  # samples paired with their own video: rank within the positive video only
            rank = rank + rank_contrastive(sal[fake], labels[fake], valid[fake])
        loss = margin_ranking(sal, pos, neg, m) + rank + neg_pair

        neg_pair_attn = (-torch.log(1.0 - output.t2v_saliency_neg) * v_real).sum(1).mean()
        rank_attn = rank_contrastive(torch.cat([att[real], output.t2v_saliency_neg], 1), both_labels,
                                     v_real.repeat(1, 2))
        loss_attn = rank_attn + bce + neg_pair_attn + margin_ranking(att, pos, neg, m)
        return loss + self.cfg.lw_wattn * loss_attn

    def loss_ms_align(self, output: TemporalHeadOutput, targets: TemporalTargets) -> torch.Tensor:
        if output.moment_token is None or targets.saliency_all is None:
            return output.saliency.new_zeros(())
        moment = F.normalize(output.moment_token, dim=1)  # (B, D)
        non_moment = F.normalize(output.non_moment_token, dim=1)
        sentence = F.normalize(output.sentence_token, dim=1)
        dummy = F.normalize(output.dummy_sentence_token, dim=1)
        b = moment.shape[0]
        eye = torch.eye(b, device=moment.device)
        # Each moment token should pick its own sentence among [sentences x moments | x non-moments].
        logits = torch.cat([moment @ sentence.T, non_moment @ sentence.T], dim=1)  # (B, 2B)
        loss = F.cross_entropy(logits, torch.cat([eye, torch.zeros_like(eye)], 1).max(dim=1)[1])
        # ... and not its own dummy sentence (the first other entry of the row is the label, as released).
        dummy_logits = torch.cat([moment @ dummy.T, non_moment @ dummy.T], dim=1)
        loss = loss + F.cross_entropy(dummy_logits, torch.cat([1 - eye, torch.ones_like(eye)], 1).max(dim=1)[1])
        # The moment token should classify the clips (moment-pass / non-moment-pass) as in or out.
        relevant = targets.saliency_all.clamp(0, 1).to(output.moment_frames.dtype)  # (B, Lv)
        pred = torch.sigmoid(output.moment_token[:, None] @ output.moment_frames.transpose(1, 2))  # (B, 1, Lv)
        bce = F.binary_cross_entropy(pred.reshape(-1), relevant.reshape(-1), reduction="none")
        return loss + (bce * output.video_mask.reshape(-1)).mean()

    def loss_distill(self, output: TemporalHeadOutput) -> torch.Tensor:
        if output.moment_to_text is None:
            return output.saliency.new_zeros(())
        attn = output.t2v_attention  # (B, Lv, Nd+Lt)
        b, lv, s = attn.shape
        mask = output.moment_mask.reshape(-1).to(attn.dtype)
        target = torch.softmax(output.moment_to_text, dim=-1).detach().reshape(b * lv, s)  # padding included
        kl = F.kl_div(torch.log(attn + 1e-6).reshape(b * lv, s), target, reduction="none").mean(1) * mask
        return kl.sum() / mask.sum()

    def loss_orthogonal_dummy(self, output: TemporalHeadOutput) -> torch.Tensor:
        loss = output.saliency.new_zeros(())
        dummies = output.dummy_tokens  # (B, Nd, D)
        if dummies.shape[1] != 1:
            dn = dummies / dummies.norm(dim=2, keepdim=True)
            sim = dn @ dn.transpose(1, 2).detach()
            eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
            loss = sim.masked_fill(eye, 0).abs().mean()
        g = output.global_tokens  # (P, D)
        gn = g / g.norm(dim=1, keepdim=True)
        gsim = (gn @ gn.T.detach()).masked_fill(torch.eye(g.shape[0], dtype=torch.bool, device=g.device), 0)
        return loss + gsim.abs().mean()
