"""Model configuration: one dataclass per component, composed into `TPOConfig`.

Presets are JSON files in `model/configs/` (chosen by exact name: `videochat-tpo`, `tiny`, ...);
a user's own JSON file with the same sections works too. Each default lives in exactly one place:
the dataclass defaults are the released VideoChat-TPO dimensions, and a preset file lists only what
it changes. Unknown keys and wrong types are refused with a `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpo.errors import ConfigError

from .mask_head import MaskHeadConfig
from .temporal_head import TemporalHeadConfig

CONFIG_DIR = Path(__file__).parent / "configs"

@dataclass
class VisionEncoderConfig:
    """UMT video ViT (the release's `vit_l14` entry: actually ViT-L/16)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 1024
    depth: int = 24            # as the release's config says; `depth + return_index + 1` blocks are built
    return_index: int = -2     # -> 23 blocks for the release
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_frames: int = 16       # frames per clip fed to the MLLM
    pos_table_frames: int = 4  # the sinusoid table is made for 4 frames and interpolated in time
    # "1d": the release's sinusoid over flattened (frame, row, col) positions (kept for videochat-tpo: fidelity);
    # "2d": time, row and column in separate channels (`vision_encoder.separable_position_table`). A buffer,
    # not a weight: the choice changes no graph, only the constant the export bakes in.
    position_table: str = "1d"
    norm_eps: float = 1e-6
    final_norm_eps: float = 1e-12  # `vision_layernorm`, applied by the top module

    @property
    def num_blocks(self) -> int:
        return self.depth + self.return_index + 1

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass
class ConnectorConfig:
    """BLIP-2 Q-Former (BERT-base shaped) compressing vision tokens into LLM-space tokens."""

    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    num_query_tokens: int = 32
    num_extra_query_tokens: int = 64
    vocab_size: int = 30523          # BERT vocab + the release's "[DEC]" token; unused without text
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12

    @property
    def num_queries(self) -> int:
        return self.num_query_tokens + self.num_extra_query_tokens


@dataclass
class LLMConfig:
    """Mistral decoder with LoRA (the release: Mistral-7B-Instruct-v0.3 dimensions)."""

    vocab_size: int = 32007          # 32000 SentencePiece pieces + the 7 task tokens
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
    )


@dataclass
class TaskAdapterConfig:
    """The small MLPs between the LLM's hidden state and the heads."""

    box_hidden: int | None = None      # loc_encoder/loc_decoder hidden width; None -> hidden_size // 2
    track_prompt_tokens: int = 3       # SAM2 sparse prompt: 2 box corners + 1 pad point


@dataclass
class TPOConfig:
    name: str = "videochat-tpo"
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    adapters: TaskAdapterConfig = field(default_factory=TaskAdapterConfig)
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    temporal_head: TemporalHeadConfig = field(default_factory=TemporalHeadConfig)
    # Where the temporal head's features come from: "external" (the release's InternVideo2-CLIP and
    # InternVL-C encoders, not in the checkpoint) or "internal" (this model's own vision encoder and
    # token embeddings; what `tiny` uses so the temporal path runs end to end).
    temporal_features: str = "external"
    temporal_clip_s: float = 1.0       # seconds of video per temporal-head position
    temporal_clip_frames: int = 8      # frames sampled inside each clip (8 fps for 1 s clips)
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tokenizer: str = "videochat-tpo"   # folder name under model/assets/tokenizers or a path

    def __post_init__(self) -> None:
        if self.vision.position_table not in ("1d", "2d"):
            raise ConfigError(f"config {self.name!r}: vision.position_table must be '1d' or '2d', "
                              f"got {self.vision.position_table!r}")
        if self.temporal_features not in ("external", "internal"):
            raise ConfigError(
                f"config {self.name!r}: temporal_features must be 'external' or 'internal', "
                f"got {self.temporal_features!r}"
            )

    @property
    def num_visual_tokens(self) -> int:
        """Slots of the video placeholder in the prompt (96 for the release)."""
        return self.connector.num_queries

    @property
    def box_hidden(self) -> int:
        return self.adapters.box_hidden or self.llm.hidden_size // 2

    @property
    def track_prompt_dim(self) -> int:
        return self.adapters.track_prompt_tokens * self.mask_head.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> TPOConfig:
    """A preset by exact name, or a JSON file with the same sections."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        source = str(path)
    elif (CONFIG_DIR / f"{name_or_path}.json").exists():
        path = CONFIG_DIR / f"{name_or_path}.json"
        source = f"preset {name_or_path!r}"
    else:
        known = ", ".join(preset_names())
        raise ConfigError(f"unknown config {str(name_or_path)!r}: choose one of {known} or give a .json file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    return config_from_dict(data, source)


def config_from_dict(data: dict[str, Any], source: str = "config") -> TPOConfig:
    return _build(TPOConfig, data, source)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        if inner is not None:
            return tuple(_coerce(inner, v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
