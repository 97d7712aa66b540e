"""Renaming state dicts between our module names and the released checkpoint's names.

Components whose parameters already carry the release's names need no rules. Components built on
transformers' classes declare ordered rules: the Q-Former's regex rules (connector.py, applied by `rename`,
each rule set checked to be a bijection on the names it sees) and SAM2's template pairs (here:
`sam2_to_release` / `sam2_from_release`, every name must match), so `to_release(from_release(sd)) == sd`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from tpo.errors import CheckpointError

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, str]]


def apply_rules(names: Iterable[str], rules: Rules) -> dict[str, str]:
    """old name -> new name, first matching rule wins; names matching no rule stay as they are."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, str] = {}
    for name in names:
        new = name
        for pattern, repl in compiled:
            if pattern.search(name):
                new = pattern.sub(repl, name)
                break
        out[name] = new
    if len(set(out.values())) != len(out):
        raise AssertionError("renaming rules map two names onto one")
    return out


def rename(sd: Mapping[str, torch.Tensor], rules: Rules) -> StateDict:
    mapping = apply_rules(sd.keys(), rules)
    return {mapping[k]: v for k, v in sd.items()}


def add_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def take_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The entries under `prefix`, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


# ---- SAM2 (the mask head) ------------------------------------------------------------------------------
# transformers' `Sam2VideoModel` names (MaskHead.state_dict()) <-> the release's original-SAM2 names (relative
# to the checkpoint's `sam.` prefix). Each rule is a pair of templates; `{x}` is one dotted segment carried
# over unchanged. Every name must match a rule: an unknown one (e.g. SAM2.1's `obj_ptr_tpos_proj`) is refused.

# Original SAM2's MaskDownSampler: total stride 16, stride 2 -> 4 conv/norm/GELU layers, then a 1x1 conv.
MASK_DOWNSAMPLER_LAYERS = 4


def _mlp3(release: str, head: str) -> Rules:
    """Names of a 3-layer SAM2 MLP: layers.0/1/2 <-> transformers' proj_in / layers.0 / proj_out."""
    return [
        (f"{release}.layers.0.{{p}}", f"{head}.proj_in.{{p}}"),
        (f"{release}.layers.1.{{p}}", f"{head}.layers.0.{{p}}"),
        (f"{release}.layers.2.{{p}}", f"{head}.proj_out.{{p}}"),
    ]


def _attention(release: str, head: str) -> Rules:
    """Names of a SAM2 attention: q/k/v_proj and out_proj <-> transformers' o_proj."""
    pairs = [(f"{release}.{n}.{{p}}", f"{head}.{n}.{{p}}") for n in ("q_proj", "k_proj", "v_proj")]
    return [*pairs, (f"{release}.out_proj.{{p}}", f"{head}.o_proj.{{p}}")]


def _image_encoder_rules() -> Rules:
    """Hiera trunk and FPN neck."""
    trunk, backbone = "image_encoder.trunk", "vision_encoder.backbone"
    block = [("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"),
             ("mlp.layers.0", "mlp.proj_in"), ("mlp.layers.1", "mlp.proj_out"), ("proj", "proj")]
    return [
        (f"{trunk}.patch_embed.proj.{{p}}", f"{backbone}.patch_embed.projection.{{p}}"),
        (f"{trunk}.pos_embed", f"{backbone}.pos_embed"),
        (f"{trunk}.pos_embed_window", f"{backbone}.pos_embed_window"),
        *[(f"{trunk}.blocks.{{b}}.{r}.{{p}}", f"{backbone}.blocks.{{b}}.{h}.{{p}}") for r, h in block],
        ("image_encoder.neck.convs.{i}.conv.{p}", "vision_encoder.neck.convs.{i}.{p}"),
    ]


def _prompt_encoder_rules() -> Rules:
    """The prompt encoder (its point_embeddings.N are stacked separately, see `_POINT_EMBEDDINGS_HEAD`)."""
    downscaling = [(0, "conv1"), (1, "layer_norm1"), (3, "conv2"), (4, "layer_norm2"), (6, "conv3")]
    return [
        ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
         "prompt_encoder.shared_embedding.positional_embedding"),
        ("sam_prompt_encoder.not_a_point_embed.weight", "prompt_encoder.not_a_point_embed.weight"),
        ("sam_prompt_encoder.no_mask_embed.weight", "prompt_encoder.no_mask_embed.weight"),
        *[(f"sam_prompt_encoder.mask_downscaling.{i}.{{p}}", f"prompt_encoder.mask_embed.{h}.{{p}}")
          for i, h in downscaling],
    ]


def _mask_decoder_rules() -> Rules:
    dec, mdec = "sam_mask_decoder", "mask_decoder"
    layer, mlayer = f"{dec}.transformer.layers.{{l}}", f"{mdec}.transformer.layers.{{l}}"
    return [
        *[(f"{dec}.{n}.weight", f"{mdec}.{n}.weight") for n in ("iou_token", "mask_tokens", "obj_score_token")],
        (f"{dec}.conv_s0.{{p}}", f"{mdec}.conv_s0.{{p}}"),
        (f"{dec}.conv_s1.{{p}}", f"{mdec}.conv_s1.{{p}}"),
        (f"{dec}.output_upscaling.0.{{p}}", f"{mdec}.upscale_conv1.{{p}}"),
        (f"{dec}.output_upscaling.1.{{p}}", f"{mdec}.upscale_layer_norm.{{p}}"),
        (f"{dec}.output_upscaling.3.{{p}}", f"{mdec}.upscale_conv2.{{p}}"),
        *_mlp3(f"{dec}.output_hypernetworks_mlps.{{m}}", f"{mdec}.output_hypernetworks_mlps.{{m}}"),
        *_mlp3(f"{dec}.iou_prediction_head", f"{mdec}.iou_prediction_head"),
        *_mlp3(f"{dec}.pred_obj_score_head", f"{mdec}.pred_obj_score_head"),
        (f"{layer}.mlp.layers.0.{{p}}", f"{mlayer}.mlp.proj_in.{{p}}"),
        (f"{layer}.mlp.layers.1.{{p}}", f"{mlayer}.mlp.proj_out.{{p}}"),
        *[(f"{layer}.norm{n}.{{p}}", f"{mlayer}.layer_norm{n}.{{p}}") for n in (1, 2, 3, 4)],
        *[rule for a in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
          for rule in _attention(f"{layer}.{a}", f"{mlayer}.{a}")],
        *_attention(f"{dec}.transformer.final_attn_token_to_image", f"{mdec}.transformer.final_attn_token_to_image"),
        (f"{dec}.transformer.norm_final_attn.{{p}}", f"{mdec}.transformer.layer_norm_final_attn.{{p}}"),
    ]


def _memory_attention_rules() -> Rules:
    layer = "memory_attention.layers.{l}"
    return [
        *[rule for a in ("self_attn", "cross_attn_image") for rule in _attention(f"{layer}.{a}", f"{layer}.{a}")],
        *[(f"{layer}.norm{n}.{{p}}", f"{layer}.layer_norm{n}.{{p}}") for n in (1, 2, 3)],
        *[(f"{layer}.linear{n}.{{p}}", f"{layer}.linear{n}.{{p}}") for n in (1, 2)],
        ("memory_attention.norm.{p}", "memory_attention.layer_norm.{p}"),
    ]


def _memory_encoder_rules() -> Rules:
    """mask_downsampler.encoder = [conv, norm, GELU] x MASK_DOWNSAMPLER_LAYERS + a final 1x1 conv."""
    down, mdown = "memory_encoder.mask_downsampler.encoder", "memory_encoder.mask_downsampler"
    fuser, mfuser = "memory_encoder.fuser.layers.{l}", "memory_encoder.memory_fuser.layers.{l}"
    return [
        *[rule for k in range(MASK_DOWNSAMPLER_LAYERS)
          for rule in ((f"{down}.{3 * k}.{{p}}", f"{mdown}.layers.{k}.conv.{{p}}"),
                       (f"{down}.{3 * k + 1}.{{p}}", f"{mdown}.layers.{k}.layer_norm.{{p}}"))],
        (f"{down}.{3 * MASK_DOWNSAMPLER_LAYERS}.{{p}}", f"{mdown}.final_conv.{{p}}"),
        ("memory_encoder.pix_feat_proj.{p}", "memory_encoder.feature_projection.{p}"),
        (f"{fuser}.dwconv.{{p}}", f"{mfuser}.depthwise_conv.{{p}}"),
        (f"{fuser}.norm.{{p}}", f"{mfuser}.layer_norm.{{p}}"),
        (f"{fuser}.pwconv1.{{p}}", f"{mfuser}.pointwise_conv1.{{p}}"),
        (f"{fuser}.pwconv2.{{p}}", f"{mfuser}.pointwise_conv2.{{p}}"),
        (f"{fuser}.gamma", f"{mfuser}.scale"),
        ("memory_encoder.out_proj.{p}", "memory_encoder.projection.{p}"),
    ]


def _sam2_base_rules() -> Rules:
    """SAM2Base's own top-level parameters."""
    return [
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_mem_embed", "no_memory_embedding"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("mask_downsample.{p}", "mask_downsample.{p}"),
        *_mlp3("obj_ptr_proj", "object_pointer_proj"),
    ]


def sam2_name_rules() -> Rules:
    """(release template, MaskHead template) pairs, in the order they are tried."""
    return [*_image_encoder_rules(), *_prompt_encoder_rules(), *_mask_decoder_rules(), *_memory_attention_rules(),
            *_memory_encoder_rules(), *_sam2_base_rules()]


def _compile_template(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(f"(?P<{p[1:-1]}>[A-Za-z0-9_]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex)


_SAM2_RULES = sam2_name_rules()
_SAM2_RELEASE_TO_HEAD = [(_compile_template(r), h) for r, h in _SAM2_RULES]
_SAM2_HEAD_TO_RELEASE = [(_compile_template(h), r) for r, h in _SAM2_RULES]
# The release stores SAM's 4 point embeddings as 4 nn.Embedding(1, C); transformers stacks them in one [4, C].
_POINT_EMBEDDINGS_RELEASE = re.compile(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight")
_POINT_EMBEDDINGS_HEAD = "prompt_encoder.point_embed.weight"


def _sam2_rename(key: str, rules: list[tuple[re.Pattern[str], str]], layout: str) -> str:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    hint = " (strip the checkpoint's `sam.` prefix first)" if key.startswith("sam.") else ""
    raise CheckpointError(f"unknown {layout} SAM2 tensor name {key!r}{hint}")


def sam2_to_release(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """`MaskHead.state_dict()` -> the release's original-SAM2 names (relative to `sam.`).

    Tensors are passed through except `prompt_encoder.point_embed.weight` [4, C], split into
    `point_embeddings.{i}.weight` [1, C]. Works on meta tensors; exact inverse of `sam2_from_release`.
    """
    out: StateDict = {}
    for key, tensor in sd.items():
        if key == _POINT_EMBEDDINGS_HEAD:
            for i in range(tensor.shape[0]):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = tensor[i : i + 1].clone()
        else:
            out[_sam2_rename(key, _SAM2_HEAD_TO_RELEASE, "MaskHead")] = tensor
    return out


def sam2_from_release(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """The release's original-SAM2 names (relative to `sam.`) -> `MaskHead.state_dict()` names.

    `point_embeddings.{i}.weight` [1, C] (i = 0..n-1, all present) are stacked into `point_embed.weight`
    [n, C]. Works on meta tensors; exact inverse of `sam2_to_release`. Unknown names (e.g. SAM2.1's
    `obj_ptr_tpos_proj`) raise `CheckpointError`.
    """
    out: StateDict = {}
    points: dict[int, torch.Tensor] = {}
    for key, tensor in sd.items():
        match = _POINT_EMBEDDINGS_RELEASE.fullmatch(key)
        if match:
            points[int(match.group(1))] = tensor
        else:
            out[_sam2_rename(key, _SAM2_RELEASE_TO_HEAD, "release")] = tensor
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(
                f"sam_prompt_encoder.point_embeddings must be numbered 0..{len(points) - 1}, got {sorted(points)}"
            )
        out[_POINT_EMBEDDINGS_HEAD] = torch.cat([points[i] for i in range(len(points))], dim=0)
    return out
