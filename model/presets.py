"""The configuration names a command accepts, without importing torch.

`tpo.model.config` imports the model's building blocks (and so torch); the commands need only the names,
to list them in their help and to refuse an unknown one before anything heavy loads. The rule is
`load_config`'s: an existing `.json` file, else a preset in `configs/` by exact name.
"""

from __future__ import annotations

from pathlib import Path

from tpo.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"   # the folder tpo.model.config reads (a test checks)


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def check_config(name_or_path: str | Path, flag: str = "--config") -> None:
    """ConfigError (one line, naming `flag` and the presets) unless `load_config` would find it."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return
    if (CONFIG_DIR / f"{name_or_path}.json").exists():
        return
    raise ConfigError(f"{flag} {str(name_or_path)!r}: unknown config; choose one of {', '.join(preset_names())} "
                      "or give a .json file")
