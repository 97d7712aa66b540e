"""One `nn.Module` per exported graph, each a thin wrapper over `TPOModel`'s pieces, plus its tensor names.

Every wrapper takes and returns plain tensors in the order of its `GraphDef`'s inputs and outputs, and the
host-side logic (which frame is a conditioning frame, which memory slot is valid, the splice of visual
tokens into the prompt, greedy decoding) stays outside, in the runtime. Names come from `tpo.manifest`.

Shapes at the boundaries (b = batch, o = objects, g = mask feature grid S/16, C = mask head width,
Cm = memory width, K = num_maskmem, P = max_object_pointers, H = LLM width, Dv = vision width):

    vision_encoder        pixels [b, 3, T, S, S] -> vision_tokens [b, T*gv*gv, Dv]   (T = num_frames)
    vision_encoder_image  pixels [b, 3, 1, S, S] -> vision_tokens [b, gv*gv, Dv]     (images, temporal clips)
    connector             vision_tokens [b, n, Dv] -> visual_embeds [b, Q, H]
    llm                   inputs_embeds [b, s, H], attention_mask [b, past+s], position_ids [b, s], past KV
                          -> logits [b, s, V], hidden_states [b, s, H] (final norm), present KV
    task_router           hidden [b, H] -> region_box [b, 4], track_prompt [b, 3, C], temporal_prompt [b, 1, H]
    box_encoder           boxes [n, 4] -> box_embeds [n, H]
    temporal_head         text_feats [b, t, Dt], text_mask [b, t], video_feats [b, c, Dvt], video_mask [b, c],
                          prompt_token [b, 1, Dt] -> pred_logits [b, Q, 2], pred_spans [b, Q, 2], saliency [b, c]
    mask_image_encoder    pixels [1, 3, S, S] -> high_res_s4, high_res_s8, image [1, C, g, g], image_pos
    mask_decoder_prompted image [1, C, g, g], high_res_s4, high_res_s8, sparse_prompt [o, 3, C]
                          -> mask_logits [o, 1, 4g, 4g], iou [o, 1], object_score [o, 1], object_pointer [o, C]
    mask_decoder_tracked  conditioned [o, C, g, g], high_res_s4, high_res_s8 -> (same four)
    memory_encoder        image [1, C, g, g], mask_logits [o, 1, 4g, 4g], is_conditioning [] bool
                          -> memory [o, Cm, g, g], memory_pos [o, Cm, g, g]
    memory_attention      image, image_pos [1, C, g, g], memory, memory_pos [o, K, Cm, g, g],
                          memory_time [o, K] int64, memory_valid [o, K] bool, pointers [o, P, C],
                          pointer_valid [o, P] bool -> conditioned [o, C, g, g]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tpo import manifest as names

from .llm import merged_llm
from .tpo_model import TPOModel


@dataclass
class TensorDef:
    name: str
    dtype: str                      # as the graph declares it ("float32" for float tensors at fp16: io stays fp32)
    shape: tuple[int | str, ...]    # ints fixed, strings named symbolic dimensions


@dataclass
class GraphDef:
    name: str
    module: nn.Module
    inputs: list[TensorDef]
    outputs: list[TensorDef]
    fp32_islands: list[str] = field(default_factory=list)   # filled by the fp16 conversion
    varargs_from: int | None = None     # inputs from this index on are the module's *args (the LLM's past KV)

    def dynamic_dims(self) -> set[str]:
        return {d for t in self.inputs + self.outputs for d in t.shape if isinstance(d, str)}


def f32(name: str, *shape: int | str) -> TensorDef:
    return TensorDef(name, "float32", tuple(shape))


# ------------------------------------------------------------------------------------------ wrappers
class VisionEncoderGraph(nn.Module):
    """pixels -> normalised vision tokens; the position table for this graph's frame count is a constant."""

    def __init__(self, model: TPOModel, num_frames: int):
        super().__init__()
        self.encoder = model.vision_encoder
        self.norm = model.vision_layernorm
        self.register_buffer("position_table", model.vision_encoder.position_table(
            num_frames, torch.float32, torch.device("cpu")), persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.encoder.encoder.patch_embed(pixels)                 # (b, T*g*g, Dv)
        x = x + self.position_table.to(x.dtype)
        for block in self.encoder.encoder.blocks:
            x = block(x)
        return self.norm(x)


class ConnectorGraph(nn.Module):
    def __init__(self, model: TPOModel):
        super().__init__()
        self.connector = model.connector

    def forward(self, vision_tokens: Tensor) -> Tensor:
        return self.connector(vision_tokens)                          # (b, Q, H)


class LLMGraph(nn.Module):
    """The LoRA-merged decoder over inputs_embeds with explicit per-layer KV tensors (optimum's names)."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.lm = merged_llm(model.lm)
        self.num_layers = model.cfg.llm.num_layers

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor, *past: Tensor):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                      cache=cache, use_cache=True, output_hidden_states=True)
        present = []
        for i in range(self.num_layers):
            layer = out.cache.layers[i]
            present += [layer.keys, layer.values]
        return (out.logits, out.hidden_states[-1], *present)


class TaskRouterGraph(nn.Module):
    """The final-norm hidden state at a task token -> every head's prompt."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.loc_decoder = model.loc_decoder
        self.track_embed = model.track_embed
        self.tokens, self.width = model.cfg.adapters.track_prompt_tokens, model.cfg.mask_head.hidden_size

    def forward(self, hidden: Tensor):
        b = hidden.shape[0]
        region_box = self.loc_decoder(hidden)                                      # (b, 4)
        track_prompt = self.track_embed(hidden).reshape(b, self.tokens, self.width)  # (b, 3, C)
        return region_box, track_prompt, hidden[:, None, :]                        # temporal: (b, 1, H)


class BoxEncoderGraph(nn.Module):
    def __init__(self, model: TPOModel):
        super().__init__()
        self.loc_encoder = model.loc_encoder

    def forward(self, boxes: Tensor) -> Tensor:
        return self.loc_encoder(boxes)


class TemporalHeadGraph(nn.Module):
    def __init__(self, model: TPOModel):
        super().__init__()
        self.head = model.cg_model

    def forward(self, text_feats, text_mask, video_feats, video_mask, prompt_token):
        out = self.head(text_feats=text_feats, text_mask=text_mask, video_feats=video_feats,
                        video_mask=video_mask, prompt_token=prompt_token)
        return out.logits, out.spans, out.saliency


class MaskImageEncoderGraph(nn.Module):
    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam

    def forward(self, pixels: Tensor):
        f = self.sam.encode_image(pixels)
        return f.high_res_s4, f.high_res_s8, f.image, f.image_pos


class MaskDecoderPromptedGraph(nn.Module):
    """Frame 0: the image without memory (+ no_memory_embedding), prompted by the track adapter's output."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam

    def forward(self, image: Tensor, high_res_s4: Tensor, high_res_s8: Tensor, sparse_prompt: Tensor):
        o = sparse_prompt.shape[0]
        image = self.sam.add_no_memory(image).expand(o, -1, -1, -1)
        out = self.sam.decode(image, high_res_s4.expand(o, -1, -1, -1), high_res_s8.expand(o, -1, -1, -1),
                              sparse_prompt, multimask=False)
        return out.mask_logits, out.iou, out.object_score, out.object_pointer


class MaskDecoderTrackedGraph(nn.Module):
    """Tracked frames: the memory-conditioned image, the empty prompt (a constant), best of the multimasks."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam
        with torch.no_grad():
            self.register_buffer("empty_prompt", model.sam.empty_prompt(1).float(), persistent=False)

    def forward(self, conditioned: Tensor, high_res_s4: Tensor, high_res_s8: Tensor):
        o = conditioned.shape[0]
        out = self.sam.decode(conditioned, high_res_s4.expand(o, -1, -1, -1), high_res_s8.expand(o, -1, -1, -1),
                              self.empty_prompt.to(conditioned.dtype).expand(o, -1, -1), multimask=True)
        return out.mask_logits, out.iou, out.object_score, out.object_pointer


class MemoryEncoderGraph(nn.Module):
    """A frame and its mask -> a memory; the conditioning frame's mask is binarised, others are sigmoids."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam

    def forward(self, image: Tensor, mask_logits: Tensor, is_conditioning: Tensor):
        from .mask_head import MEMORY_MASK_BIAS, MEMORY_MASK_SCALE

        s = self.sam.config.image_size
        o = mask_logits.shape[0]
        high_res = nn.functional.interpolate(mask_logits.float(), size=(s, s), mode="bilinear", align_corners=False)
        mask = torch.where(is_conditioning, (high_res > 0).float(), torch.sigmoid(high_res))
        mask = mask * MEMORY_MASK_SCALE + MEMORY_MASK_BIAS
        memory, memory_pos = self.sam.memory_encoder(image.expand(o, -1, -1, -1), mask.to(image.dtype))
        return memory, memory_pos.to(memory.dtype)


class MemoryAttentionGraph(nn.Module):
    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam

    def forward(self, image, image_pos, memory, memory_pos, memory_time, memory_valid, pointers, pointer_valid):
        o = memory.shape[0]
        return self.sam.attend_memory(image.expand(o, -1, -1, -1), image_pos.expand(o, -1, -1, -1), memory,
                                      memory_pos, memory_time, memory_valid, pointers, pointer_valid)


# ------------------------------------------------------------------------------------------ the graph list
def graph_defs(model: TPOModel) -> list[GraphDef]:
    """Every graph of `model`, with names, dtypes and named dimensions. The model must be fp32 and in eval mode."""
    cfg = model.cfg
    v, c = cfg.vision, cfg.connector
    h, vocab = cfg.llm.hidden_size, cfg.llm.vocab_size
    kv, hd, layers = cfg.llm.num_kv_heads, cfg.llm.head_dim, cfg.llm.num_layers
    mh = cfg.mask_head
    g, s, ch, cm = mh.feature_size, mh.image_size, mh.hidden_size, mh.memory_dim
    k, p = mh.num_maskmem, mh.max_object_pointers
    th = cfg.temporal_head
    gv = v.grid
    past = [TensorDef(n, "float32", ("batch", kv, "past_sequence", hd)) for n in names.past_names(layers)]
    present = [TensorDef(n, "float32", ("batch", kv, "total_sequence", hd)) for n in names.present_names(layers)]
    # the decoder's high-resolution features: levels 0 and 1 of the FPN after conv_s0 / conv_s1
    s4 = f32("high_res_s4", 1, ch // 8, 4 * g, 4 * g)
    s8 = f32("high_res_s8", 1, ch // 4, 2 * g, 2 * g)
    decoder_out = [f32("mask_logits", "objects", 1, 4 * g, 4 * g), f32("iou", "objects", 1),
                   f32("object_score", "objects", 1), f32("object_pointer", "objects", ch)]
    defs = [
        GraphDef(names.VISION_ENCODER, VisionEncoderGraph(model, v.num_frames),
                 [f32("pixels", "batch", 3, v.num_frames, v.image_size, v.image_size)],
                 [f32("vision_tokens", "batch", v.num_frames * gv * gv, v.width)]),
        GraphDef(names.VISION_ENCODER_IMAGE, VisionEncoderGraph(model, 1),
                 [f32("pixels", "batch", 3, 1, v.image_size, v.image_size)],
                 [f32("vision_tokens", "batch", gv * gv, v.width)]),
        GraphDef(names.CONNECTOR, ConnectorGraph(model),
                 [f32("vision_tokens", "batch", "num_vision_tokens", v.width)],
                 [f32("visual_embeds", "batch", c.num_queries, h)]),
        GraphDef(names.LLM, LLMGraph(model),
                 [f32("inputs_embeds", "batch", "sequence", h),
                  TensorDef("attention_mask", "int64", ("batch", "total_sequence")),
                  TensorDef("position_ids", "int64", ("batch", "sequence")), *past],
                 [f32("logits", "batch", "sequence", vocab), f32("hidden_states", "batch", "sequence", h), *present],
                 varargs_from=3),
        GraphDef(names.TASK_ROUTER, TaskRouterGraph(model),
                 [f32("hidden", "batch", h)],
                 [f32("region_box", "batch", 4), f32("track_prompt", "batch", cfg.adapters.track_prompt_tokens, ch),
                  f32("temporal_prompt", "batch", 1, h)]),
        GraphDef(names.BOX_ENCODER, BoxEncoderGraph(model),
                 [f32("boxes", "boxes", 4)], [f32("box_embeds", "boxes", h)]),
        GraphDef(names.TEMPORAL_HEAD, TemporalHeadGraph(model),
                 [f32("text_feats", "batch", "text_tokens", th.text_dim),
                  TensorDef("text_mask", "bool", ("batch", "text_tokens")),
                  f32("video_feats", "batch", "clips", th.video_dim),
                  TensorDef("video_mask", "bool", ("batch", "clips")),
                  f32("prompt_token", "batch", 1, th.text_dim)],
                 [f32("pred_logits", "batch", th.num_queries, 2), f32("pred_spans", "batch", th.num_queries, 2),
                  f32("saliency", "batch", "clips")]),
        GraphDef(names.MASK_IMAGE_ENCODER, MaskImageEncoderGraph(model),
                 [f32("pixels", 1, 3, s, s)],
                 [s4, s8, f32("image", 1, ch, g, g), f32("image_pos", 1, ch, g, g)]),
        GraphDef(names.MASK_DECODER_PROMPTED, MaskDecoderPromptedGraph(model),
                 [f32("image", 1, ch, g, g), s4, s8,
                  f32("sparse_prompt", "objects", cfg.adapters.track_prompt_tokens, ch)],
                 decoder_out),
        GraphDef(names.MASK_DECODER_TRACKED, MaskDecoderTrackedGraph(model),
                 [f32("conditioned", "objects", ch, g, g), s4, s8], decoder_out),
        GraphDef(names.MEMORY_ENCODER, MemoryEncoderGraph(model),
                 [f32("image", 1, ch, g, g), f32("mask_logits", "objects", 1, 4 * g, 4 * g),
                  TensorDef("is_conditioning", "bool", ())],
                 [f32("memory", "objects", cm, g, g), f32("memory_pos", "objects", cm, g, g)]),
        GraphDef(names.MEMORY_ATTENTION, MemoryAttentionGraph(model),
                 [f32("image", 1, ch, g, g), f32("image_pos", 1, ch, g, g),
                  f32("memory", "objects", k, cm, g, g), f32("memory_pos", "objects", k, cm, g, g),
                  TensorDef("memory_time", "int64", ("objects", k)), TensorDef("memory_valid", "bool", ("objects", k)),
                  f32("pointers", "objects", p, ch), TensorDef("pointer_valid", "bool", ("objects", p))],
                 [f32("conditioned", "objects", ch, g, g)]),
    ]
    for d in defs:
        d.module.eval()
    return defs


def export_copy(model: TPOModel) -> TPOModel:
    """An fp32 eval copy to trace (export must not touch the caller's model)."""
    return copy.deepcopy(model).float().eval()
