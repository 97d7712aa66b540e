"""Slot attention: the region and track task tokens learn to read the cell slot of the object asked about.

With cell slots (`connector_cells`: connector query s describes cell s of an n x n partition of the frame) the
box a head needs sits in one visual token, the slot of the cell holding the object's centre. Trained on the head
losses alone, the tiny LLM's task token stayed at the mean box: it has to find that slot from the question and
copy what the slot says, and the first of the two steps gets no signal until the second works. Supervising one
layer's attention from the task token towards the slot gives the first step its own signal; the head loss then
teaches the rest (docs/training.md, "Issue 15, third session": region Acc@0.5 0.00 -> 0.67 on held-out clips
at 1,000 steps of region data, the same run without it stayed at the mean box). Training side only: the
exported graphs are unchanged.

    SLOT_ATTENTION_TASKS                   the heads whose sample box names a slot
    slot_attention_layer(cfg)              the supervised LLM layer: the middle one
    slot_attention_loss(attn, batch, n)    -log of the head-mean attention on the slot, mean over the samples
"""

from __future__ import annotations

import torch
from torch import Tensor

from tpo.contract.tasks import REGION, TRACK

from .connector_cells import cell_index
from .sample import Sample

# region: the box on the asked frame (an image prompt, one frame of slots); track: the prompt box (a video
# prompt, whose cell slots describe their cell over the clip with the box on its first sampled frame)
SLOT_ATTENTION_TASKS = (REGION.name, TRACK.name)
EPS = 1e-6


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


def slot_attention_loss(attention: Tensor, batch: list[Sample], n: int) -> Tensor | None:
    """attention [B, heads, L, L] (one layer, rows attend over columns); None when no sample of the batch has a
    slot (no region or track query)."""
    terms = [-torch.log(attention[i, :, s.placeholder, slot_position(s, n)].float().mean() + EPS)
             for i, s in enumerate(batch)
             if s.route in SLOT_ATTENTION_TASKS and s.box is not None and s.placeholder >= 0]
    return torch.stack(terms).mean() if terms else None


__all__ = ["SLOT_ATTENTION_TASKS", "slot_attention_layer", "slot_attention_loss", "slot_position"]
