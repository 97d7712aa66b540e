"""The temporal grounding head: CG-DETR (correlation-guided DETR) as VideoChat-TPO releases it.

Given per-token query text features, per-clip video features and the LLM's task embedding, it
predicts `num_queries` moments (foreground logit + sigmoid (centre, width) as a fraction of the
video) and a saliency score per clip. Parameter names are the release's names under `cg_model.`, so
loading is a plain copy (`to_release`/`from_release` are the identity).

The flow, in the paper's terms (shapes for batch B, Lq text tokens, Lv clips, width D):
  1. task embedding inserted right after the last valid text token      text  (B, Lt=Lq+1, Dt)
  2. input projections + token-type embeddings                          text (B, Lt, D), clips (B, Lv, D)
  3. dummy encoder: Nd learned dummy tokens encoded with the text       dummies (B, Nd, D)
  4. adaptive cross-attention (t2v): clips attend to [dummies | text]   clips (B, Lv, D), attention (B, Lv, Nd+Lt)
  5. saliency token: clip average + the global prompt tokens that best match the clips, weighted by
     each clip's attention to the text; it passes the t2v layers with no keys   (B, 1, D)
  6. encoder over [saliency token | clips] (text dropped); the token is added to every clip
  7. DAB-DETR decoder over Q anchors -> moments; saliency = <proj1(clip), proj2(token)> / sqrt(D)
In training (`relevant_clips` given) it also runs the sentence encoder and the moment encoder that
the ms_align and distill losses need, and with `video_ids` the negative-pair pass.

Release behaviour reproduced on purpose (../shared/docs/videochat-tpo-reference.md):
- the dummy and sentence encoders use 8 heads whatever `num_heads` says (`aux_encoder_heads`);
- t2v attention has no q/k/v projections and its softmax covers the dummies (`AdaptiveCrossAttention`);
- the saliency token's t2v attention output is the out-proj bias (`forward_without_keys`);
- the main encoder drops the text tokens and adds its global output to every clip;
- inverse_sigmoid uses eps 1e-3; `txt_proj_linear` and `txt_position_embed` are stored but unused.
Deviations (documented; identical for the release's batch-1 inference):
- the release builds the t2v attention mask with `.repeat(nhead, 1, 1)` (head-major) while the
  attention reads it batch-major, so at B > 1 masks leak between samples; the correctly laid out mask
  is implied by the key-padding mask, so only key padding is applied here;
- the release casts positions, the decoder's zero target and the saliency token to bfloat16; here
  they follow the input dtype;
- clip averages and clip-importance masking use the masks directly (the release slices the first
  `mask.sum()` clips: the same for valid-first masks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tpo.errors import ConfigError, InputError

from .temporal_head_layers import (
    MLP,
    AdaptiveCrossAttentionEncoder,
    AnchorDecoder,
    Encoder,
    LinearLayer,
    SinePositionEmbedding,
    TrainablePositionalEncoding,
    input_projection,
    inverse_sigmoid,
)

StateDict = dict[str, torch.Tensor]


@dataclass
class TemporalHeadConfig:
    """CG-DETR sizes; the defaults are the released ones (the release's `CGDETRConfig` defaults)."""

    hidden_dim: int = 256
    num_heads: int = 8            # t2v, main encoder, moment encoder and decoder
    aux_encoder_heads: int = 8    # dummy and sentence encoders: the release hard-codes 8, whatever num_heads says
    ffn_dim: int = 1024           # PReLU FFN in every layer
    enc_layers: int = 3
    dec_layers: int = 3
    t2v_layers: int = 2
    dummy_layers: int = 2
    sent_layers: int = 1
    moment_layers: int = 1
    num_queries: int = 10         # moment queries (anchors)
    num_dummies: int = 45         # dummy tokens in front of the text
    total_prompts: int = 10       # global prompt tokens the saliency token is made from
    num_prompts: int = 1          # how many of them (top-k) it takes
    text_dim: int = 4096          # InternVL-C LLaMA-7B token features
    video_dim: int = 770          # InternVideo2-CLIP 768-d clip features + 2 TEF
    max_text_len: int = 80        # query tokens before the task token is inserted
    n_input_proj: int = 2         # LinearLayers in input_txt_proj / input_vid_proj
    txt_position_embed_size: int = 100  # unused table; the release's max_q_l=-1 -> 100
    dropout: float = 0.1          # attention, FFN and drop-path
    input_dropout: float = 0.5    # in the input projections

    def __post_init__(self) -> None:
        for name in ("num_heads", "aux_encoder_heads"):
            heads = getattr(self, name)
            if heads < 1 or self.hidden_dim % heads:
                raise ConfigError(f"temporal_head: hidden_dim {self.hidden_dim} is not divisible by {name} {heads}")
        if self.hidden_dim % 4:
            raise ConfigError(f"temporal_head: hidden_dim {self.hidden_dim} must be a multiple of 4 (sine embeddings)")
        if not 1 <= self.n_input_proj <= 3:
            raise ConfigError(f"temporal_head: n_input_proj must be 1, 2 or 3, got {self.n_input_proj}")
        if not 1 <= self.num_prompts <= self.total_prompts:
            raise ConfigError(
                f"temporal_head: num_prompts {self.num_prompts} must be in 1..total_prompts ({self.total_prompts})"
            )
        for name in ("enc_layers", "dec_layers", "t2v_layers", "dummy_layers", "sent_layers", "moment_layers",
                     "num_queries", "num_dummies", "max_text_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"temporal_head: {name} must be at least 1, got {getattr(self, name)}")


@dataclass
class TemporalHeadOutput:
    """What `TemporalHead.forward` returns. Q queries, Lv clips, Nd dummies, Lt = Lq + 1 text tokens.

    Always set:
      logits          (B, Q, 2)        class logits; index 0 = foreground (the moment), 1 = background
      spans           (B, Q, 2)        sigmoid (centre, width), fractions of the video
      saliency        (B, Lv)          per-clip saliency score (unbounded)
      aux_logits      (dec_layers-1, B, Q, 2), aux_spans (dec_layers-1, B, Q, 2): earlier decoder layers
      t2v_attention   (B, Lv, Nd+Lt)   clip->[dummies|text] attention, mean over heads and t2v layers
      t2v_saliency    (B, Lv)          attention mass on the valid text tokens, clamped to [0, 1]
      dummy_tokens    (B, Nd, D)       encoded dummies
      global_tokens   (P, D)           the global prompt tokens (`global_rep_token`)
      text_mask       (B, Nd+Lt) bool  valid [dummies | text with task token]
      video_mask      (B, Lv) bool
    Training only (`relevant_clips` given, else None):
      moment_token, non_moment_token (B, D)   moment encoder over relevant / other clips
      sentence_token, dummy_sentence_token (B, D)   sentence encoder over the text / the dummies
      moment_to_text  (B, Lv, Nd+Lt)  moment-encoded clips . sentence-encoded [dummies|text]
      moment_mask     (B, Lv) bool    relevant clips
      moment_frames   (B, Lv, D)      clips from the moment pass where relevant, else the non-moment pass
    Negative pairs (`video_ids` given and some neighbour pair differs, else None):
      real_negative   (B,) bool       sample b was paired with sample b+1's text (a different video)
      saliency_neg, t2v_saliency_neg (N, Lv) for those N samples
    """

    logits: torch.Tensor
    spans: torch.Tensor
    saliency: torch.Tensor
    aux_logits: torch.Tensor
    aux_spans: torch.Tensor
    t2v_attention: torch.Tensor
    t2v_saliency: torch.Tensor
    dummy_tokens: torch.Tensor
    global_tokens: torch.Tensor
    text_mask: torch.Tensor
    video_mask: torch.Tensor
    moment_token: torch.Tensor | None = None
    non_moment_token: torch.Tensor | None = None
    sentence_token: torch.Tensor | None = None
    dummy_sentence_token: torch.Tensor | None = None
    moment_to_text: torch.Tensor | None = None
    moment_mask: torch.Tensor | None = None
    moment_frames: torch.Tensor | None = None
    real_negative: torch.Tensor | None = None
    saliency_neg: torch.Tensor | None = None
    t2v_saliency_neg: torch.Tensor | None = None


torch.export.register_dataclass(TemporalHeadOutput)


@dataclass
class _Memory:
    """What one pass of the correlation-guided transformer yields."""

    hidden: torch.Tensor          # (L, B, Q, D) decoder states
    references: torch.Tensor      # (L, B, Q, 2) anchors each decoder layer started from
    clips: torch.Tensor           # (B, Lv, D) encoded clips + the global token
    global_token: torch.Tensor    # (B, D)
    t2v_attention: torch.Tensor   # (B, Lv, Nd+Lt)


TIE_BREAK = 1e-6   # see `saliency_token`


class CorrelationGuidedTransformer(nn.Module):
    """Steps 4-7 of the module docstring (the release's `transformer`), plus its moment encoder."""

    def __init__(self, cfg: TemporalHeadConfig):
        super().__init__()
        d, h, f, p = cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout
        self.num_dummies = cfg.num_dummies
        self.num_prompts = cfg.num_prompts
        self.mcls_encoder = Encoder(cfg.moment_layers, d, h, f, p)
        self.t2v_encoder = AdaptiveCrossAttentionEncoder(cfg.t2v_layers, d, h, f, p, cfg.num_dummies)
        self.encoder = Encoder(cfg.enc_layers, d, h, f, p)
        self.decoder = AnchorDecoder(cfg.dec_layers, d, h, f, p)
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def saliency_token(self, clips: torch.Tensor, clip_valid: torch.Tensor, context: torch.Tensor,
                       t2v_attention: torch.Tensor, global_tokens: torch.Tensor) -> torch.Tensor:
        """CG-DETR's moment-adaptive saliency token, before the t2v layers.

        clips (B, Lv, D) projected, context (B, D) their average, t2v_attention (B, Lv, Nd+Lt),
        global_tokens (P, D) -> (B, D): context + top-k prompt tokens weighted by their similarity.
        """
        rel = F.normalize(clips - context[:, None], dim=2)
        sim = torch.softmax(rel @ F.normalize(global_tokens, dim=1).T, dim=-1)  # (B, Lv, P)
        # Clip importance: attention mass on the text (not the dummies), zero on padding, mean 1 over Lv.
        importance = t2v_attention[:, :, self.num_dummies:].sum(2).detach() * clip_valid  # (B, Lv)
        importance = importance / importance.sum(1, keepdim=True) * importance.shape[1]
        sim = (sim * importance[:, :, None]).mean(1)  # (B, P)
        # Ties go to the lower index, in PyTorch and in any exported graph alike: with one valid clip every
        # similarity is equal (the clip's offset from the context is zero), and topk's tie order is unspecified
        # (torch on the CPU and ONNX Runtime picked different prompts). The offset only ranks; values are sim's.
        rank = sim - torch.arange(sim.shape[1], device=sim.device, dtype=sim.dtype) * TIE_BREAK
        top_idx = torch.topk(rank, k=self.num_prompts, dim=1).indices  # (B, k)
        top_val = sim.gather(1, top_idx)
        return (top_val[:, :, None] * global_tokens[top_idx]).sum(1) + context

    def forward(self, clips: torch.Tensor, clip_valid: torch.Tensor, clip_pos: torch.Tensor, text: torch.Tensor,
                text_valid: torch.Tensor, text_pos: torch.Tensor, context: torch.Tensor,
                global_tokens: torch.Tensor, global_pos: torch.Tensor, anchors: torch.Tensor) -> _Memory:
        """clips, clip_pos (B, Lv, D); clip_valid (B, Lv); text, text_pos (B, Nd+Lt, D) dummies first;
        text_valid (B, Nd+Lt); context (B, D); global_tokens (P, D); global_pos (1, D); anchors (Q, 2)."""
        b = clips.shape[0]
        t2v_clips, t2v_attention = self.t2v_encoder(clips, clip_pos, text, text_pos, text_valid)

        token = self.saliency_token(clips, clip_valid, context, t2v_attention, global_tokens)
        token = self.t2v_encoder.forward_without_keys(token[:, None])  # (B, 1, D)

        # Main encoder over [saliency token | clips]; the text tokens are dropped here.
        x = torch.cat([token, t2v_clips], dim=1)  # (B, 1+Lv, D)
        pos = torch.cat([global_pos.to(clip_pos.dtype).expand(b, 1, -1), clip_pos], dim=1)
        valid = torch.cat([clip_valid.new_ones(b, 1), clip_valid], dim=1)
        memory = self.encoder(x, pos, valid)
        global_token = memory[:, 0]  # (B, D)
        local = memory[:, 1:] + global_token[:, None]  # (B, Lv, D)

        hidden, references = self.decoder(local, clip_valid, clip_pos, anchors.expand(b, -1, -1))
        return _Memory(hidden, references, local, global_token, t2v_attention)

    def encode_moment(self, token: torch.Tensor, token_pos: torch.Tensor, clips: torch.Tensor, clip_pos: torch.Tensor,
                      clip_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moment encoder over [moment token | the clips marked valid] -> token (B, D), clips (B, Lv, D)."""
        b = clips.shape[0]
        x = torch.cat([token.expand(b, 1, -1), clips], dim=1)
        pos = torch.cat([token_pos.to(clip_pos.dtype).expand(b, 1, -1), clip_pos], dim=1)
        valid = torch.cat([clip_valid.new_ones(b, 1), clip_valid], dim=1)
        out = self.mcls_encoder(x, pos, valid)
        return out[:, 0], out[:, 1:]


def insert_task_token(text: torch.Tensor, text_valid: torch.Tensor,
                      token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert `token` right after the last valid text token, as the release does (at index mask.sum()).

    text (B, Lq, Dt), text_valid (B, Lq) bool with valid tokens first, token (B, 1, Dt)
    -> text (B, Lq+1, Dt), valid (B, Lq+1) bool. Gathers, no loop over the batch.
    """
    b, lq, dt = text.shape
    n = text_valid.sum(1, keepdim=True)  # (B, 1) insertion index
    pos = torch.arange(lq + 1, device=text.device)[None]  # (1, Lq+1)
    src = (pos - (pos > n).long()).clamp(max=lq - 1)  # (B, Lq+1): j<n -> j, j>n -> j-1
    is_token = pos == n
    out = torch.where(is_token[:, :, None], token.to(text.dtype), text.gather(1, src[:, :, None].expand(b, -1, dt)))
    valid = is_token | text_valid.gather(1, src)
    return out, valid


class TemporalHead(nn.Module):
    """CG-DETR with the release's parameter names (`cg_model.` stripped)."""

    def __init__(self, cfg: TemporalHeadConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.transformer = CorrelationGuidedTransformer(cfg)
        self.position_embed = SinePositionEmbedding(d)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.txt_position_embed_size, d, cfg.input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)  # 0: foreground, 1: background
        self.token_type_embeddings = nn.Embedding(2, d)  # 0: text, 1: video
        nn.init.normal_(self.token_type_embeddings.weight, std=0.02)
        self.query_embed = nn.Embedding(cfg.num_queries, 2)  # anchors (centre, width) before sigmoid
        self.input_txt_proj = input_projection(cfg.text_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.input_vid_proj = input_projection(cfg.video_dim, d, cfg.n_input_proj, cfg.input_dropout)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.global_rep_token = nn.Parameter(torch.randn(cfg.total_prompts, d))
        self.global_rep_pos = nn.Parameter(torch.randn(1, d))
        self.moment_rep_token = nn.Parameter(torch.randn(d))
        self.moment_rep_pos = nn.Parameter(torch.randn(d))
        self.dummy_rep_token = nn.Parameter(torch.randn(cfg.num_dummies, d))
        self.dummy_rep_pos = nn.Parameter(torch.randn(cfg.num_dummies, d))
        self.sent_rep_token = nn.Parameter(torch.randn(d))
        self.sent_rep_pos = nn.Parameter(torch.randn(d))
        self.txt_proj_linear = LinearLayer(cfg.text_dim, d, dropout=0.1, relu=True)  # stored, unused
        # The release builds these two with 8 heads whatever `nheads` is: `aux_encoder_heads`.
        self.txtproj_encoder = Encoder(cfg.dummy_layers, d, cfg.aux_encoder_heads, cfg.ffn_dim, cfg.dropout)
        self.scls_encoder = Encoder(cfg.sent_layers, d, cfg.aux_encoder_heads, cfg.ffn_dim, cfg.dropout)

    def _check_inputs(self, text_feats: torch.Tensor, text_mask: torch.Tensor, video_feats: torch.Tensor,
                      video_mask: torch.Tensor, prompt_token: torch.Tensor) -> None:
        cfg = self.cfg
        if text_feats.ndim != 3 or text_feats.shape[-1] != cfg.text_dim:
            raise InputError(f"text_feats: expected (B, Lq, {cfg.text_dim}), got {tuple(text_feats.shape)}")
        b, lq = text_feats.shape[:2]
        if not 1 <= lq <= cfg.max_text_len:
            raise InputError(f"text_feats: {lq} tokens, the temporal head takes 1..{cfg.max_text_len}")
        if tuple(text_mask.shape) != (b, lq):
            raise InputError(f"text_mask: expected ({b}, {lq}), got {tuple(text_mask.shape)}")
        if video_feats.ndim != 3 or video_feats.shape[0] != b or video_feats.shape[-1] != cfg.video_dim:
            raise InputError(f"video_feats: expected ({b}, Lv, {cfg.video_dim}), got {tuple(video_feats.shape)}")
        if tuple(video_mask.shape) != tuple(video_feats.shape[:2]):
            raise InputError(f"video_mask: expected {tuple(video_feats.shape[:2])}, got {tuple(video_mask.shape)}")
        if tuple(prompt_token.shape) != (b, 1, cfg.text_dim):
            raise InputError(f"prompt_token: expected ({b}, 1, {cfg.text_dim}), got {tuple(prompt_token.shape)}")

    def _heads(self, mem: _Memory) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> logits (L, B, Q, 2), spans (L, B, Q, 2), saliency (B, Lv)."""
        logits = self.class_embed(mem.hidden)
        spans = (self.span_embed(mem.hidden) + inverse_sigmoid(mem.references)).sigmoid()
        saliency = (self.saliency_proj1(mem.clips) * self.saliency_proj2(mem.global_token)[:, None]).sum(-1)
        return logits, spans, saliency / math.sqrt(self.cfg.hidden_dim)

    def forward(self, text_feats: torch.Tensor, text_mask: torch.Tensor, video_feats: torch.Tensor,
                video_mask: torch.Tensor, prompt_token: torch.Tensor, relevant_clips: torch.Tensor | None = None,
                video_ids: Sequence[str] | None = None) -> TemporalHeadOutput:
        """Ground the query in time.

        text_feats   (B, Lq, Dt) float  query token features, valid tokens first, Lq <= max_text_len
        text_mask    (B, Lq) bool/0-1   valid text tokens
        video_feats  (B, Lv, Dv) float  clip features (+ 2 TEF channels: clip start/end as video fractions)
        video_mask   (B, Lv) bool/0-1   valid clips, valid first
        prompt_token (B, 1, Dt) float   the LLM's final-norm hidden state at the task token
        relevant_clips (B, Lv) float    training only: saliency labels, > 0 inside the ground-truth moment
        video_ids    B strings          training only: enables the negative-pair pass (sample b with b+1's text)
        """
        self._check_inputs(text_feats, text_mask, video_feats, video_mask, prompt_token)
        nd = self.cfg.num_dummies
        video_valid = video_mask.bool()
        text, text_valid = insert_task_token(text_feats, text_mask.bool(), prompt_token)  # (B, Lt, Dt)
        b = text.shape[0]

        clips = self.input_vid_proj(video_feats) + self.token_type_embeddings.weight[1]  # (B, Lv, D)
        text = self.input_txt_proj(text) + self.token_type_embeddings.weight[0]  # (B, Lt, D)
        clip_pos = self.position_embed(video_valid).to(clips.dtype)  # (B, Lv, D)
        text_pos = torch.zeros_like(text)  # the release runs with use_txt_pos=False

        # Dummy encoder: [dummies | text] -> the dummies, now conditioned on the query.
        dummy_pos = self.dummy_rep_pos.to(text.dtype).expand(b, -1, -1)  # (B, Nd, D)
        dummy_valid = text_valid.new_ones(b, nd)
        encoded = self.txtproj_encoder(
            torch.cat([self.dummy_rep_token.expand(b, -1, -1), text], dim=1),
            torch.cat([dummy_pos, text_pos], dim=1),
            torch.cat([dummy_valid, text_valid], dim=1),
        )
        dummies = encoded[:, :nd]  # (B, Nd, D)
        keys = torch.cat([dummies, text], dim=1)  # (B, Nd+Lt, D)
        keys_valid = torch.cat([dummy_valid, text_valid], dim=1)
        keys_pos = torch.cat([dummy_pos, text_pos], dim=1)

        # Context: the average valid clip, detached (the release's "t2vidavg" token).
        context = (torch.where(video_valid[:, :, None], clips, 0).sum(1)
                   / video_valid.sum(1, keepdim=True).clamp(min=1)).detach()  # (B, D)

        mem = self.transformer(clips, video_valid, clip_pos, keys, keys_valid, keys_pos, context,
                               self.global_rep_token, self.global_rep_pos, self.query_embed.weight)
        logits, spans, saliency = self._heads(mem)
        out = TemporalHeadOutput(
            logits=logits[-1], spans=spans[-1], saliency=saliency, aux_logits=logits[:-1], aux_spans=spans[:-1],
            t2v_attention=mem.t2v_attention,
            t2v_saliency=(mem.t2v_attention[:, :, nd:] * text_valid[:, None]).sum(2).clamp(0, 1),
            dummy_tokens=dummies, global_tokens=self.global_rep_token, text_mask=keys_valid, video_mask=video_valid,
        )
        if relevant_clips is not None:
            self._moment_and_sentence(out, relevant_clips, clips, clip_pos, video_valid, text, text_pos, text_valid,
                                      dummies, dummy_pos)
        if video_ids is not None:
            self._negative_pairs(out, video_ids, clips, video_valid, clip_pos, keys, keys_valid, keys_pos, context)
        return out

    def _moment_and_sentence(self, out: TemporalHeadOutput, relevant_clips: torch.Tensor, clips: torch.Tensor,
                             clip_pos: torch.Tensor, video_valid: torch.Tensor, text: torch.Tensor,
                             text_pos: torch.Tensor, text_valid: torch.Tensor, dummies: torch.Tensor,
                             dummy_pos: torch.Tensor) -> None:
        """Training only: moment / non-moment tokens, sentence tokens and their clip-word similarity."""
        b = text.shape[0]
        ones = text_valid.new_ones(b, 1)
        sent = self.sent_rep_token.expand(b, 1, -1)
        sent_pos = self.sent_rep_pos.to(text.dtype).expand(b, 1, -1)
        words = self.scls_encoder(torch.cat([sent, text], 1), torch.cat([sent_pos, text_pos], 1),
                                  torch.cat([ones, text_valid], 1))  # (B, 1+Lt, D)
        dummy_words = self.scls_encoder(torch.cat([sent, dummies], 1), torch.cat([sent_pos, dummy_pos], 1),
                                        ones.expand(b, 1 + dummies.shape[1]))  # (B, 1+Nd, D)
        words_with_dummies = torch.cat([dummy_words[:, 1:], words[:, 1:]], dim=1)  # (B, Nd+Lt, D)

        relevant = relevant_clips.clamp(0, 1).bool()  # (B, Lv)
        moment, moment_clips = self.transformer.encode_moment(
            self.moment_rep_token, self.moment_rep_pos, clips, clip_pos, video_valid & relevant)
        non_moment, non_moment_clips = self.transformer.encode_moment(
            self.moment_rep_token, self.moment_rep_pos, clips, clip_pos, video_valid & ~relevant)
        out.moment_token, out.non_moment_token = moment, non_moment
        out.sentence_token, out.dummy_sentence_token = words[:, 0], dummy_words[:, 0]
        out.moment_to_text = moment_clips @ words_with_dummies.transpose(1, 2)  # (B, Lv, Nd+Lt)
        out.moment_mask = relevant
        out.moment_frames = torch.where(relevant[:, :, None], moment_clips, non_moment_clips)

    def _negative_pairs(self, out: TemporalHeadOutput, video_ids: Sequence[str], clips: torch.Tensor,
                        video_valid: torch.Tensor, clip_pos: torch.Tensor, keys: torch.Tensor,
                        keys_valid: torch.Tensor, keys_pos: torch.Tensor, context: torch.Tensor) -> None:
        """Training only: pair each video with the next sample's [dummies | text]; keep the pairs whose
        videos differ (`real_negative`) and record their saliency, which the loss pushes down."""
        if len(video_ids) != clips.shape[0]:
            raise InputError(f"video_ids: {len(video_ids)} ids for a batch of {clips.shape[0]}")
        shifted = list(video_ids[1:]) + list(video_ids[:1])
        real = torch.tensor([a != c for a, c in zip(video_ids, shifted, strict=True)], device=clips.device)
        out.real_negative = real
        if not bool(real.any()):
            return
        neg_keys = torch.roll(keys, -1, dims=0)[real]
        neg_valid = torch.roll(keys_valid, -1, dims=0)[real]
        mem = self.transformer(clips[real], video_valid[real], clip_pos[real], neg_keys, neg_valid, keys_pos[real],
                               context[real], self.global_rep_token, self.global_rep_pos, self.query_embed.weight)
        out.saliency_neg = self._heads(mem)[2]
        nd = self.cfg.num_dummies
        out.t2v_saliency_neg = (mem.t2v_attention[:, :, nd:] * neg_valid[:, None, nd:]).sum(2).clamp(0, 1)


def decode_windows(output: TemporalHeadOutput, duration_s: float, clip_len_s: float = 1.0,
                   batch_index: int = 0, snap: bool = True) -> list[list[float]]:
    """Moments of one sample as [[start_s, end_s, score], ...], best first, as the release post-processes:
    score = softmax(logits)[..., 0]; (centre, width) -> (start, end) x duration, clamped to [0, duration];
    stable sort by score; every value rounded to 4 decimals; times rounded to multiples of `clip_len_s`
    (`snap=False` skips that last step: the head's own resolution, for comparing backends)."""
    if duration_s <= 0 or clip_len_s <= 0:
        raise InputError(f"decode_windows: duration_s ({duration_s}) and clip_len_s ({clip_len_s}) must be > 0")
    scores = output.logits[batch_index].float().softmax(-1)[:, 0]  # (Q,)
    cw = output.spans[batch_index].float()
    windows = torch.stack([cw[:, 0] - 0.5 * cw[:, 1], cw[:, 0] + 0.5 * cw[:, 1]], dim=1) * duration_s
    windows = windows.clamp(0, duration_s)
    order = torch.sort(scores, descending=True, stable=True).indices
    rows = [[float(f"{v:.4f}") for v in row] for row in torch.cat([windows, scores[:, None]], 1)[order].tolist()]
    if not snap:
        return rows
    times = torch.round(torch.tensor([r[:2] for r in rows]) / clip_len_s) * clip_len_s
    return [t + [float(f"{r[2]:.4f}")] for t, r in zip(times.tolist(), rows, strict=True)]


def decode_saliency(output: TemporalHeadOutput, batch_index: int = 0) -> list[float]:
    """Saliency of one sample's valid clips, in fp16 precision as the release reports it."""
    valid = output.video_mask[batch_index]
    return output.saliency[batch_index][valid].half().tolist()


def to_release(sd: StateDict) -> StateDict:
    """Our names -> the release's names relative to `cg_model.` (the same: identity)."""
    return dict(sd)


def from_release(sd: StateDict) -> StateDict:
    """The release's names relative to `cg_model.` -> ours (the same: identity)."""
    return dict(sd)
