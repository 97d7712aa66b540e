"""Building blocks of the temporal grounding head (CG-DETR as VideoChat-TPO releases it).

Every tensor here is batch-first ([B, L, D]); the release runs sequence-first, which changes no value.
Masks are *valid* masks (True = a real token), the opposite of PyTorch's key-padding masks.
Attribute names are the release's (`self_attn`, `linear1`, `norm1`, `dropout1`, `activation`, ...),
so the released `cg_model.` tensors load by a plain copy; class names follow the CG-DETR and DAB-DETR
papers.

Three attentions, by what they project:
- `MultiheadAttention`: nn.MultiheadAttention's parameters (fused `in_proj_weight`/`in_proj_bias`,
  `out_proj`), written in plain ops so exporters see every step.
- `ProjectionFreeAttention`: only `out_proj`; the DAB-DETR decoder projects queries/keys/values itself.
- `AdaptiveCrossAttention`: video clips attend to [dummy tokens | text tokens] with no q/k/v
  projections; the softmax covers the dummies but only text values are summed (CG-DETR's "adaptive
  cross-attention": the dummies soak up attention a clip does not owe to the query).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INVERSE_SIGMOID_EPS = 1e-3  # the release's inverse_sigmoid eps (DETR's own is 1e-5)


def inverse_sigmoid(x: torch.Tensor, eps: float = INVERSE_SIGMOID_EPS) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)  # (B, H, N, d/H)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)  # (B, N, H*dh)


def attention_probs(q: torch.Tensor, k: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) over keys; q (B, H, L, dh), k (B, H, S, dh), key_valid (B, S) -> (B, H, L, S)."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention (same parameter names and maths), batch-first, in plain ops."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_valid: torch.Tensor | None) -> torch.Tensor:
        """query (B, L, D), key/value (B, S, D), key_valid (B, S) bool -> (B, L, D)."""
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = split_heads(F.linear(query, wq, bq), self.num_heads)
        k = split_heads(F.linear(key, wk, bk), self.num_heads)
        v = split_heads(F.linear(value, wv, bv), self.num_heads)
        probs = F.dropout(attention_probs(q, k, key_valid), self.dropout, self.training)
        return self.out_proj(merge_heads(torch.matmul(probs, v)))


class ProjectionFreeAttention(nn.Module):
    """Multi-head attention on already projected inputs; the query/key width may differ from the value's."""

    def __init__(self, qk_dim: int, num_heads: int, dropout: float, value_dim: int):
        super().__init__()
        assert qk_dim % num_heads == 0 and value_dim % num_heads == 0
        self.num_heads = num_heads
        self.dropout = dropout
        self.out_proj = nn.Linear(value_dim, value_dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_valid: torch.Tensor | None) -> torch.Tensor:
        """query (B, L, Dqk), key (B, S, Dqk), value (B, S, Dv), key_valid (B, S) -> (B, L, Dv)."""
        q, k, v = (split_heads(t, self.num_heads) for t in (query, key, value))
        probs = F.dropout(attention_probs(q, k, key_valid), self.dropout, self.training)
        return self.out_proj(merge_heads(torch.matmul(probs, v)))


class AdaptiveCrossAttention(nn.Module):
    """Clips attend to [dummies | text]; softmax over both, values summed over the text part only."""

    def __init__(self, dim: int, num_heads: int, dropout: float, num_dummies: int):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.num_dummies = num_dummies
        self.out_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Lv, D) clips, key/value (B, Nd+Lt, D) dummies then text, key_valid (B, Nd+Lt).

        Returns the output (B, Lv, D) and the attention (B, Lv, Nd+Lt), mean over heads, before dropout.
        """
        q, k, v = (split_heads(t, self.num_heads) for t in (query, key, value))
        probs = attention_probs(q, k, key_valid)  # (B, H, Lv, Nd+Lt)
        dropped = F.dropout(probs, self.dropout, self.training)
        out = torch.matmul(dropped[..., self.num_dummies:], v[:, :, self.num_dummies:])  # (B, H, Lv, D/H)
        return self.out_proj(merge_heads(out)), probs.mean(dim=1)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples (dim 0) in training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor()
        return x / keep * mask


class MLP(nn.Module):
    """DETR's "very simple" MLP: Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class LinearLayer(nn.Module):
    """Input projection: LayerNorm -> Dropout -> Linear (-> ReLU). `net` = (Dropout, Linear) as stored."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, relu: bool):
        super().__init__()
        self.relu = relu
        self.LayerNorm = nn.LayerNorm(in_dim)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(self.LayerNorm(x))
        return F.relu(x) if self.relu else x


def input_projection(in_dim: int, dim: int, num_layers: int, dropout: float) -> nn.Sequential:
    """`input_txt_proj` / `input_vid_proj`: `num_layers` LinearLayers, ReLU after all but the last."""
    return nn.Sequential(*[
        LinearLayer(in_dim if i == 0 else dim, dim, dropout, relu=i < num_layers - 1) for i in range(num_layers)
    ])


class SinePositionEmbedding(nn.Module):
    """Clip positions: sine/cosine of the cumulative count of valid clips, normalised to (0, 2*pi].

    Padding does not move the valid clips' positions (they depend only on the count of valid clips).
    """

    def __init__(self, dim: int, temperature: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.temperature = temperature

    def forward(self, valid: torch.Tensor) -> torch.Tensor:
        """valid (B, L) bool -> (B, L, dim) float32."""
        x = valid.cumsum(1, dtype=torch.float32)
        x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
        i = torch.arange(self.dim, dtype=torch.float32, device=valid.device)
        dim_t = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.dim)
        p = x[:, :, None] / dim_t  # (B, L, dim)
        return torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2)


def sine_embed_spans(spans: torch.Tensor, dim: int) -> torch.Tensor:
    """DAB-DETR anchor embedding: (centre, width) in [0, 1], (B, Q, 2) -> (B, Q, dim) float32,
    dim/2 sine/cosine channels for the centre followed by dim/2 for the width."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=spans.device)
    dim_t = 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / half)
    parts = []
    for c in range(2):
        p = spans[:, :, c].float()[:, :, None] * (2 * math.pi) / dim_t  # (B, Q, half)
        parts.append(torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2))
    return torch.cat(parts, dim=2)


class TrainablePositionalEncoding(nn.Module):
    """Learned text positions (`txt_position_embed`). Stored by the release but unused: it runs with
    `use_txt_pos=False`, so text tokens get zero position embeddings."""

    def __init__(self, max_positions: int, dim: int, dropout: float):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.LayerNorm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, D) -> (B, L, D)."""
        pos = self.position_embeddings(torch.arange(x.shape[1], device=x.device))[None]
        return self.dropout(self.LayerNorm(x + pos))


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer, PReLU FFN; positions are added to queries and keys only."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = DropPath(dropout)
        self.dropout2 = DropPath(dropout)
        self.activation = nn.PReLU()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x, pos (B, L, D), valid (B, L) bool -> (B, L, D)."""
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, valid)))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))


class Encoder(nn.Module):
    """A stack of `EncoderLayer`s with no final norm (`TransformerEncoder` with `layers`)."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos, valid)
        return x


class AdaptiveCrossAttentionLayer(nn.Module):
    """CG-DETR's text-to-video layer: clips cross-attend to [dummies | text], then a PReLU FFN.
    Only the clips are updated; the text side passes through unchanged. Unlike `EncoderLayer`, the FFN
    residual skips norm1: out = norm2(y + FFN(norm1(y))) with y = x + attention."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_dummies: int):
        super().__init__()
        self.self_attn = AdaptiveCrossAttention(dim, num_heads, dropout, num_dummies)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = DropPath(dropout)
        self.dropout2 = DropPath(dropout)
        self.activation = nn.PReLU()

    def _residual_ffn(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        # As released: the FFN reads norm1(x) but its residual is added to x itself, not to norm1(x).
        x = x + self.dropout1(attended)
        ffn = self.linear2(self.dropout(self.activation(self.linear1(self.norm1(x)))))
        return self.norm2(x + self.dropout2(ffn))

    def forward(self, video: torch.Tensor, video_pos: torch.Tensor, text: torch.Tensor, text_pos: torch.Tensor,
                text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, Lv, D), text (B, Nd+Lt, D) -> video (B, Lv, D), attention (B, Lv, Nd+Lt)."""
        attended, probs = self.self_attn(video + video_pos, text + text_pos, text, text_valid)
        return self._residual_ffn(video, attended), probs

    def forward_without_keys(self, x: torch.Tensor) -> torch.Tensor:
        """The release sends the saliency token through this layer with an empty key set: attention over
        no keys gives zeros, so the attention output is `out_proj.bias`. x (B, 1, D) -> (B, 1, D)."""
        return self._residual_ffn(x, self.self_attn.out_proj.bias.expand_as(x))


class AdaptiveCrossAttentionEncoder(nn.Module):
    """The `t2v_encoder`: a stack of `AdaptiveCrossAttentionLayer`s; attention is averaged over layers."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_dummies: int):
        super().__init__()
        self.layers = nn.ModuleList(
            AdaptiveCrossAttentionLayer(dim, num_heads, ffn_dim, dropout, num_dummies) for _ in range(num_layers)
        )

    def forward(self, video: torch.Tensor, video_pos: torch.Tensor, text: torch.Tensor, text_pos: torch.Tensor,
                text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> video (B, Lv, D), attention (B, Lv, Nd+Lt) averaged over layers."""
        total = None
        for layer in self.layers:
            video, probs = layer(video, video_pos, text, text_pos, text_valid)
            total = probs if total is None else total + probs
        return video, total / len(self.layers)

    def forward_without_keys(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer.forward_without_keys(x)
        return x


class AnchorDecoderLayer(nn.Module):
    """DAB-DETR decoder layer: self-attention among moment queries, then cross-attention to the clips
    where each head's query is [content | anchor sine] and its key is [content | position]."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, is_first: bool):
        super().__init__()
        self.num_heads = num_heads
        self.sa_qcontent_proj = nn.Linear(dim, dim)
        self.sa_qpos_proj = nn.Linear(dim, dim)
        self.sa_kcontent_proj = nn.Linear(dim, dim)
        self.sa_kpos_proj = nn.Linear(dim, dim)
        self.sa_v_proj = nn.Linear(dim, dim)
        self.self_attn = ProjectionFreeAttention(dim, num_heads, dropout, value_dim=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.dropout1 = DropPath(dropout)

        self.ca_qcontent_proj = nn.Linear(dim, dim)
        # Only the first layer adds the anchor's position to the cross-attention content (keep_query_pos=False).
        self.ca_qpos_proj = nn.Linear(dim, dim) if is_first else None
        self.ca_kcontent_proj = nn.Linear(dim, dim)
        self.ca_kpos_proj = nn.Linear(dim, dim)
        self.ca_v_proj = nn.Linear(dim, dim)
        self.ca_qpos_sine_proj = nn.Linear(dim, dim)
        self.cross_attn = ProjectionFreeAttention(2 * dim, num_heads, dropout, value_dim=dim)

        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout2 = DropPath(dropout)
        self.dropout3 = DropPath(dropout)
        self.activation = nn.PReLU()

    def _interleave_heads(self, content: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """(B, N, D) x 2 -> (B, N, 2D) laid out as [content_h | position_h] for each head h."""
        b, n, d = content.shape
        h = self.num_heads
        return torch.cat([content.view(b, n, h, d // h), position.view(b, n, h, d // h)], dim=3).view(b, n, 2 * d)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_valid: torch.Tensor, memory_pos: torch.Tensor,
                query_pos: torch.Tensor, query_sine: torch.Tensor) -> torch.Tensor:
        """tgt, query_pos, query_sine (B, Q, D); memory, memory_pos (B, Lv, D); memory_valid (B, Lv) -> (B, Q, D)."""
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, self.sa_v_proj(tgt), None)))

        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(memory_pos)
        if self.ca_qpos_proj is not None:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q = self._interleave_heads(q, self.ca_qpos_sine_proj(query_sine))  # (B, Q, 2D)
        k = self._interleave_heads(k, k_pos)  # (B, Lv, 2D)
        tgt = self.norm2(tgt + self.dropout2(self.cross_attn(q, k, self.ca_v_proj(memory), memory_valid)))

        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class AnchorDecoder(nn.Module):
    """DAB-DETR decoder over (centre, width) anchors, refined layer by layer by a shared `bbox_embed`,
    with the width-modulated anchor sine embedding (`ref_anchor_head`) and a final shared `norm`."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(
            AnchorDecoderLayer(dim, num_heads, ffn_dim, dropout, is_first=i == 0) for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.query_scale = MLP(dim, dim, dim, 2)
        self.ref_point_head = MLP(dim, dim, dim, 2)
        self.bbox_embed = MLP(dim, dim, 2, 3)
        self.ref_anchor_head = MLP(dim, dim, 1, 2)

    def forward(self, memory: torch.Tensor, memory_valid: torch.Tensor, memory_pos: torch.Tensor,
                anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory, memory_pos (B, Lv, D), memory_valid (B, Lv), anchors (B, Q, 2) before sigmoid.

        Returns hidden states (L, B, Q, D) after the shared norm, and the anchors each layer started
        from (L, B, Q, 2), sigmoid (centre, width); all but the first keep their gradient.
        """
        b, q = anchors.shape[:2]
        output = memory.new_zeros(b, q, self.dim)
        reference = anchors.sigmoid()
        references, hidden = [reference], []
        for i, layer in enumerate(self.layers):
            query_sine = sine_embed_spans(reference, self.dim).to(memory.dtype)  # (B, Q, D)
            query_pos = self.ref_point_head(query_sine)
            if i > 0:
                query_sine = query_sine * self.query_scale(output)
            # Modulate by the predicted / anchor width ratio (the release scales centre and width channels).
            query_sine = query_sine * (self.ref_anchor_head(output).sigmoid()[..., 0] / reference[..., 1])[..., None]
            output = layer(output, memory, memory_valid, memory_pos, query_pos, query_sine)
            new_reference = (self.bbox_embed(output) + inverse_sigmoid(reference)).sigmoid()
            if i < len(self.layers) - 1:
                references.append(new_reference)
            reference = new_reference.detach()
            hidden.append(self.norm(output))
        return torch.stack(hidden), torch.stack(references)
