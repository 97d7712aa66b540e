"""The recipe's settings (`RecipeConfig`) and names (`HEADS`, `STAGES`): torch-free (as the task registry
`tpo.contract.tasks` is), so `tpo-train` can show its defaults in --help and refuse a wrong argument before
torch and the model are imported. `tpo.train.recipe` re-exports all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpo.contract.tasks import TASKS
from tpo.errors import ConfigError

HEADS = tuple(TASKS)        # the released tasks' heads, in the registry's order (the default --heads)
STAGES = (0, 1, 2, 3)
# what a connector slot describes in stage 0 (train/connector_pretrain.py): a colour-shape category, a cell of the
# frame, or both (cell slots first, then category slots)
CONNECTOR_LAYOUTS = ("category", "cell", "both")
SLOT_ATTENTION_LAYOUTS = ("cell", "both")     # the layouts with a slot per cell, which the slot attention needs


@dataclass
class RecipeConfig:
    """The tiny recipe. Every default lives here; the CLI reads them from this dataclass."""

    config: str = "tiny"
    seed: int = 0
    train_clips: int = 200          # synthetic clips in the training pool
    queries_per_task: int = 4       # queries of each task per training clip (SceneConfig.queries_per_task)
    batch_size: int = 16            # samples per step, taken as whole clips (all queries of a clip share its frames)
    stage0_steps: int = 250         # 0: mask head pretraining steps (the first recipe.STAGE0_IMAGE_FRAC on images)
    vision_steps: int = 400         # 0: vision encoder pretraining steps (train/vision_pretrain.py)
    connector_steps: int = 0        # 0: connector representation steps (train/connector_pretrain.py)
    connector_attention: bool = False  # stage 0: also supervise where each slot's query looks (connector_pretrain)
    connector_layout: str = "category"  # stage 0: what a connector slot describes (CONNECTOR_LAYOUTS)
    vision_category_weight: float = 0.0  # stage 0: weight of the vision part's per-token category loss
    vision_lr: float = 2e-3         # stage 0: the vision part's peak learning rate
    vision_pool_clips: int = 100    # stage 0: clips the vision part draws its frames from
    stage1_steps: int = 200
    stage2_steps: int = 100
    stage3_steps: int = 400
    lr: float = 1e-3
    weight_decay: float = 0.02
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05       # cosine to 5% of the peak, as the release
    grad_clip: float = 1.0
    temporal_weight: float = 0.05   # the release's factor on CG-DETR's set criterion
    freeze_vision: bool = False     # True: stages 1-3 leave the stage-0 vision encoder as it is
    freeze_connector: bool = False  # True: stages 1-3 leave the stage-0 connector as it is
    slot_attention: float = 0.0     # stage 3: weight of the region/track task tokens' attention loss towards the
                                    # asked object's cell slot (train/slot_attention.py; cell slots only)
    heads: tuple[str, ...] = HEADS
    stages: tuple[int, ...] = STAGES
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        bad = [h for h in self.heads if h not in TASKS]
        if bad or not self.heads:
            raise ConfigError(f"--heads: unknown head(s) {bad}; choose from {list(TASKS)}")
        if self.connector_layout not in CONNECTOR_LAYOUTS:
            raise ConfigError(f"--connector-layout: must be one of {list(CONNECTOR_LAYOUTS)}, "
                              f"got {self.connector_layout!r}")
        if self.slot_attention < 0:
            raise ConfigError(f"--slot-attention {self.slot_attention}: must be >= 0")
        if self.slot_attention and self.connector_layout not in SLOT_ATTENTION_LAYOUTS:
            raise ConfigError(f"--slot-attention needs --connector-layout {' or '.join(SLOT_ATTENTION_LAYOUTS)} "
                              "(a slot per cell of the frame)")
        bad_stages = [s for s in self.stages if s not in STAGES]
        if bad_stages or not self.stages:
            raise ConfigError(f"--stages: unknown stage(s) {bad_stages}; choose from {list(STAGES)}")

    def slot_attention_at(self, stage: int) -> bool:
        """Whether `stage` adds the slot attention loss (and so runs the LLM with attention weights)."""
        return stage == 3 and self.slot_attention > 0

    def steps(self, stage: int) -> int:
        return getattr(self, f"stage{stage}_steps")
