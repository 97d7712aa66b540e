"""Slot attention: the region and track task tokens learn to read the cell slot of the object asked about.

With cell slots (`connector_cells`: connector query s describes cell s of an n x n partition of the frame) the
box a head needs sits in one visual token, the slot of the cell holding the object's centre. Trained on the head
losses alone, the tiny LLM's task token stayed at the mean box: it has to find that slot from the question and
copy what the slot says, and the first of the two steps gets no signal until the second works. Supervising one
layer's attention from the task token towards the slot gives the first step its own signal; the head loss then
teaches the rest (docs/training.md, "Issue 15, third session": region Acc@0.5 0.00 -> 0.67 on held-out clips
at 1,000 steps of region data, the same run without it stayed at the mean box). Training side only: the
exported graphs are unchanged.

With layout "both" (category slots after the cells) a conversation question that names one object ("what
colour is the square?") has a slot too: the category slot of that object, which says whether it shows (of the
four squares, the one present is the answer). There the position that predicts the answer's first token attends.

    SLOT_ATTENTION_TASKS                   the heads whose sample box names a slot
    SlotMap.of(cfg, layout)                where the slots sit among the visual tokens
    slot_attention_layer(cfg)              the supervised LLM layer: the middle one
    slot_attention_loss(attn, batch, map)  -log of the head-mean attention on the slot, mean over the samples
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tpo.contract.tasks import REGION, TRACK

from .connector_cells import cell_index, cells_per_side
from .sample import Sample

# region: the box on the asked frame (an image prompt, one frame of slots); track: the prompt box (a video
# prompt, whose cell slots describe their cell over the clip with the box on its first sampled frame)
SLOT_ATTENTION_TASKS = (REGION.name, TRACK.name)
EPS = 1e-6


@dataclass(frozen=True)
class SlotMap:
    """Where the slots sit among a prompt's visual tokens: n x n cell slots first, then (layout "both")
    `category_frames` slots per colour-shape category (0: none)."""

    cells_per_side: int
    category_frames: int = 0

    @classmethod
    def of(cls, cfg, layout: str) -> SlotMap:
        from .connector_pretrain import slot_frames

        return cls(cells_per_side(cfg, layout), slot_frames(cfg, layout) if layout == "both" else 0)


def slot_attention_layer(cfg) -> int:
    """The middle layer: the layers before it can gather the question into the task token, the layers after it
    can turn the slot it read into the head's input."""
    return cfg.llm.num_layers // 2


def slot_position(sample: Sample, n: int) -> int:
    """The sequence position of the cell slot holding the centre of `sample.box` (normalised xyxy). The n * n
    cell slots are the first visual tokens (layout "both" has its category slots after them)."""
    x1, y1, x2, y2 = (float(v) for v in sample.box)
    visual = torch.nonzero(sample.visual_mask).flatten()
    if len(visual) < n * n:
        raise ValueError(f"slot attention needs {n * n} cell slots in the prompt, the sample has {len(visual)}")
    return int(visual[cell_index((x1 + x2) / 2, (y1 + y2) / 2, n)])


def category_positions(sample: Sample, slots: SlotMap) -> list[int]:
    """The sequence positions of the category slots of `sample.category` (after the n * n cell slots)."""
    visual = torch.nonzero(sample.visual_mask).flatten()
    first = slots.cells_per_side ** 2 + sample.category * slots.category_frames
    return visual[first: first + slots.category_frames].tolist()


def answer_position(sample: Sample) -> int:
    """The position whose output predicts the answer's first token (the one before the first labelled one)."""
    return int(torch.nonzero(sample.labels != -100).flatten()[0]) - 1


def attention_target(sample: Sample, slots: SlotMap) -> tuple[int, list[int]] | None:
    """(the attending position, the slot positions it should attend to) of a sample, or None where it has none."""
    if sample.route in SLOT_ATTENTION_TASKS and sample.box is not None and sample.placeholder >= 0:
        return sample.placeholder, [slot_position(sample, slots.cells_per_side)]
    if slots.category_frames and sample.category >= 0:
        return answer_position(sample), category_positions(sample, slots)
    return None


def slot_attention_loss(attention: Tensor, batch: list[Sample], slots: SlotMap) -> Tensor | None:
    """attention [B, heads, L, L] (one layer, rows attend over columns): -log of the head-mean attention on the
    sample's slots (summed over them); None when no sample of the batch has a slot."""
    terms = []
    for i, s in enumerate(batch):
        target = attention_target(s, slots)
        if target is not None:
            row, keys = target
            terms.append(-torch.log(attention[i, :, row][:, keys].float().sum(-1).mean() + EPS))
    return torch.stack(terms).mean() if terms else None


__all__ = ["SLOT_ATTENTION_TASKS", "SlotMap", "attention_target", "slot_attention_layer", "slot_attention_loss",
           "slot_position"]
