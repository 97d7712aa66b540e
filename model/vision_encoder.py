"""UMT video ViT: the vision encoder of VideoChat-TPO.

Parameter names follow the release (`vision_encoder.encoder.*`), so loading is a plain copy.
Release details kept on purpose: the k projection has no bias (q and v biases only); there is no
norm after the last block (the top module applies `vision_layernorm`); `depth + return_index + 1`
blocks are built (24 - 2 + 1 = 23 for the release); the position table is a fixed sinusoid that is
computed, not stored (the release's 1-D table over flattened positions; `tiny` chooses a separable
time / row / column table, `VisionEncoderConfig.position_table`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionEncoderConfig


def sinusoid_table(num_positions: int, width: int) -> torch.Tensor:
    """[num_positions, width] fp64->fp32: angle pos / 10000^(2*(j//2)/width); sin on even, cos on odd."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(width, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / width)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def separable_position_table(cfg: VisionEncoderConfig, num_frames: int) -> torch.Tensor:
    """[num_frames * grid * grid, width]: the "2d" table, frame-major. The channels are split: the first quarter
    a sinusoid of the frame index (an image is frame 0), then half of the rest a sinusoid of the row and half
    of the column, each with `sinusoid_table`'s frequencies over its own width. Row and column are apart, so
    both are a linear read-out of the table (the 1-D table over flattened positions leaves the column nearly
    non-linear: docs/training.md)."""
    g, c = cfg.grid, cfg.width
    if c % 8:
        raise ValueError(f"the 2d position table needs a vision width divisible by 8, got {c}")
    ct = c // 4
    cs = (c - ct) // 2
    time = sinusoid_table(num_frames, ct)[:, None, None, :].expand(num_frames, g, g, ct)
    row = sinusoid_table(g, cs)[None, :, None, :].expand(num_frames, g, g, cs)
    col = sinusoid_table(g, cs)[None, None, :, :].expand(num_frames, g, g, cs)
    return torch.cat([time, row, col], dim=-1).reshape(num_frames * g * g, c)


def video_position_table(cfg: VisionEncoderConfig, num_frames: int) -> torch.Tensor:
    """[num_frames * grid * grid, width]: the configuration's position table (`cfg.position_table`).

    "1d", as the release: a 1-D sinusoid over the flattened (frame, row, col) positions of
    `pos_table_frames` frames, reshaped to (T0, g, g, C), resampled along T with linear
    interpolation (align_corners=False) and flattened frame-major. One frame (images) uses the
    plain g*g table. "2d": `separable_position_table`.
    """
    if cfg.position_table == "2d":
        return separable_position_table(cfg, num_frames)
    g, c, t0 = cfg.grid, cfg.width, cfg.pos_table_frames
    if num_frames == 1:
        return sinusoid_table(g * g, c)
    table = sinusoid_table(t0 * g * g, c)
    if num_frames == t0:
        return table
    table = table.reshape(t0, g * g, c).permute(1, 2, 0)          # (g*g, C, T0)
    table = F.interpolate(table, size=num_frames, mode="linear", align_corners=False)
    return table.permute(2, 0, 1).reshape(num_frames * g * g, c)  # (T*g*g, C)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv3d(3, cfg.width, kernel_size=(1, p, p), stride=(1, p, p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                       # (B, C, T, g, g)
        return x.flatten(2).transpose(1, 2)    # (B, T*g*g, C)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv weight, q and v biases, and no k bias."""

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]       # (B, nh, N, hs)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.width, hidden)
        self.fc2 = nn.Linear(hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_blocks))


class VisionEncoder(nn.Module):
    """Frames -> vision tokens.

    forward(pixels): pixels [B, 3, T, S, S] float, normalised (ImageNet mean/std), S = image_size;
    returns [B, T*g*g, width] (g = S / patch), frame-major. T = 1 means an image.
    """

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)

    def position_table(self, num_frames: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return video_position_table(self.cfg, num_frames).to(device=device, dtype=dtype)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        if pixels.dim() != 5 or pixels.shape[1] != 3 or pixels.shape[-2:] != (s, s):
            raise ValueError(f"vision encoder input must be [B, 3, T, {s}, {s}], got {list(pixels.shape)}")
        x = self.encoder.patch_embed(pixels)                              # (B, T*g*g, C)
        x = x + self.position_table(pixels.shape[2], x.dtype, x.device)
        for block in self.encoder.blocks:
            x = block(x)
        return x


def num_tokens(cfg: VisionEncoderConfig, num_frames: int) -> int:
    return num_frames * cfg.grid * cfg.grid


__all__ = ["VisionEncoder", "num_tokens", "separable_position_table", "sinusoid_table", "video_position_table"]
