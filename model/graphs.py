"""One `nn.Module` per exported graph, each a thin wrapper over `TPOModel`'s pieces, paired with its contract.

The graphs, their tensor names, dtypes and shape templates are declared once in `tpo.contract.graphs`; each
wrapper takes and returns plain tensors in the order its `GraphSpec` declares, and `graph_sizes` fills the
templates' configuration sizes. The host-side logic (which frame is a conditioning frame, which memory slot is
valid, the splice of visual tokens into the prompt, greedy decoding) stays outside, in the runtime.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tpo.contract import graphs as G
from tpo.contract.graphs import GraphSpec, TensorSpec

from .llm import merged_llm
from .tpo_model import TPOModel


@dataclass
class GraphDef:
    """A graph's contract (`spec`), its module, and its tensors resolved for this model's configuration."""

    spec: GraphSpec
    module: nn.Module
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def varargs_from(self) -> int | None:
        """Inputs from this index on are the module's *args (the LLM's past KV), else None."""
        return len(self.spec.inputs) if self.spec.kv is not None else None


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


class MaskBoxPromptGraph(nn.Module):
    """A box -> SAM2's sparse prompt through SAM2's own prompt encoder (`MaskHead.prompt_embedding`): what the
    track adapter was distilled to produce, so a region answer can seed the tracker."""

    def __init__(self, model: TPOModel):
        super().__init__()
        self.sam = model.sam

    def forward(self, prompt_box: Tensor) -> Tensor:
        return self.sam.prompt_embedding(prompt_box)


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
def graph_sizes(cfg) -> dict[str, int]:
    """The configuration's value of every size name in the contract's shape templates."""
    v, mh, th = cfg.vision, cfg.mask_head, cfg.temporal_head
    g, ch = mh.feature_size, mh.hidden_size
    return {
        "num_frames": v.num_frames, "vision_size": v.image_size, "video_tokens": v.num_frames * v.grid * v.grid,
        "image_tokens": v.grid * v.grid, "vision_width": v.width, "num_queries": cfg.connector.num_queries,
        "hidden_size": cfg.llm.hidden_size, "vocab": cfg.llm.vocab_size, "kv_heads": cfg.llm.num_kv_heads,
        "head_dim": cfg.llm.head_dim, "prompt_tokens": cfg.adapters.track_prompt_tokens, "mask_width": ch,
        "mask_size": mh.image_size, "grid": g, "low_res": 4 * g, "mid_res": 2 * g, "s4_channels": ch // 8,
        "s8_channels": ch // 4, "memory_width": mh.memory_dim, "memory_slots": mh.num_maskmem,
        "pointer_slots": mh.max_object_pointers, "text_dim": th.text_dim, "video_dim": th.video_dim,
        "temporal_queries": th.num_queries,
    }


def graph_defs(model: TPOModel, only: tuple[str, ...] | None = None) -> list[GraphDef]:
    """Every graph of `model` (or those named in `only`), in the contract's order, with its tensors resolved.
    The model must be fp32 and in eval mode."""
    cfg = model.cfg
    modules = {
        G.VISION_ENCODER: lambda: VisionEncoderGraph(model, cfg.vision.num_frames),
        G.VISION_ENCODER_IMAGE: lambda: VisionEncoderGraph(model, 1),
        G.CONNECTOR: lambda: ConnectorGraph(model),
        G.LLM: lambda: LLMGraph(model),
        G.TASK_ROUTER: lambda: TaskRouterGraph(model),
        G.BOX_ENCODER: lambda: BoxEncoderGraph(model),
        G.TEMPORAL_HEAD: lambda: TemporalHeadGraph(model),
        G.MASK_IMAGE_ENCODER: lambda: MaskImageEncoderGraph(model),
        G.MASK_DECODER_PROMPTED: lambda: MaskDecoderPromptedGraph(model),
        G.MASK_DECODER_TRACKED: lambda: MaskDecoderTrackedGraph(model),
        G.MEMORY_ENCODER: lambda: MemoryEncoderGraph(model),
        G.MEMORY_ATTENTION: lambda: MemoryAttentionGraph(model),
        G.MASK_BOX_PROMPT: lambda: MaskBoxPromptGraph(model),
    }
    sizes = graph_sizes(cfg)
    defs = []
    for spec in G.GRAPHS:
        if only is not None and spec.name not in only:
            continue
        inputs, outputs = spec.tensors(sizes, cfg.llm.num_layers)
        defs.append(GraphDef(spec, modules[spec]().eval(), inputs, outputs))
    return defs


def export_copy(model: TPOModel) -> TPOModel:
    """An fp32 eval copy to trace (export must not touch the caller's model)."""
    return copy.deepcopy(model).float().eval()
