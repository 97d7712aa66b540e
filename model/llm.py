"""The language model: transformers' Mistral wrapped by peft LoRA, unmerged as the release stores it.

With the peft wrapper in place, `lm.state_dict()` names are exactly the release's
(`base_model.model.model.layers.N.self_attn.q_proj.base_layer.weight`, `lora_A.default.weight`, ...),
so loading is a plain copy. `merged_llm` folds the LoRA deltas into the base weights for export.
"""

from __future__ import annotations

import copy
import warnings

from peft import LoraConfig, PeftModelForCausalLM, get_peft_model
from transformers import MistralConfig, MistralForCausalLM

from .config import LLMConfig


def mistral_config(cfg: LLMConfig) -> MistralConfig:
    return MistralConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        sliding_window=None,          # Mistral v0.3 has none; a window breaks ONNX past the window
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="sdpa",
    )


def build_llm(cfg: LLMConfig) -> PeftModelForCausalLM:
    """Mistral + LoRA (r, alpha, dropout and targets as configured), weights left as initialised."""
    base = MistralForCausalLM(mistral_config(cfg))
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        inference_mode=False,
    )
    with warnings.catch_warnings():
        # peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecated (FutureWarning on
        # every model build); nothing here uses gradient checkpointing, so that one warning is noise
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return get_peft_model(base, lora)


def merged_llm(lm: PeftModelForCausalLM) -> MistralForCausalLM:
    """A copy of the LLM with the LoRA deltas merged into the base weights (for export)."""
    return copy.deepcopy(lm).merge_and_unload()
