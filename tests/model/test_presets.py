"""The torch-free list of configuration names the commands check against agrees with the model's own."""

import pytest

from tpo.errors import ConfigError
from tpo.model import config, presets


def test_presets_agree_with_the_model_config():
    """`tpo.model.presets` (torch-free) and `tpo.model.config` (what loads a config) accept the same names."""
    assert presets.CONFIG_DIR == config.CONFIG_DIR and presets.preset_names() == config.preset_names()
    for name in presets.preset_names():
        presets.check_config(name)
        config.load_config(name)
    with pytest.raises(ConfigError, match="choose one of small, tiny, videochat-tpo"):
        presets.check_config("huge")
    with pytest.raises(ConfigError, match="choose one of small, tiny, videochat-tpo"):
        config.load_config("huge")


def test_a_json_file_is_accepted_and_a_missing_one_refused(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text("{}")
    presets.check_config(str(path))
    with pytest.raises(ConfigError, match=r"^--config '.*absent.json': unknown config"):
        presets.check_config(str(tmp_path / "absent.json"))
