"""The `small` preset: about a tenth of the released widths, consistent, and buildable."""

from __future__ import annotations

import pytest

from tpo.model.config import TPOConfig, load_config, preset_names


def test_small_is_a_preset_about_a_tenth_of_the_release():
    assert "small" in preset_names()
    small, full = load_config("small"), TPOConfig()
    ratios = {
        "vision width": small.vision.width / full.vision.width,
        "connector width": small.connector.width / full.connector.width,
        "llm width": small.llm.hidden_size / full.llm.hidden_size,
        "llm ffn": small.llm.intermediate_size / full.llm.intermediate_size,
        "hiera width": small.mask_head.hiera_embed_dim / full.mask_head.hiera_embed_dim,
        "temporal width": small.temporal_head.hidden_dim / full.temporal_head.hidden_dim,
    }
    for what, r in ratios.items():
        assert 0.08 <= r <= 0.17, f"{what}: {r:.3f} of the release"
    # the mask head's width is floored by SAM2's memory width (64); still a quarter of the release
    assert small.mask_head.hidden_size == small.mask_head.memory_dim == 64
    # released resolutions where they set the cost per token
    assert small.vision.image_size == full.vision.image_size and small.vision.patch_size == full.vision.patch_size


def test_small_is_internally_consistent():
    small = load_config("small")
    assert small.temporal_head.text_dim == small.llm.hidden_size            # token embeddings as text features
    assert small.temporal_head.video_dim == small.vision.width + 2          # vision features + 2 TEF
    assert small.temporal_features == "internal"
    assert small.temporal_clip_frames in (1, small.vision.num_frames)       # what the export supports
    assert small.llm.num_heads * small.llm.head_dim == small.llm.hidden_size


def test_small_builds_between_tiny_and_the_release():
    torch = pytest.importorskip("torch")
    from tpo.model.tpo_model import build_model

    torch.manual_seed(0)
    n = sum(p.numel() for p in build_model(load_config("small")).parameters())
    tiny = sum(p.numel() for p in build_model(load_config("tiny")).parameters())
    assert tiny < n < 100e6
