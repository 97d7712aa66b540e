import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from tpo.errors import ConfigError, InputError
from tpo.model.temporal_criterion import (
    HungarianMatcher,
    TemporalCriterion,
    TemporalTargets,
)
from tpo.model.temporal_head import (
    TemporalHead,
    TemporalHeadConfig,
    TemporalHeadOutput,
    decode_saliency,
    decode_windows,
    from_release,
    insert_task_token,
    to_release,
)
from tpo.model.temporal_head_layers import AdaptiveCrossAttention, MultiheadAttention

# Distinct sizes so a swapped axis fails: batch 2, 7 text tokens (8 with the task token), 11 clips.
TINY = TemporalHeadConfig(
    hidden_dim=64, num_heads=4, ffn_dim=96, enc_layers=1, dec_layers=2, t2v_layers=1, dummy_layers=1,
    sent_layers=1, moment_layers=1, num_queries=5, num_dummies=3, total_prompts=4, num_prompts=2,
    text_dim=256, video_dim=130, max_text_len=9, txt_position_embed_size=12,
)
B, LQ, LV = 2, 7, 11
RELEASED_PARAMS = 13_953_835


def tiny_inputs(b=B, lq=LQ, lv=LV, text_len=(7, 4), clip_len=(11, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(b, lq, TINY.text_dim, generator=g)
    video = torch.randn(b, lv, TINY.video_dim, generator=g)
    prompt = torch.randn(b, 1, TINY.text_dim, generator=g)
    text_mask = torch.arange(lq)[None] < torch.tensor(text_len[:b])[:, None]
    video_mask = torch.arange(lv)[None] < torch.tensor(clip_len[:b])[:, None]
    return text, text_mask, video, video_mask, prompt


def tiny_head(seed=0, **changes):
    torch.manual_seed(seed)
    return TemporalHead(dataclasses.replace(TINY, **changes)).eval()


def test_released_config_has_the_checkpoint_names_and_shapes(reference_dir):
    with torch.device("meta"):
        head = TemporalHead(TemporalHeadConfig())
    index = json.loads((reference_dir / "model.safetensors.index.json").read_text())["weight_map"]
    expected = sorted(k.removeprefix("cg_model.") for k in index if k.startswith("cg_model."))
    sd = head.state_dict()
    assert len(expected) == 285
    assert sorted(sd) == expected
    assert "cg_criterion.empty_weight" in index and list(TemporalCriterion().state_dict()) == ["empty_weight"]
    assert sum(p.numel() for p in head.parameters()) == RELEASED_PARAMS
    shapes = {
        "input_txt_proj.0.net.1.weight": (256, 4096),     # text_dim -> hidden
        "input_txt_proj.1.net.1.weight": (256, 256),      # n_input_proj = 2
        "input_vid_proj.0.LayerNorm.weight": (770,),      # video_dim
        "txt_proj_linear.net.1.weight": (256, 4096),
        "txt_position_embed.position_embeddings.weight": (100, 256),
        "query_embed.weight": (10, 2),
        "global_rep_token": (10, 256), "global_rep_pos": (1, 256),
        "dummy_rep_token": (45, 256), "dummy_rep_pos": (45, 256),
        "moment_rep_token": (256,), "sent_rep_token": (256,),
        "txtproj_encoder.layers.1.self_attn.in_proj_weight": (768, 256),
        "transformer.t2v_encoder.layers.1.self_attn.out_proj.weight": (256, 256),
        "transformer.encoder.layers.2.linear1.weight": (1024, 256),
        "transformer.decoder.layers.2.cross_attn.out_proj.weight": (256, 256),
        "transformer.decoder.ref_anchor_head.layers.1.weight": (1, 256),
        "transformer.decoder.layers.0.activation.weight": (1,),
        "span_embed.layers.2.weight": (2, 256),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "transformer.decoder.layers.1.ca_qpos_proj.weight" not in sd  # first decoder layer only


def test_name_hooks_are_the_identity_and_work_on_meta():
    with torch.device("meta"):
        sd = TemporalHead(TINY).state_dict()
    rel = to_release(sd)
    assert list(rel) == list(sd) and all(rel[k] is sd[k] for k in sd)
    assert list(from_release(rel)) == list(sd)


def test_dummy_and_sentence_encoders_use_eight_heads_whatever_num_heads_says():
    head = TemporalHead(TINY)
    assert head.txtproj_encoder.layers[0].self_attn.num_heads == 8
    assert head.scls_encoder.layers[0].self_attn.num_heads == 8
    assert head.transformer.t2v_encoder.layers[0].self_attn.num_heads == 4
    assert head.transformer.encoder.layers[0].self_attn.num_heads == 4


def test_eval_output_shapes():
    out = tiny_head()(*tiny_inputs())
    q, d, nd, lt = TINY.num_queries, TINY.hidden_dim, TINY.num_dummies, LQ + 1
    assert out.logits.shape == (B, q, 2)
    assert out.spans.shape == (B, q, 2) and out.spans.min() >= 0 and out.spans.max() <= 1
    assert out.saliency.shape == (B, LV)
    assert out.aux_logits.shape == (TINY.dec_layers - 1, B, q, 2) and out.aux_spans.shape == (1, B, q, 2)
    assert out.t2v_attention.shape == (B, LV, nd + lt)
    assert out.t2v_saliency.shape == (B, LV)
    assert out.dummy_tokens.shape == (B, nd, d) and out.global_tokens.shape == (TINY.total_prompts, d)
    assert out.text_mask.shape == (B, nd + lt) and out.video_mask.shape == (B, LV)
    assert out.moment_token is None and out.saliency_neg is None


def test_training_output_shapes():
    text, text_mask, video, video_mask, prompt = tiny_inputs(b=3, text_len=(7, 4, 6), clip_len=(11, 8, 9))
    relevant = torch.zeros(3, LV)
    relevant[:, 2:5] = 3.0
    out = tiny_head()(text, text_mask, video, video_mask, prompt, relevant_clips=relevant, video_ids=["a", "b", "b"])
    d, s = TINY.hidden_dim, TINY.num_dummies + LQ + 1
    for t in (out.moment_token, out.non_moment_token, out.sentence_token, out.dummy_sentence_token):
        assert t.shape == (3, d)
    assert out.moment_to_text.shape == (3, LV, s) and out.moment_frames.shape == (3, LV, d)
    assert out.moment_mask.shape == (3, LV)
    assert out.real_negative.tolist() == [True, False, True]  # a|b, b|b (same video), b|a
    assert out.saliency_neg.shape == (2, LV) and out.t2v_saliency_neg.shape == (2, LV)


def test_task_token_goes_right_after_the_last_valid_token():
    text = torch.arange(1, 2 * 5 + 1, dtype=torch.float32).view(2, 5, 1)  # tokens 1..5 and 6..10
    valid = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    token = torch.full((2, 1, 1), -1.0)
    out, out_valid = insert_task_token(text, valid, token)
    assert out[..., 0].tolist() == [[1, 2, -1, 3, 4, 5], [6, 7, 8, 9, -1, 10]]
    assert out_valid.int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    full = torch.ones(2, 5, dtype=torch.bool)
    out, out_valid = insert_task_token(text, full, token)
    assert out[:, -1, 0].tolist() == [-1, -1] and bool(out_valid.all())


def test_the_task_token_matters_and_padded_text_does_not():
    head = tiny_head()
    text, text_mask, video, video_mask, prompt = tiny_inputs()
    base = head(text, text_mask, video, video_mask, prompt)
    garbage = text.clone()
    garbage[1, 4:] = 1e3  # sample 1 has 4 valid tokens
    same = head(garbage, text_mask, video, video_mask, prompt)
    torch.testing.assert_close(same.logits, base.logits)
    other = head(text, text_mask, video, video_mask, torch.randn_like(prompt))  # (+const: LayerNorm erases it)
    assert not torch.allclose(other.logits, base.logits)


def test_padding_leaves_valid_outputs_unchanged_and_samples_independent():
    head = tiny_head()
    text, text_mask, video, video_mask, prompt = tiny_inputs()
    batch = head(text, text_mask, video, video_mask, prompt)
    # Sample 1 alone, cut to its valid tokens (4) and clips (8): no padding at all.
    alone = head(text[1:, :4], text_mask[1:, :4], video[1:, :8], video_mask[1:, :8], prompt[1:])
    tol = dict(atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(batch.logits[1], alone.logits[0], **tol)
    torch.testing.assert_close(batch.spans[1], alone.spans[0], **tol)
    torch.testing.assert_close(batch.aux_spans[:, 1], alone.aux_spans[:, 0], **tol)
    torch.testing.assert_close(batch.saliency[1, :8], alone.saliency[0], **tol)
    torch.testing.assert_close(batch.t2v_saliency[1, :8], alone.t2v_saliency[0], **tol)
    # Sample 0 (unpadded) does not depend on sample 1's padding (the release leaks masks across samples).
    first = head(text[:1], text_mask[:1], video[:1], video_mask[:1], prompt[:1])
    torch.testing.assert_close(batch.spans[0], first.spans[0], **tol)
    torch.testing.assert_close(batch.saliency[0], first.saliency[0], **tol)


def test_saliency_token_passes_t2v_layers_with_empty_keys_as_out_proj_bias():
    layer = tiny_head().transformer.t2v_encoder.layers[0]
    token = torch.randn(2, 1, TINY.hidden_dim)
    empty = torch.zeros(2, 0, TINY.hidden_dim)
    through_empty, _ = layer(token, torch.zeros_like(token), empty, empty, torch.zeros(2, 0, dtype=torch.bool))
    torch.testing.assert_close(layer.forward_without_keys(token), through_empty)


def test_adaptive_cross_attention_softmax_covers_dummies_but_sums_text_values():
    torch.manual_seed(0)
    attn = AdaptiveCrossAttention(dim=8, num_heads=1, dropout=0.0, num_dummies=2).eval()
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    valid = torch.tensor([[True, True, True, True, False]])
    out, probs = attn(q, k, v, valid)
    scores = (q @ k.transpose(1, 2) / math.sqrt(8)).masked_fill(~valid[:, None], float("-inf"))
    p = scores.softmax(-1)
    torch.testing.assert_close(probs, p)
    torch.testing.assert_close(out, attn.out_proj(p[..., 2:] @ v[:, 2:]))


def test_multihead_attention_matches_torch():
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 4, dropout=0.0).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    x, kv = torch.randn(3, 5, 16), torch.randn(3, 6, 16)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False
    expected = ref(x, kv, kv, key_padding_mask=~valid, need_weights=False)[0]
    torch.testing.assert_close(ours(x, kv, kv, valid), expected, atol=1e-5, rtol=1e-4)


def test_input_errors_name_the_tensor():
    head = tiny_head()
    text, text_mask, video, video_mask, prompt = tiny_inputs()
    with pytest.raises(InputError, match="text_feats"):
        head(text[..., :-1], text_mask, video, video_mask, prompt)
    long = torch.randn(B, TINY.max_text_len + 1, TINY.text_dim)
    with pytest.raises(InputError, match="1..9"):
        head(long, torch.ones(long.shape[:2]), video, video_mask, prompt)
    with pytest.raises(InputError, match="prompt_token"):
        head(text, text_mask, video, video_mask, prompt[:, 0])
    with pytest.raises(ConfigError, match="num_heads"):
        TemporalHeadConfig(hidden_dim=64, num_heads=3)


def _output(logits, spans, lv=6):
    b, q = spans.shape[:2]
    z = torch.zeros
    return TemporalHeadOutput(
        logits=logits, spans=spans, saliency=torch.linspace(-1, 1, lv).expand(b, lv), aux_logits=z(0, b, q, 2),
        aux_spans=z(0, b, q, 2), t2v_attention=z(b, lv, 1), t2v_saliency=z(b, lv), dummy_tokens=z(b, 1, 4),
        global_tokens=z(1, 4), text_mask=z(b, 1, dtype=torch.bool),
        video_mask=torch.arange(lv)[None].expand(b, lv) < 4,
    )


def _logits(probs):
    p = torch.tensor(probs)
    return torch.stack([p.log(), (1 - p).log()], dim=-1)[None]  # (1, Q, 2), foreground first


def test_decode_windows_sorts_clamps_and_rounds_to_clips():
    spans = torch.tensor([[[0.5, 1.2], [0.3, 0.2], [0.62, 0.13]]])  # (centre, width)
    out = _output(_logits([0.2, 0.9, 0.5]), spans)
    # q1 -> 4..8 s, q2 -> 11.1..13.7 s, q0 -> -2..22 s clamped to 0..20 s.
    assert decode_windows(out, duration_s=20.0) == [[4.0, 8.0, 0.9], [11.0, 14.0, 0.5], [0.0, 20.0, 0.2]]
    assert decode_windows(out, duration_s=20.0, clip_len_s=2.0) == [[4.0, 8.0, 0.9], [12.0, 14.0, 0.5],
                                                                     [0.0, 20.0, 0.2]]
    assert decode_saliency(out) == pytest.approx([-1.0, -0.6, -0.2, 0.2], abs=1e-3)  # valid clips only
    with pytest.raises(InputError, match="duration_s"):
        decode_windows(out, duration_s=0.0)


def test_matcher_assigns_the_obvious_pairs():
    matcher = HungarianMatcher(cost_span=10, cost_giou=1, cost_class=4)
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.2], [0.5, 0.5]], [[0.1, 0.1], [0.9, 0.1], [0.4, 0.3]]])
    logits = torch.cat([_logits([0.5, 0.5, 0.5]), _logits([0.1, 0.1, 0.9])])
    targets = [torch.tensor([[0.7, 0.2], [0.2, 0.1]]), torch.tensor([[0.45, 0.3]])]
    (p0, t0), (p1, t1) = matcher(logits, spans, targets)
    assert dict(zip(p0.tolist(), t0.tolist(), strict=True)) == {0: 1, 1: 0}
    assert p1.tolist() == [2] and t1.tolist() == [0]
    assert [len(i) for i, _ in matcher(logits, spans, [torch.zeros(0, 2), torch.zeros(0, 2)])] == [0, 0]


def _training_batch():
    inputs = tiny_inputs(b=3, text_len=(7, 4, 6), clip_len=(11, 8, 9))
    saliency = torch.zeros(3, LV)
    saliency[0, 2:5] = torch.tensor([2.0, 4.0, 1.0])
    saliency[1, 5:8] = torch.tensor([3.0, 3.0, 1.0])
    saliency[2, 0:3] = torch.tensor([1.0, 2.0, 1.0])
    targets = TemporalTargets(
        spans=[torch.tensor([[0.3, 0.3]]), torch.tensor([[0.8, 0.4]]), torch.tensor([[0.15, 0.3], [0.7, 0.1]])],
        saliency_pos=torch.tensor([[3, 2], [5, 6], [1, 0]]),
        saliency_neg=torch.tensor([[9, 0], [0, 1], [7, 8]]),
        saliency_all=saliency,
    )
    return inputs, targets


def test_criterion_losses_are_finite_and_weighted_like_the_release():
    (text, text_mask, video, video_mask, prompt), targets = _training_batch()
    head, criterion = tiny_head(dropout=0.0, input_dropout=0.0).train(), TemporalCriterion()
    out = head(text, text_mask, video, video_mask, prompt, relevant_clips=targets.saliency_all,
               video_ids=["a", "b", "b"])
    losses = criterion(out, targets)
    expected = {"loss_span", "loss_giou", "loss_label", "class_error", "loss_saliency", "loss_ms_align",
                "loss_distill", "loss_orthogonal_dummy", "loss_span_0", "loss_giou_0", "loss_label_0", "class_error_0"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(float(losses[k].detach()) > 0 for k in expected - {"class_error", "class_error_0"})
    weights = {"loss_span": 10, "loss_giou": 1, "loss_label": 4, "loss_saliency": 4, "loss_ms_align": 1,
               "loss_distill": 1, "loss_orthogonal_dummy": 1, "loss_span_0": 10, "loss_giou_0": 1, "loss_label_0": 4}
    total = sum(losses[k] * w for k, w in weights.items())
    torch.testing.assert_close(criterion.weighted_total(losses), total)
    assert criterion.empty_weight.tolist() == pytest.approx([1.0, 0.1])


def test_criterion_loss_decreases_on_a_fixed_target():
    (text, text_mask, video, video_mask, prompt), targets = _training_batch()
    head, criterion = tiny_head(seed=1, dropout=0.0, input_dropout=0.0).train(), TemporalCriterion()
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    totals = []
    for _ in range(8):
        out = head(text, text_mask, video, video_mask, prompt, relevant_clips=targets.saliency_all,
                   video_ids=["a", "b", "c"])
        loss = criterion.weighted_total(criterion(out, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(float(loss.detach()))
    assert totals[-1] < 0.8 * totals[0], totals
