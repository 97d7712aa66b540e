"""The connector: a BLIP-2 Q-Former that compresses vision tokens into LLM-space tokens.

96 learned queries (32 + 64 "extra") cross-attend to the normalised vision tokens; `project_up`
maps the 768-d Q-Former output to the LLM width. Built on transformers' `Blip2QFormerModel`
(`use_qformer_text_input=True` keeps the text FFN each released layer stores). The release keeps
BERT's word and position embeddings in its checkpoint although no text enters the Q-Former at
inference; `text_embeddings` holds them so every stored tensor has a home.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from .config import ConnectorConfig
from .release_names import Rules, StateDict, rename

# our name -> release name (relative to the top level: the connector's tensors sit there in the release)
TO_RELEASE: Rules = [
    (r"^text_embeddings\.", "qformer.bert.embeddings."),
    (r"^qformer\.layernorm\.", "qformer.bert.embeddings.LayerNorm."),
    (r"^qformer\.encoder\.layer\.(\d+)\.attention\.attention\.", r"qformer.bert.encoder.layer.\1.attention.self."),
    (r"^qformer\.encoder\.layer\.(\d+)\.crossattention\.attention\.",
     r"qformer.bert.encoder.layer.\1.crossattention.self."),
    (r"^qformer\.encoder\.", "qformer.bert.encoder."),
]
FROM_RELEASE: Rules = [
    (r"^qformer\.bert\.embeddings\.LayerNorm\.", "qformer.layernorm."),
    (r"^qformer\.bert\.embeddings\.", "text_embeddings."),
    (r"^qformer\.bert\.encoder\.layer\.(\d+)\.attention\.self\.", r"qformer.encoder.layer.\1.attention.attention."),
    (r"^qformer\.bert\.encoder\.layer\.(\d+)\.crossattention\.self\.",
     r"qformer.encoder.layer.\1.crossattention.attention."),
    (r"^qformer\.bert\.encoder\.", "qformer.encoder."),
]
RELEASE_PREFIXES = ("query_tokens", "extra_query_tokens", "qformer.", "project_up.")


def to_release(sd: StateDict) -> StateDict:
    return rename(sd, TO_RELEASE)


def from_release(sd: StateDict) -> StateDict:
    return rename(sd, FROM_RELEASE)


class QFormerTextEmbeddings(nn.Module):
    """BERT's text embeddings as stored by the release; unused without text input."""

    def __init__(self, cfg: ConnectorConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.width)
        self.register_buffer(
            "position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0), persistent=True
        )


def qformer_config(cfg: ConnectorConfig, vision_width: int) -> Blip2QFormerConfig:
    return Blip2QFormerConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        cross_attention_frequency=cfg.cross_attention_frequency,
        encoder_hidden_size=vision_width,
        max_position_embeddings=cfg.max_position_embeddings,
        layer_norm_eps=cfg.layer_norm_eps,
        use_qformer_text_input=True,
        hidden_act="gelu",
        attn_implementation="sdpa",
    )


class Connector(nn.Module):
    """Vision tokens -> LLM-space visual tokens.

    forward(vision_tokens): [B, N, Dv] float (already through `vision_layernorm`);
    returns [B, Q, H] with Q = num_query_tokens + num_extra_query_tokens (96), H the LLM width.
    """

    def __init__(self, cfg: ConnectorConfig, vision_width: int, llm_width: int):
        super().__init__()
        self.cfg = cfg
        # BLIP-2 initialises the queries with N(0, 0.02); zeros would put the embedding LayerNorm at zero
        # variance, where its gradient is 1/sqrt(eps) = 1e6
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_query_tokens, cfg.width) * 0.02)
        self.extra_query_tokens = nn.Parameter(torch.randn(1, cfg.num_extra_query_tokens, cfg.width) * 0.02)
        self.text_embeddings = QFormerTextEmbeddings(cfg)
        self.qformer = Blip2QFormerModel(qformer_config(cfg, vision_width))
        self.project_up = nn.Linear(cfg.width, llm_width)

    def queries(self) -> torch.Tensor:
        return torch.cat([self.query_tokens, self.extra_query_tokens], dim=1)  # (1, Q, 768)

    def forward(self, vision_tokens: torch.Tensor) -> torch.Tensor:
        b = vision_tokens.shape[0]
        queries = self.queries().expand(b, -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=vision_tokens).last_hidden_state
        return self.project_up(out[:, : queries.shape[1]].to(self.project_up.weight.dtype))  # (B, Q, H)
