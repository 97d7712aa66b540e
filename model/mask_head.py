"""Mask/track head: SAM2 v1.0 (Hiera-L, 1024 px) as released with VideoChat-TPO, built from transformers' SAM2.

The building blocks are transformers' own modules (`Sam2VisionModel` = Hiera + FPN, `Sam2VideoPromptEncoder`,
`Sam2VideoMaskDecoder`, `Sam2VideoMemoryAttention`, `Sam2VideoMemoryEncoder`), configured as SAM2 v1.0:
no temporal encoding of object pointers (`obj_ptr_tpos_proj`) and no occlusion embedding (`no_obj_embed_spatial`),
both SAM2.1-only. `MaskHead` exposes one method per exportable piece with plain tensor inputs and outputs;
the per-frame propagation logic lives on the host in `mask_tracker.py`.

Decisions where the release has a quirk (see ../shared/docs/videochat-tpo-reference.md, outside the repository):
- rotary tables of the memory attention are always computed in fp32 (the release builds them from a bf16 arange);
- memory features are not rounded to bf16 (the release and transformers' `_encode_new_memory` do);
- `attend_memory` takes a fixed number of memory slots plus a validity mask, so the graph has static shapes.

Checkpoint names: `release_names.sam2_to_release` / `sam2_from_release` convert between `MaskHead.state_dict()`
and the release's original-SAM2 names (relative to the checkpoint's `sam.` prefix).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig
from transformers.models.sam2_video.configuration_sam2_video import (
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
)
from transformers.models.sam2_video.modeling_sam2_video import (
    Sam2VideoMemoryAttention,
    Sam2VideoModel,
    Sam2VideoRoPEAttention,
    Sam2VideoVisionRotaryEmbedding,
    apply_rotary_pos_emb_2d,
)

from tpo.errors import ConfigError, InputError

from .release_names import MASK_DOWNSAMPLER_LAYERS

# Mask logit written where the decoder says the object is absent (SAM2's NO_OBJ_SCORE).
NO_OBJECT_SCORE = -1024.0
# SAM2's fixed strides: the image embedding is 1/16 of the image, the low-res masks 1/4.
BACKBONE_STRIDE = 16
LOW_RES_STRIDE = 4
# The memory encoder feeds the mask as sigmoid(logits) * 20 - 10 (binarised masks as {0, 1} * 20 - 10).
MEMORY_MASK_SCALE = 20.0
MEMORY_MASK_BIAS = -10.0
# transformers 5.24 builds the memory cross-attention with `kv_in_dim=64` whatever the configuration says; SAM2's
# own option is the memory width (`mem_dim`, the keys' and values' width), so `MaskHead` rebuilds it for another.
_TRANSFORMERS_MEMORY_DIM = 64
# SAM2's IoU head is 256 wide whatever the model width (`iou_head_hidden_dim=256` in its mask decoder).
SAM2_IOU_HEAD_DIM = 256


@dataclass
class MaskHeadConfig:
    """SAM2 dimensions; the defaults are SAM2 v1.0 Hiera-L at 1024 px as released with VideoChat-TPO."""

    image_size: int = 1024  # square input side in pixels
    hiera_embed_dim: int = 144  # stage-1 width; doubles at each of the 4 stages
    hiera_num_heads: int = 2  # stage-1 heads; doubles at each stage
    hiera_blocks_per_stage: tuple[int, ...] = (2, 6, 36, 4)
    hiera_global_attention_blocks: tuple[int, ...] = (23, 33, 43)  # block indices over all stages
    hiera_window_size_per_stage: tuple[int, ...] = (8, 4, 16, 8)
    hiera_window_pos_embed_size: tuple[int, int] = (7, 7)  # background position-embedding grid
    hidden_size: int = 256  # FPN / prompt / decoder / memory-attention width
    memory_dim: int = 64  # memory-encoder output channels = key/value width of the memory cross-attention
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    mask_decoder_mlp_dim: int = 2048  # the release hard-codes 2048 whatever the width
    iou_head_hidden_dim: int = SAM2_IOU_HEAD_DIM  # SAM2 fixes it at 256, not tied to hidden_size
    num_maskmem: int = 7  # conditioning frame + up to num_maskmem - 1 recent frames
    max_object_pointers: int = 16  # conditioning frame + up to max_object_pointers - 1 recent frames
    stability_delta: float = 0.05  # single-mask stability score: IoU of masks at logit +-delta
    stability_threshold: float = 0.98  # below it the single mask falls back to the best multimask

    def __post_init__(self) -> None:
        if len(self.hiera_blocks_per_stage) != 4 or len(self.hiera_window_size_per_stage) != 4:
            raise ConfigError(
                f"Hiera has 4 stages: got hiera_blocks_per_stage={self.hiera_blocks_per_stage}, "
                f"hiera_window_size_per_stage={self.hiera_window_size_per_stage}"
            )
        if self.image_size % (BACKBONE_STRIDE * 2) != 0:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of {BACKBONE_STRIDE * 2}")
        stage1 = self.image_size // 4
        if stage1 % self.hiera_window_size_per_stage[0] != 0:
            raise ConfigError(
                f"the stage-1 grid ({stage1}) must be a multiple of hiera_window_size_per_stage[0]="
                f"{self.hiera_window_size_per_stage[0]}"
            )
        if self.hidden_size % 32 != 0 or self.memory_dim < 1 or self.hidden_size % self.memory_dim != 0:
            raise ConfigError(  # an object pointer [C] becomes C / memory_dim memory tokens
                f"hidden_size={self.hidden_size} must be a multiple of 32 and of memory_dim={self.memory_dim}"
            )
        if self.iou_head_hidden_dim < 1:
            raise ConfigError(f"iou_head_hidden_dim={self.iou_head_hidden_dim} must be >= 1")
        if self.num_maskmem < 2 or self.max_object_pointers < 2:
            raise ConfigError(
                f"num_maskmem={self.num_maskmem} and max_object_pointers={self.max_object_pointers} "
                "must be >= 2 (the conditioning frame plus at least one recent frame)"
            )

    @property
    def feature_size(self) -> int:
        """Side of the image embedding grid: image_size / 16."""
        return self.image_size // BACKBONE_STRIDE

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits: image_size / 4."""
        return self.image_size // LOW_RES_STRIDE

    def to_transformers(self) -> Sam2VideoConfig:
        """The equivalent transformers `Sam2VideoConfig` (SAM2 v1.0: no SAM2.1-only parameters)."""
        e, h = self.hiera_embed_dim, self.hiera_num_heads
        embed_dims = [e, 2 * e, 4 * e, 8 * e]
        s = self.image_size
        backbone = Sam2HieraDetConfig(
            hidden_size=e,
            num_attention_heads=h,
            image_size=[s, s],
            embed_dim_per_stage=embed_dims,
            num_attention_heads_per_stage=[h, 2 * h, 4 * h, 8 * h],
            blocks_per_stage=list(self.hiera_blocks_per_stage),
            global_attention_blocks=list(self.hiera_global_attention_blocks),
            window_size_per_stage=list(self.hiera_window_size_per_stage),
            window_positional_embedding_background_size=list(self.hiera_window_pos_embed_size),
        )
        vision = Sam2VisionConfig(
            backbone_config=backbone,
            backbone_channel_list=embed_dims[::-1],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=self.hidden_size,
        )
        prompt = Sam2VideoPromptEncoderConfig(hidden_size=self.hidden_size, image_size=s, patch_size=BACKBONE_STRIDE)
        decoder = Sam2VideoMaskDecoderConfig(
            hidden_size=self.hidden_size,
            mlp_dim=self.mask_decoder_mlp_dim,
            iou_head_hidden_dim=self.iou_head_hidden_dim,
            dynamic_multimask_via_stability=True,
            dynamic_multimask_stability_delta=self.stability_delta,
            dynamic_multimask_stability_thresh=self.stability_threshold,
        )
        return Sam2VideoConfig(
            vision_config=vision,
            prompt_encoder_config=prompt,
            mask_decoder_config=decoder,
            image_size=s,
            num_maskmem=self.num_maskmem,
            sigmoid_scale_for_mem_enc=MEMORY_MASK_SCALE,
            sigmoid_bias_for_mem_enc=MEMORY_MASK_BIAS,
            enable_occlusion_spatial_embedding=False,
            enable_temporal_pos_encoding_for_object_pointers=False,
            max_object_pointers_in_encoder=self.max_object_pointers,
            memory_attention_hidden_size=self.hidden_size,
            memory_attention_num_layers=self.memory_attention_layers,
            memory_attention_feed_forward_hidden_size=self.memory_attention_ffn_dim,
            memory_attention_rope_feat_sizes=[self.feature_size, self.feature_size],
            memory_encoder_hidden_size=self.hidden_size,
            memory_encoder_output_channels=self.memory_dim,
            mask_downsampler_embed_dim=self.hidden_size,
            memory_fuser_embed_dim=self.hidden_size,
            memory_fuser_intermediate_dim=4 * self.hidden_size,
        )


class ImageFeatures(NamedTuple):
    """`MaskHead.encode_image` output (C = hidden_size, S = image_size); dtype of the head."""

    high_res_s4: Tensor  # [B, C/8, S/4, S/4] FPN level 0 after the decoder's conv_s0
    high_res_s8: Tensor  # [B, C/4, S/8, S/8] FPN level 1 after the decoder's conv_s1
    image: Tensor  # [B, C, S/16, S/16] FPN level 2, the image embedding (no memory added)
    image_pos: Tensor  # [B, C, S/16, S/16] its sine position encoding


class DecoderOutput(NamedTuple):
    """`MaskHead.decode` output: the one mask chosen as the release chooses it."""

    mask_logits: Tensor  # [B, 1, S/4, S/4] logits, > 0 = object; NO_OBJECT_SCORE where the object is absent
    iou: Tensor  # [B, 1] predicted IoU of that mask, in [0, 1]
    object_score: Tensor  # [B, 1] logit, > 0 = object present
    object_pointer: Tensor  # [B, C] object pointer (no_object_pointer where absent)


class MemoryFeatures(NamedTuple):
    """`MaskHead.encode_memory` output (Cm = memory_dim)."""

    memory: Tensor  # [B, Cm, S/16, S/16]
    memory_pos: Tensor  # [B, Cm, S/16, S/16] sine position encoding (no time encoding)


class MaskHead(nn.Module):
    """SAM2 v1.0 image encoder, prompt encoder, mask decoder, memory encoder and memory attention.

    The model keeps no tracking state; the propagation loop is `mask_tracker.track(head, ...)` (it imports this
    module, never the other way round). Parameter names are those of transformers' `Sam2VideoModel` (minus its
    duplicate `shared_image_embedding`); `release_names.sam2_to_release` maps them to the released checkpoint. `no_memory_positional_encoding` and `mask_downsample` are unused by
    box-prompted tracking but stored in the release, so they are kept.
    """

    def __init__(self, config: MaskHeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or MaskHeadConfig()
        self.sam2_config = self.config.to_transformers()
        # Build transformers' video model once and keep its parts, so that wiring and initialisation are its own.
        sam2 = Sam2VideoModel(self.sam2_config)
        if self.config.memory_dim != _TRANSFORMERS_MEMORY_DIM:
            for layer in sam2.memory_attention.layers:     # SAM2's kv_in_dim = memory width
                layer.cross_attn_image = Sam2VideoRoPEAttention(
                    self.sam2_config, kv_in_dim=self.config.memory_dim, rope_k_repeat=True)
                layer.cross_attn_image.apply(sam2._init_weights)
        self.vision_encoder = sam2.vision_encoder
        use_separable_pos_embed(self.vision_encoder.backbone, self.config.image_size // 4)
        self.prompt_encoder = sam2.prompt_encoder
        self.mask_decoder = sam2.mask_decoder
        self.memory_attention: Sam2VideoMemoryAttention = sam2.memory_attention
        self.memory_encoder = sam2.memory_encoder
        self.no_memory_embedding = sam2.no_memory_embedding  # [1, 1, C]
        self.no_memory_positional_encoding = sam2.no_memory_positional_encoding  # [1, 1, C]
        self.memory_temporal_positional_encoding = sam2.memory_temporal_positional_encoding  # [K, 1, 1, Cm]
        self.no_object_pointer = sam2.no_object_pointer  # [1, C]
        self.mask_downsample = sam2.mask_downsample
        self.object_pointer_proj = sam2.object_pointer_proj
        assert len(self.memory_encoder.mask_downsampler.layers) == MASK_DOWNSAMPLER_LAYERS

    # ----------------------------------------------------------------------------------------- image
    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """Hiera + FPN features of normalised frames.

        pixels: [B, 3, S, S] float, resized to S = image_size and ImageNet-normalised.
        Returns `ImageFeatures` (see there), in the head's dtype.
        """
        s = self.config.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise InputError(f"pixels must be [B, 3, {s}, {s}], got {list(pixels.shape)}")
        out = self.vision_encoder(pixels)
        levels, pos = out.fpn_hidden_states, out.fpn_position_encoding  # high -> low resolution
        return ImageFeatures(
            high_res_s4=self.mask_decoder.conv_s0(levels[0]),
            high_res_s8=self.mask_decoder.conv_s1(levels[1]),
            image=levels[2],
            image_pos=pos[2],
        )

    def add_no_memory(self, image: Tensor) -> Tensor:
        """Condition a prompted (first) frame without memory: image [B, C, h, w] + no_memory_embedding."""
        return image + self.no_memory_embedding.reshape(1, -1, 1, 1)

    # ---------------------------------------------------------------------------------------- prompts
    def prompt_embedding(self, boxes: Tensor) -> Tensor:
        """SAM2's sparse prompt for a box, as the release's `get_prompt_embeding` computes it.

        boxes: [B, 4] float, x1, y1, x2, y2 normalised to [0, 1] of the frame.
        Returns [B, 3, C]: the two corners as points labelled 2 and 3 (scaled to image_size pixels), plus
        one padding point. This is the distillation target of the track adapter.
        """
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise InputError(f"boxes must be [B, 4] normalised x1, y1, x2, y2, got {list(boxes.shape)}")
        batch = boxes.shape[0]
        points = boxes.reshape(batch, 1, 2, 2) * self.config.image_size  # (B, point batch 1, 2 points, xy)
        labels = torch.tensor([2, 3], dtype=torch.int64, device=boxes.device).expand(batch, 1, 2)
        sparse, _ = self.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        return sparse[:, 0]  # (B, 3, C)

    def empty_prompt(self, batch: int) -> Tensor:
        """Sparse prompt of a frame without prompts (tracked frames): [batch, 2, C], two not-a-point tokens."""
        device = self.no_object_pointer.device
        points = torch.zeros(batch, 1, 1, 2, device=device)
        labels = -torch.ones(batch, 1, 1, dtype=torch.int64, device=device)
        sparse, _ = self.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        return sparse[:, 0]  # (B, 2, C)

    def image_positional_encoding(self) -> Tensor:
        """[1, C, S/16, S/16] random-Fourier encoding of the image grid (the decoder's `image_pe`)."""
        g = self.config.feature_size
        embedding = self.prompt_encoder.shared_embedding
        centres = (torch.arange(g, dtype=torch.float32, device=embedding.positional_embedding.device) + 0.5) / g
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        pe = embedding(torch.stack([x, y], dim=-1))  # (g, g, C)
        return pe.permute(2, 0, 1).unsqueeze(0)

    # ---------------------------------------------------------------------------------------- decoder
    def decode(
        self, image: Tensor, high_res_s4: Tensor, high_res_s8: Tensor, sparse_prompt: Tensor, multimask: bool
    ) -> DecoderOutput:
        """SAM2 mask decoder with the release's mask and pointer choice.

        image: [B, C, S/16, S/16] conditioned image embedding (`add_no_memory` or `attend_memory` output).
        high_res_s4, high_res_s8: from `encode_image`.
        sparse_prompt: [B, N, C] (3 tokens for a box prompt, `empty_prompt` on tracked frames).
        multimask: False on the prompted frame: token 0's mask, replaced by the best-IoU multimask when its
          stability score is under the threshold, while the pointer always comes from token 0.
          True on tracked frames: mask, IoU and pointer of the best-IoU multimask token.
        Dense prompt is `no_mask_embed`. Masks of absent objects are set to NO_OBJECT_SCORE.
        """
        batch, channels, h, w = image.shape
        if sparse_prompt.dim() != 3 or sparse_prompt.shape[0] != batch or sparse_prompt.shape[2] != channels:
            raise InputError(f"sparse_prompt must be [{batch}, N, {channels}], got {list(sparse_prompt.shape)}")
        image_pe = self.image_positional_encoding().to(image.dtype).expand(batch, -1, -1, -1)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)
        masks, iou, tokens, object_score = self.mask_decoder(
            image_embeddings=image,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse_prompt.unsqueeze(1),  # (B, point batch 1, N, C)
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=[high_res_s4, high_res_s8],
        )
        masks, iou, tokens, object_score = masks[:, 0], iou[:, 0], tokens[:, 0], object_score[:, 0]
        # masks (B, M, 4h, 4w), iou (B, M), tokens (B, M, C), object_score (B, 1); M = 3 or 1
        present = object_score > 0  # (B, 1)
        masks = torch.where(present[:, :, None, None], masks, NO_OBJECT_SCORE)
        if multimask:
            best = iou.argmax(dim=-1, keepdim=True)  # (B, 1)
            masks = masks.gather(1, best[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))
            iou = iou.gather(1, best)
            tokens = tokens.gather(1, best[:, :, None].expand(-1, -1, tokens.shape[-1]))
        pointer = self.object_pointer_proj(tokens[:, 0])  # (B, C)
        present_f = present.to(pointer.dtype)
        pointer = present_f * pointer + (1 - present_f) * self.no_object_pointer
        return DecoderOutput(masks, iou, object_score, pointer)

    # ----------------------------------------------------------------------------------------- memory
    def encode_memory(self, image: Tensor, mask_logits: Tensor, is_conditioning_frame: bool) -> MemoryFeatures:
        """Encode a frame and its predicted mask into a memory (transformers' `_encode_new_memory`, fp32 mask path).

        image: [B, C, S/16, S/16] unconditioned image embedding (`ImageFeatures.image`).
        mask_logits: [B, 1, S/4, S/4] low-res logits from `decode`.
        is_conditioning_frame: True for the prompted frame, whose mask is binarised (logits > 0), as the
          release does; otherwise sigmoid(logits). Either way the mask enters as mask * 20 - 10, after a
          bilinear upsampling to S x S.
        Not rounded to bf16 (the release and transformers do); returned in the head's dtype.
        """
        s = self.config.image_size
        high_res = F.interpolate(mask_logits.float(), size=(s, s), mode="bilinear", align_corners=False)
        mask = (high_res > 0).float() if is_conditioning_frame else torch.sigmoid(high_res)
        mask = mask * MEMORY_MASK_SCALE + MEMORY_MASK_BIAS
        memory, memory_pos = self.memory_encoder(image, mask.to(image.dtype))
        return MemoryFeatures(memory, memory_pos.to(memory.dtype))

    def rotary_tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """fp32 cos/sin tables [1, h*w, head_dim] of the memory attention's axial rotary encoding.

        Always fp32, independent of the head's dtype (the release computes positions from a bf16 arange,
        which gets most x positions wrong on a 64 x 64 grid).
        """
        inv_freq, _ = Sam2VideoVisionRotaryEmbedding.compute_axial_rope_parameters(self.sam2_config)
        positions = Sam2VideoMemoryAttention.precompute_positions(self.sam2_config).to(device)  # (h*w, 2): x, y
        freqs = positions[..., None].float() * inv_freq.to(device=device, dtype=torch.float32)
        rotary = self.memory_attention.rotary_emb
        return rotary.recomposition_frequencies(freqs.cos()), rotary.recomposition_frequencies(freqs.sin())

    def attend_memory(
        self,
        image: Tensor,
        image_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_time: Tensor,
        memory_valid: Tensor,
        pointers: Tensor,
        pointer_valid: Tensor,
    ) -> Tensor:
        """Condition a tracked frame on a fixed number of memory slots and object pointers.

        image, image_pos: [B, C, h, w] from `encode_image` (h = w = S/16).
        memory, memory_pos: [B, K, Cm, h, w] memory slots (`encode_memory` outputs), any K >= 1.
        memory_time: [B, K] int64 row of the time-encoding table per slot: num_maskmem - t_pos - 1, i.e.
          num_maskmem - 1 for the conditioning frame and (frames ago - 1) for recent frames.
        memory_valid: [B, K] bool; invalid slots (any content, even NaN) do not change the result.
        pointers: [B, P, C] object pointers, any P >= 1; pointer_valid: [B, P] bool, same rule.
        Each pointer becomes C / Cm memory tokens with no position encoding and no rotary encoding.
        At least one valid slot or pointer per row is expected. Returns [B, C, h, w].
        """
        batch, channels, h, w = image.shape
        slots, mem_dim = memory.shape[1], memory.shape[2]
        if tuple(memory.shape) != (batch, slots, mem_dim, h, w) or memory_pos.shape != memory.shape:
            raise InputError(
                f"memory and memory_pos must be [{batch}, K, Cm, {h}, {w}], got {list(memory.shape)} "
                f"and {list(memory_pos.shape)}"
            )
        if (h, w) != (self.config.feature_size, self.config.feature_size):
            raise InputError(f"image grid must be {self.config.feature_size}^2, got {h}x{w}")
        split = channels // mem_dim
        num_pointer_tokens = pointers.shape[1] * split

        # Keys: memory tokens (K*h*w) then pointer tokens (P*split), each row batch-first.
        mem = memory.permute(0, 1, 3, 4, 2).reshape(batch, slots * h * w, mem_dim)
        tpos = self.memory_temporal_positional_encoding[:, 0, 0]  # (num_maskmem, Cm)
        time = memory_time.clamp(0, tpos.shape[0] - 1)
        mem_pos = memory_pos.permute(0, 1, 3, 4, 2) + tpos[time][:, :, None, None, :]  # (B, K, h, w, Cm)
        mem_pos = mem_pos.reshape(batch, slots * h * w, mem_dim)
        ptr = pointers.reshape(batch, num_pointer_tokens, mem_dim)  # pointer-major, then its split tokens
        keys = torch.cat([mem, ptr.to(mem.dtype)], dim=1)
        key_pos = torch.cat([mem_pos, torch.zeros_like(ptr, dtype=mem_pos.dtype)], dim=1)
        valid = torch.cat(
            [memory_valid.repeat_interleave(h * w, dim=1), pointer_valid.repeat_interleave(split, dim=1)], dim=1
        )  # (B, N)
        keys = torch.where(valid[..., None], keys, 0.0)
        key_pos = torch.where(valid[..., None], key_pos, 0.0)
        bias = torch.zeros(valid.shape, dtype=image.dtype, device=image.device)
        bias = bias.masked_fill(~valid, torch.finfo(image.dtype).min)[:, None, None, :]  # (B, 1, 1, N)

        cos, sin = self.rotary_tables(image.device)
        output = image.flatten(2).transpose(1, 2) + 0.1 * image_pos.flatten(2).transpose(1, 2)  # (B, h*w, C)
        for layer in self.memory_attention.layers:
            query = layer.layer_norm1(output)
            query = _rope_attention(layer.self_attn, query, query, query, cos, sin, None, 0)
            output = output + layer.dropout1(query)
            query = layer.layer_norm2(output)
            query = _rope_attention(
                layer.cross_attn_image, query, keys + key_pos, keys, cos, sin, bias, num_pointer_tokens
            )
            output = output + layer.dropout2(query)
            query = layer.layer_norm3(output)
            output = output + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(query)))))
        output = self.memory_attention.layer_norm(output)
        return output.transpose(1, 2).reshape(batch, channels, h, w)


def _rope_attention(
    attn: Sam2VideoRoPEAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    cos: Tensor,
    sin: Tensor,
    bias: Tensor | None,
    num_k_exclude_rope: int,
) -> Tensor:
    """transformers' `Sam2VideoRoPEAttention.forward` plus an additive key mask (bias [B, 1, 1, N]).

    query: [B, Lq, C]; key, value: [B, N, kv_in_dim]; the last `num_k_exclude_rope` keys skip the rotary.
    """
    batch = query.shape[0]
    heads, head_dim = attn.num_attention_heads, attn.head_dim
    q = attn.q_proj(query).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, nh, Lq, hd)
    k = attn.k_proj(key).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, nh, N, hd)
    v = attn.v_proj(value).view(batch, -1, heads, head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb_2d(
        q, k, cos, sin, num_k_exclude_rope=num_k_exclude_rope, repeat_freqs_k=attn.rope_k_repeat
    )
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=attn.dropout_p if attn.training else 0.0, scale=attn.scaling
    )
    out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)  # (B, Lq, internal_dim)
    return attn.o_proj(out)


def bicubic_matrix(n_in: int, n_out: int) -> Tensor:
    """[n_out, n_in]: `F.interpolate(mode="bicubic", align_corners=False)` along one axis, as a matrix.

    Bicubic upsampling is linear and separable, so interpolating the one-hot columns of an identity gives its
    weights exactly (the other axis is resized 1 -> 1, which the cubic kernel leaves unchanged).
    """
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1)
    columns = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)   # [n_in, 1, n_out, 1]
    return columns.reshape(n_in, n_out).T.to(torch.float32).contiguous()


def use_separable_pos_embed(backbone: nn.Module, grid: int) -> None:
    """Make Hiera's background position embedding two matrix products instead of a bicubic Resize.

    transformers' `Sam2HieraDetModel._get_pos_embed` resizes the 7x7 table to the stage-1 grid on every call;
    exported, that is an ONNX Resize in mode "cubic", outside the modes the TensorRT ONNX parser documents
    (nearest, linear; `tpo-export --check-tensorrt` flags it), and work per frame on a table that never
    changes. The same numbers come from `rows @ table @ cols^T` with the
    interpolation weights as constant buffers (non-persistent: the checkpoint layout is unchanged). Another grid
    than the configured one (never fed by the graphs) takes transformers' own path.
    """
    table = backbone.pos_embed                                    # [1, C, th, tw]
    th, tw = table.shape[-2:]
    backbone.register_buffer("pos_embed_rows", bicubic_matrix(th, grid), persistent=False)   # [grid, th]
    backbone.register_buffer("pos_embed_cols", bicubic_matrix(tw, grid), persistent=False)   # [grid, tw]
    backbone._get_pos_embed = types.MethodType(_separable_pos_embed, backbone)   # deep copies rebind it


def _separable_pos_embed(backbone: nn.Module, hw: tuple[int, int]) -> Tensor:
    """`Sam2HieraDetModel._get_pos_embed` for the configured grid, as matrix products ([1, grid, grid, C])."""
    grid = backbone.pos_embed_rows.shape[0]
    if tuple(int(v) for v in hw) != (grid, grid):
        return type(backbone)._get_pos_embed(backbone, hw)
    dtype = backbone.pos_embed.dtype
    pos = backbone.pos_embed_rows.to(dtype) @ backbone.pos_embed @ backbone.pos_embed_cols.to(dtype).T
    window = backbone.pos_embed_window
    pos = pos + window.tile([1, 1, grid // window.shape[-2], grid // window.shape[-1]])
    return pos.permute(0, 2, 3, 1)
