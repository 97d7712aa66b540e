"""The task adapters: small MLPs between the LLM's hidden state and the heads.

Names follow the release: `loc_encoder`/`loc_decoder` are `nn.Sequential` (Linear, ReLU, Linear),
the others are the release's `MLP` with a `layers` list. The release hard-codes 768 (= 3 x 256, the
SAM2 sparse prompt) and 4096 (= the LLM width); here both come from the configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's "very simple MLP"); dropout only in training."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
            x = self.dropout(x)
        return x


def box_encoder(hidden: int, box_hidden: int) -> nn.Sequential:
    """`loc_encoder`: a user's box [.., 4] (normalised x1,y1,x2,y2) -> an input embedding [.., H]."""
    return nn.Sequential(nn.Linear(4, box_hidden), nn.ReLU(), nn.Linear(box_hidden, hidden))


def region_head(hidden: int, box_hidden: int) -> nn.Sequential:
    """`loc_decoder`: hidden state [.., H] -> box [.., 4], normalised x1,y1,x2,y2, no sigmoid."""
    return nn.Sequential(nn.Linear(hidden, box_hidden), nn.ReLU(), nn.Linear(box_hidden, 4))
