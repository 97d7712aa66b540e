import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoModel

from tpo.errors import CheckpointError, ConfigError, InputError
from tpo.model.mask_head import MaskHead, MaskHeadConfig
from tpo.model.mask_tracker import (
    boxes_from_masks,
    init_tracker_state,
    track,
    track_first_frame,
    track_next_frame,
    upsample_mask_logits,
)
from tpo.model.release_names import sam2_from_release as from_release
from tpo.model.release_names import sam2_to_release as to_release

# A tiny SAM2: 256 px, Hiera 32 wide with 5 blocks, width 128 (2 memory tokens per pointer), distinct sizes
# elsewhere so that a swapped axis fails; 4 memory slots and 6 pointer slots so that a 9-frame clip wraps both rings.
TINY = MaskHeadConfig(
    image_size=256,
    hiera_embed_dim=32,
    hiera_num_heads=1,
    hiera_blocks_per_stage=(1, 1, 2, 1),
    hiera_global_attention_blocks=(3,),
    hiera_window_size_per_stage=(8, 4, 8, 4),
    hiera_window_pos_embed_size=(4, 4),
    hidden_size=128,
    memory_attention_layers=2,
    memory_attention_ffn_dim=192,
    mask_decoder_mlp_dim=160,
    num_maskmem=4,
    max_object_pointers=6,
)
S, C, CM, G = 256, 128, 64, 16  # image side, width, memory width, embedding grid
RELEASE_PARAMETERS = 224_430_386  # SAM2 v1.0 Hiera-L, release layout


def _tiny_head(object_bias: float | None = None, **changes) -> MaskHead:
    """Random tiny head; tensors transformers initialises to zero get small random values too."""
    torch.manual_seed(0)
    head = MaskHead(dataclasses.replace(TINY, **changes)).eval()
    with torch.no_grad():
        for p in head.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
        if object_bias is not None:  # > 0: the decoder says "object present", so masks are real logits
            head.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_bias)
    return head


def _transformers_model(head: MaskHead) -> Sam2VideoModel:
    """transformers' own video model holding the head's weights (its duplicate image embedding included)."""
    model = Sam2VideoModel(head.sam2_config).eval()
    sd = dict(head.state_dict())
    sd["shared_image_embedding.positional_embedding"] = sd["prompt_encoder.shared_embedding.positional_embedding"]
    model.load_state_dict(sd, strict=True)
    return model


# ------------------------------------------------------------------------------ checkpoint layout
def test_release_layout_on_meta_is_the_900_sam_keys(reference_dir):
    index = json.loads((reference_dir / "model.safetensors.index.json").read_text())["weight_map"]
    want = {k[len("sam.") :] for k in index if k.startswith("sam.")}
    assert len(want) == 900
    with torch.device("meta"):
        head = MaskHead(MaskHeadConfig())
    release = to_release(head.state_dict())
    assert set(release) == want
    assert sum(t.numel() for t in release.values()) == RELEASE_PARAMETERS
    assert all(t.is_floating_point() for t in release.values())
    shapes = {  # original SAM2 v1.0 Hiera-L shapes
        "image_encoder.trunk.patch_embed.proj.weight": (144, 3, 7, 7),
        "image_encoder.trunk.pos_embed": (1, 144, 7, 7),
        "image_encoder.trunk.pos_embed_window": (1, 144, 8, 8),
        "image_encoder.trunk.blocks.2.proj.weight": (288, 144),
        "image_encoder.trunk.blocks.47.attn.qkv.weight": (3456, 1152),
        "image_encoder.neck.convs.0.conv.weight": (256, 1152, 1, 1),
        "sam_prompt_encoder.point_embeddings.3.weight": (1, 256),
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
        "sam_mask_decoder.conv_s0.weight": (32, 256, 1, 1),
        "sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight": (2048, 256),
        "sam_mask_decoder.iou_prediction_head.layers.2.weight": (4, 256),
        "memory_attention.layers.3.cross_attn_image.k_proj.weight": (256, 64),
        "memory_encoder.mask_downsampler.encoder.9.weight": (256, 64, 3, 3),
        "memory_encoder.mask_downsampler.encoder.12.weight": (256, 256, 1, 1),
        "memory_encoder.fuser.layers.1.gamma": (256,),
        "memory_encoder.out_proj.weight": (64, 256, 1, 1),
        "maskmem_tpos_enc": (7, 1, 1, 64),
        "no_mem_embed": (1, 1, 256),
        "no_obj_ptr": (1, 256),
        "obj_ptr_proj.layers.2.weight": (256, 256),
        "mask_downsample.weight": (1, 1, 4, 4),
    }
    assert {k: tuple(release[k].shape) for k in shapes} == shapes
    back = from_release(release)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in head.state_dict().items()}


def test_release_names_round_trip_exactly():
    head = _tiny_head()
    sd = head.state_dict()
    release = to_release(sd)
    assert release["sam_prompt_encoder.point_embeddings.2.weight"].shape == (1, C)
    back = from_release(release)
    assert sorted(back) == sorted(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    again = to_release(back)
    assert sorted(again) == sorted(release) and all(torch.equal(again[k], release[k]) for k in release)
    fresh = MaskHead(TINY)
    fresh.load_state_dict(from_release(release), strict=True)
    for k, v in fresh.state_dict().items():
        assert v.dtype == sd[k].dtype and torch.equal(v, sd[k]), k


def test_from_release_refuses_unknown_names():
    with pytest.raises(CheckpointError, match="obj_ptr_tpos_proj"):  # SAM2.1 only
        from_release({"obj_ptr_tpos_proj.weight": torch.zeros(64, 256)})
    with pytest.raises(CheckpointError, match="strip the checkpoint's `sam.` prefix"):
        from_release({"sam.no_mem_embed": torch.zeros(1, 1, 256)})
    with pytest.raises(CheckpointError, match=r"numbered 0\.\.0"):
        from_release({"sam_prompt_encoder.point_embeddings.1.weight": torch.zeros(1, 256)})
    with pytest.raises(CheckpointError, match="unknown MaskHead"):
        to_release({"memory_attention.layers.0.bogus.weight": torch.zeros(1)})


def test_config_refuses_what_sam2_cannot_build():
    with pytest.raises(ConfigError, match="memory_dim=48"):      # a pointer splits into hidden/memory_dim tokens
        MaskHeadConfig(memory_dim=48)
    with pytest.raises(ConfigError, match="hiera_window_size_per_stage"):
        MaskHeadConfig(image_size=256, hiera_window_size_per_stage=(12, 4, 16, 8))
    with pytest.raises(ConfigError, match="iou_head_hidden_dim=0"):
        MaskHeadConfig(iou_head_hidden_dim=0)


def test_sam2_of_width_64_with_memory_width_32_builds_loads_and_tracks():
    """SAM2's own options: the memory cross-attention's keys and values are memory_dim wide (its kv_in_dim), the
    IoU head is 256 wide whatever the width; a head saved in the release layout loads back exactly."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, hidden_size=64, memory_dim=32, mask_decoder_mlp_dim=96)
    assert cfg.iou_head_hidden_dim == 256
    head = MaskHead(cfg).eval()
    release = to_release(head.state_dict())
    for layer in range(cfg.memory_attention_layers):
        assert release[f"memory_attention.layers.{layer}.cross_attn_image.k_proj.weight"].shape == (64, 32)
        assert release[f"memory_attention.layers.{layer}.cross_attn_image.v_proj.weight"].shape == (64, 32)
        assert release[f"memory_attention.layers.{layer}.self_attn.k_proj.weight"].shape == (64, 64)
    assert release["sam_mask_decoder.iou_prediction_head.layers.0.weight"].shape == (256, 64)
    assert release["sam_mask_decoder.iou_prediction_head.layers.2.weight"].shape == (4, 256)
    assert release["memory_encoder.out_proj.weight"].shape == (32, 64, 1, 1)
    assert release["maskmem_tpos_enc"].shape == (cfg.num_maskmem, 1, 1, 32)
    # the rebuilt cross-attention is initialised as transformers initialises its own (weights ~N(0, 0.02))
    k_proj = head.memory_attention.layers[0].cross_attn_image.k_proj
    assert not k_proj.bias.any() and 0.01 < float(k_proj.weight.detach().std()) < 0.03
    fresh = MaskHead(cfg).eval()
    fresh.load_state_dict(from_release(release), strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, head.state_dict()[k]), k
    with torch.device("meta"):
        on_meta = MaskHead(cfg)
    assert {k: v.shape for k, v in on_meta.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}

    # every piece runs; pointers become 64 / 32 = 2 memory tokens each; attention equals transformers' module
    b, k, p, g = 2, 3, 4, S // 16
    with torch.no_grad():
        f = fresh.encode_image(torch.randn(b, 3, S, S))
        out = fresh.decode(fresh.add_no_memory(f.image), f.high_res_s4, f.high_res_s8,
                           fresh.prompt_embedding(torch.tensor([[0.1, 0.2, 0.5, 0.6]] * b)), False)
        assert out.object_pointer.shape == (b, 64)
        mem = fresh.encode_memory(f.image, out.mask_logits, is_conditioning_frame=True)
        assert mem.memory.shape == (b, 32, g, g)
        memory, memory_pos = torch.randn(b, k, 32, g, g), torch.randn(b, k, 32, g, g)
        pointers, time = torch.randn(b, p, 64), torch.tensor([[3, 0, 1], [3, 1, 0]])
        ones_k, ones_p = torch.ones(b, k, dtype=torch.bool), torch.ones(b, p, dtype=torch.bool)
        got = fresh.attend_memory(f.image, f.image_pos, memory, memory_pos, time, ones_k, pointers, ones_p)
        tpos = fresh.memory_temporal_positional_encoding[:, 0, 0]
        for i in range(b):
            ptrs = pointers[i].reshape(-1, 32)
            keys = torch.cat([memory[i, s].flatten(1).T for s in range(k)] + [ptrs])[:, None]
            key_pos = torch.cat([memory_pos[i, s].flatten(1).T + tpos[time[i, s]] for s in range(k)]
                                + [torch.zeros_like(ptrs)])[:, None]
            want = fresh.memory_attention(
                current_vision_features=f.image[i : i + 1].flatten(2).permute(2, 0, 1),
                memory=keys,
                current_vision_position_embeddings=f.image_pos[i : i + 1].flatten(2).permute(2, 0, 1),
                memory_posision_embeddings=key_pos,
                num_object_pointer_tokens=ptrs.shape[0],
            )
            assert_close(got[i : i + 1], want.reshape(1, g * g, 64).transpose(1, 2).reshape(1, 64, g, g))
        frames = torch.randn(5, 3, S, S)
        steps = list(track(fresh, frames, fresh.prompt_embedding(torch.tensor([[0.2, 0.2, 0.6, 0.6]]))))
        assert len(steps) == 5


# ------------------------------------------------------------------------------------- pieces
def test_every_piece_has_the_documented_shapes():
    head = _tiny_head()
    b, k, p = 2, 3, 5
    with torch.no_grad():
        f = head.encode_image(torch.randn(b, 3, S, S))
        assert f.high_res_s4.shape == (b, C // 8, S // 4, S // 4)
        assert f.high_res_s8.shape == (b, C // 4, S // 8, S // 8)
        assert f.image.shape == f.image_pos.shape == (b, C, G, G)
        prompt = head.prompt_embedding(torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]))
        assert prompt.shape == (b, 3, C)
        assert head.empty_prompt(b).shape == (b, 2, C)
        assert head.image_positional_encoding().shape == (1, C, G, G)
        for multimask in (False, True):
            out = head.decode(head.add_no_memory(f.image), f.high_res_s4, f.high_res_s8, prompt, multimask)
            assert out.mask_logits.shape == (b, 1, S // 4, S // 4)
            assert out.iou.shape == out.object_score.shape == (b, 1)
            assert out.object_pointer.shape == (b, C)
        mem = head.encode_memory(f.image, out.mask_logits, is_conditioning_frame=True)
        assert mem.memory.shape == mem.memory_pos.shape == (b, CM, G, G)
        conditioned = head.attend_memory(
            f.image,
            f.image_pos,
            torch.randn(b, k, CM, G, G),
            torch.randn(b, k, CM, G, G),
            torch.zeros(b, k, dtype=torch.int64),
            torch.ones(b, k, dtype=torch.bool),
            torch.randn(b, p, C),
            torch.ones(b, p, dtype=torch.bool),
        )
        assert conditioned.shape == (b, C, G, G)
    with pytest.raises(InputError, match=r"\[B, 3, 256, 256\]"):
        head.encode_image(torch.randn(1, 3, 224, 224))
    with pytest.raises(InputError, match=r"\[B, 4\]"):
        head.prompt_embedding(torch.zeros(2, 2, 2))


def test_prompt_embedding_is_sam2s_two_point_box_prompt():
    head = _tiny_head()
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.3, 0.3, 0.35, 0.6]])
    with torch.no_grad():
        got = head.prompt_embedding(boxes)
        corners = boxes.reshape(2, 1, 2, 2) * S
        encoder = head.prompt_encoder
        labels = torch.tensor([[[2, 3]]]).expand(2, 1, 2)
        two_points, _ = encoder(input_points=corners, input_labels=labels, input_boxes=None, input_masks=None)
        box, _ = encoder(input_points=None, input_labels=None, input_boxes=boxes[:, None] * S, input_masks=None)
        # the release's PromptEncoder._embed_points, written out
        gaussian = encoder.shared_embedding.positional_embedding  # (2, C/2)
        angles = 2 * math.pi * ((2 * (corners[:, 0] + 0.5) / S - 1) @ gaussian)  # (B, 2, C/2)
        corner_embedding = torch.cat([angles.sin(), angles.cos()], dim=-1) + encoder.point_embed.weight[2:4]
        pad = encoder.not_a_point_embed.weight.expand(2, 1, C)
        want = torch.cat([corner_embedding, pad], dim=1)
    assert got.shape == (2, 3, C)
    assert_close(got, two_points[:, 0], rtol=0, atol=0)
    assert_close(got, box[:, 0], rtol=1e-6, atol=1e-6)
    assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("object_bias", [4.0, -4.0])
def test_image_decoder_and_memory_match_transformers_sam2_video_model(object_bias):
    head = _tiny_head(object_bias)
    sam2 = _transformers_model(head)
    pixels = torch.randn(1, 3, S, S)
    box = torch.tensor([[0.2, 0.25, 0.7, 0.6]])
    with torch.no_grad():
        f = head.encode_image(pixels)
        first = head.decode(head.add_no_memory(f.image), f.high_res_s4, f.high_res_s8, head.prompt_embedding(box), False)
        theirs = sam2._single_frame_forward(
            pixel_values=pixels, input_points=box.reshape(1, 1, 2, 2) * S,
            input_labels=torch.tensor([[[2, 3]]]), multimask_output=False,
        )
        assert_close(first.mask_logits, theirs.pred_masks.reshape(1, 1, S // 4, S // 4))
        assert_close(first.iou, theirs.iou_scores.reshape(1, 1))
        assert_close(first.object_score, theirs.object_score_logits.reshape(1, 1))
        assert_close(first.object_pointer, theirs.object_pointer.reshape(1, C))
        assert bool((first.mask_logits == -1024.0).all()) == (object_bias < 0)

        tracked = head.decode(head.add_no_memory(f.image), f.high_res_s4, f.high_res_s8, head.empty_prompt(1), True)
        theirs = sam2._single_frame_forward(pixel_values=pixels, multimask_output=True)
        best = theirs.iou_scores.reshape(3).argmax()
        assert_close(tracked.mask_logits, theirs.pred_masks.reshape(1, 1, S // 4, S // 4))
        assert_close(tracked.iou, theirs.iou_scores.reshape(3)[best].reshape(1, 1))
        assert_close(tracked.object_pointer, theirs.object_pointer.reshape(1, C))

        for out, is_cond in ((first, True), (tracked, False)):
            ours = head.encode_memory(f.image, out.mask_logits, is_conditioning_frame=is_cond)
            high_res = F.interpolate(out.mask_logits, size=(S, S), mode="bilinear", align_corners=False)
            memory, memory_pos = sam2._encode_new_memory(
                f.image.flatten(2).permute(2, 0, 1), high_res, out.object_score, is_mask_from_pts=is_cond
            )  # transformers rounds the memory to bf16; ours stays fp32
            assert ours.memory.dtype == torch.float32
            assert_close(ours.memory.to(torch.bfloat16).flatten(2).permute(2, 0, 1), memory)
            assert_close(ours.memory_pos.flatten(2).permute(2, 0, 1), memory_pos)


def test_unstable_single_mask_falls_back_to_best_multimask_but_keeps_token_0_pointer():
    always_stable, never_stable = _tiny_head(4.0, stability_threshold=0.0), _tiny_head(4.0, stability_threshold=1.01)
    pixels, box = torch.randn(1, 3, S, S), torch.tensor([[0.2, 0.25, 0.7, 0.6]])
    outs = {}
    with torch.no_grad():
        for name, head, multimask in (("single", always_stable, False), ("fallback", never_stable, False),
                                      ("multi", always_stable, True)):
            f = head.encode_image(pixels)
            image = head.add_no_memory(f.image)
            outs[name] = head.decode(image, f.high_res_s4, f.high_res_s8, head.prompt_embedding(box), multimask)
    assert torch.equal(outs["fallback"].mask_logits, outs["multi"].mask_logits)
    assert torch.equal(outs["fallback"].iou, outs["multi"].iou)
    assert torch.equal(outs["fallback"].object_pointer, outs["single"].object_pointer)
    assert not torch.equal(outs["fallback"].mask_logits, outs["single"].mask_logits)
    assert not torch.equal(outs["multi"].object_pointer, outs["single"].object_pointer)


def test_attend_memory_ignores_invalid_slots_and_matches_transformers():
    head = _tiny_head()
    b, k, p = 2, 4, 5
    torch.manual_seed(1)
    image, image_pos = torch.randn(b, C, G, G), torch.randn(b, C, G, G)
    memory, memory_pos = torch.randn(b, k, CM, G, G), torch.randn(b, k, CM, G, G)
    time = torch.tensor([[3, 0, 2, 1], [3, 1, 0, 2]])
    valid = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.bool)
    pointers = torch.randn(b, p, C)
    pointer_valid = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = head.attend_memory(image, image_pos, memory, memory_pos, time, valid, pointers, pointer_valid)
        # any content in invalid slots, even NaN/inf and an out-of-range time row, changes nothing
        garbage = memory.clone()
        garbage[~valid] = float("nan")
        garbage_pos = memory_pos.clone()
        garbage_pos[~valid] = 1e6
        garbage_time = torch.where(valid, time, 99)
        garbage_pointers = pointers.clone()
        garbage_pointers[~pointer_valid] = float("inf")
        again = head.attend_memory(
            image, image_pos, garbage, garbage_pos, garbage_time, valid, garbage_pointers, pointer_valid
        )
        assert torch.equal(out, again)
        # transformers' memory attention over the valid entries only, in the release's layout
        tpos = head.memory_temporal_positional_encoding[:, 0, 0]
        for i in range(b):
            slots = valid[i].nonzero().flatten().tolist()
            ptrs = pointers[i, pointer_valid[i]].reshape(-1, CM)  # pointer-major, CM-wide tokens
            keys = torch.cat([memory[i, s].flatten(1).T for s in slots] + [ptrs])[:, None]  # (N, 1, CM)
            key_pos = [memory_pos[i, s].flatten(1).T + tpos[time[i, s]] for s in slots]
            key_pos = torch.cat([*key_pos, torch.zeros_like(ptrs)])[:, None]
            want = head.memory_attention(
                current_vision_features=image[i : i + 1].flatten(2).permute(2, 0, 1),
                memory=keys,
                current_vision_position_embeddings=image_pos[i : i + 1].flatten(2).permute(2, 0, 1),
                memory_posision_embeddings=key_pos,
                num_object_pointer_tokens=ptrs.shape[0],
            )  # (1, 1, G*G, C)
            assert_close(out[i : i + 1], want.reshape(1, G * G, C).transpose(1, 2).reshape(1, C, G, G))


def test_rotary_tables_stay_fp32_in_bf16():
    head = _tiny_head()
    rotary = head.memory_attention.rotary_emb
    want = rotary(torch.zeros(1), head.memory_attention.position_ids)
    head.to(torch.bfloat16)
    cos, sin = head.rotary_tables(torch.device("cpu"))
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (1, G * G, C)
    assert torch.equal(cos, want[0]) and torch.equal(sin, want[1])


# ------------------------------------------------------------------------------------- tracker
def _moving_square_clip(num_frames: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, 3, S, S] normalised frames of a bright 48-px square moving 12 px right per frame, and its box."""
    frames = torch.full((num_frames, 3, S, S), 0.3)
    for t in range(num_frames):
        x = 40 + 12 * t
        frames[t, :, 100:148, x : x + 48] = 0.9
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    return (frames - mean) / std, torch.tensor([40, 100, 88, 148]) / S


def _release_style_track(head: MaskHead, frames: torch.Tensor, prompt: torch.Tensor) -> list[torch.Tensor]:
    """The release's propagate_in_video bookkeeping (dicts of frame outputs), with transformers' memory attention."""
    k, p, b, num_frames = head.config.num_maskmem, head.config.max_object_pointers, prompt.shape[0], frames.shape[0]
    tpos = head.memory_temporal_positional_encoding
    cond, non_cond, masks = {}, {}, []
    for t in range(num_frames):
        f = head.encode_image(frames[t : t + 1])
        f = type(f)(*(x.expand(b, *x.shape[1:]) for x in f))
        if t == 0:
            out = head.decode(head.add_no_memory(f.image), f.high_res_s4, f.high_res_s8, prompt, False)
            cond[0] = (*head.encode_memory(f.image, out.mask_logits, True), out.object_pointer)
        else:
            previous = [(0, cond[0])] + [(t_pos, non_cond.get(t - (k - t_pos))) for t_pos in range(1, k)]
            keys, key_pos = [], []
            for t_pos, prev in previous:
                if prev is not None:
                    keys.append(prev[0].flatten(2).permute(2, 0, 1))
                    key_pos.append(prev[1].flatten(2).permute(2, 0, 1) + tpos[k - t_pos - 1])
            ptrs = [cond[0][2]]
            for t_diff in range(1, min(num_frames, p)):
                if t - t_diff < 0:
                    break
                if t - t_diff in non_cond:
                    ptrs.append(non_cond[t - t_diff][2])
            ptrs = torch.stack(ptrs).reshape(-1, b, C // CM, CM).permute(0, 2, 1, 3).flatten(0, 1)
            conditioned = head.memory_attention(
                current_vision_features=f.image.flatten(2).permute(2, 0, 1),
                memory=torch.cat([*keys, ptrs]),
                current_vision_position_embeddings=f.image_pos.flatten(2).permute(2, 0, 1),
                memory_posision_embeddings=torch.cat([*key_pos, torch.zeros_like(ptrs)]),
                num_object_pointer_tokens=ptrs.shape[0],
            )  # (1, B, G*G, C)
            conditioned = conditioned[0].transpose(1, 2).reshape(b, C, G, G)
            out = head.decode(conditioned, f.high_res_s4, f.high_res_s8, head.empty_prompt(b), True)
            non_cond[t] = (*head.encode_memory(f.image, out.mask_logits, False), out.object_pointer)
        masks.append(out.mask_logits)
    return masks


def test_tracking_a_moving_square_end_to_end():
    head = _tiny_head(object_bias=4.0)
    frames, box = _moving_square_clip()
    num_frames, frame_size = frames.shape[0], (180, 320)
    with torch.no_grad():
        prompt = head.prompt_embedding(torch.stack([box, torch.tensor([0.5, 0.1, 0.9, 0.3])]))  # 2 objects
        clip = list(track(head, frames, prompt, frame_size))
        assert [r.frame_index for r in clip] == list(range(num_frames))
        for r in clip:
            assert r.mask_logits.shape == (2, 1, S // 4, S // 4) and r.mask_logits.dtype == torch.float32
            assert r.iou.shape == r.object_score.shape == (2, 1)
            assert len(r.boxes) == 2
            for bx in r.boxes:
                assert bx is None or (0 <= bx[0] < bx[2] <= 320 and 0 <= bx[1] < bx[3] <= 180)
        # deterministic
        again = list(track(head, frames, prompt, frame_size))
        assert all(torch.equal(a.mask_logits, b.mask_logits) and a.boxes == b.boxes for a, b in zip(clip, again, strict=True))
        # frame by frame equals the whole clip
        state = init_tracker_state(head, batch=2)
        steps = [track_first_frame(head, state, frames[0:1], prompt, frame_size)]
        steps += [track_next_frame(head, state, frames[t : t + 1], frame_size) for t in range(1, num_frames)]
        for a, b in zip(clip, steps, strict=True):
            assert a.frame_index == b.frame_index and a.boxes == b.boxes
            assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.object_score, b.object_score)
        # both rings wrapped: slot 0 keeps frame 0, the others the latest frames
        assert state.memory_frame.tolist() == [0, 7, 8, 6]
        assert state.pointer_frame.tolist() == [0, 6, 7, 8, 4, 5]
        # the same masks as the release's dict-based propagation with transformers' memory attention
        reference = _release_style_track(head, frames, prompt)
    for r, want in zip(clip, reference, strict=True):
        assert_close(r.mask_logits, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="track_first_frame"):
        track_next_frame(head, init_tracker_state(head, batch=1), frames[0:1])


def test_tracking_runs_in_bf16():
    head = _tiny_head(object_bias=4.0).to(torch.bfloat16)
    frames, box = _moving_square_clip(3)
    with torch.no_grad():
        clip = list(track(head, frames, head.prompt_embedding(box[None].to(torch.bfloat16))))
    assert len(clip) == 3 and all(torch.isfinite(r.iou).all() for r in clip)
    assert clip[-1].mask_logits.dtype == torch.float32


def test_low_res_logits_to_frame_masks_and_boxes():
    logits = torch.full((2, 1, 64, 64), -5.0)
    logits[0, 0, 10:20, 30:34] = 5.0  # rows 10..19, columns 30..33 on the 64 x 64 grid
    masks = upsample_mask_logits(logits, (128, 256)) > 0  # 2x vertically, 4x horizontally
    assert masks.shape == (2, 1, 128, 256)
    assert boxes_from_masks(masks) == [(120, 20, 136, 40), None]
    single = torch.zeros(1, 5, 7, dtype=torch.bool)
    single[0, 3, 6] = True
    assert boxes_from_masks(single) == [(6, 3, 7, 4)]


def test_hiera_position_embedding_is_transformers_bicubic_as_matrix_products():
    """The separable form (no cubic Resize in the exported graph) gives transformers' bicubic table; another
    grid still takes transformers' own path, and a deep copy uses its own weights."""
    import copy

    from transformers.models.sam2.modeling_sam2 import Sam2HieraDetModel

    head = _tiny_head()
    backbone = head.vision_encoder.backbone
    grid = S // 4
    for hw in ((grid, grid), (8, 8)):
        assert_close(backbone._get_pos_embed(hw), Sam2HieraDetModel._get_pos_embed(backbone, hw), rtol=0, atol=2e-6)
    twin = copy.deepcopy(backbone)
    with torch.no_grad():
        twin.pos_embed.add_(1.0)
    assert_close(twin._get_pos_embed((grid, grid)), backbone._get_pos_embed((grid, grid)) + 1.0, rtol=0, atol=1e-5)
    assert "pos_embed_rows" not in head.state_dict()          # the checkpoint layout is unchanged
