import json

import pytest

from tpo.errors import CheckpointError, ConfigError
from tpo.model.config import config_from_dict, load_config, preset_names
from tpo.model.demo import demo_video
from tpo.model.temporal_features import ExternalEncoders, clip_frame_indices, tef


def test_presets_load_by_exact_name_and_tiny_changes_only_what_it_lists():
    assert {"tiny", "videochat-tpo"} <= set(preset_names())
    full, tiny = load_config("videochat-tpo"), load_config("tiny")
    assert full.llm.hidden_size == 4096 and full.num_visual_tokens == 96 and full.vision.num_blocks == 23
    assert tiny.llm.hidden_size == 256 and tiny.temporal_head.text_dim == tiny.llm.hidden_size
    assert tiny.temporal_head.video_dim == tiny.vision.width + 2
    assert tiny.track_prompt_dim == 3 * tiny.mask_head.hidden_size
    assert tiny.pixel_mean == full.pixel_mean


def test_bad_configs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hiden_size'\] for LLMConfig"):
        config_from_dict({"llm": {"hiden_size": 12}})
    with pytest.raises(ConfigError, match=r"config.vision.depth: expected an integer, got '4'"):
        config_from_dict({"vision": {"depth": "4"}})
    with pytest.raises(ConfigError, match="temporal_features"):
        config_from_dict({"temporal_features": "psychic"})
    with pytest.raises(ConfigError, match="position_table"):
        config_from_dict({"vision": {"position_table": "3d"}})
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "llm": {"num_layers": 2}}))
    assert load_config(path).llm.num_layers == 2
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


def test_external_temporal_encoders_say_which_weights_are_missing():
    with pytest.raises(CheckpointError, match="InternVideo2-CLIP-1B.*InternVL-C"):
        ExternalEncoders()(demo_video(), "when does the dog run?")


def test_clip_sampling_and_tef():
    clips = clip_frame_indices(num_frames_total=40, fps=8.0, clip_len_s=1.0, frames_per_clip=8)
    assert len(clips) == 5 and clips[0] == list(range(8)) and clips[-1] == list(range(32, 40))
    t = tef(4)
    assert t.tolist() == [[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]
