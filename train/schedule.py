"""Learning-rate schedule shared by the stage-0 pretrainings: linear warm-up, then cosine to a floor."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, steps: int, floor: float = 0.0) -> Callable[[int], float]:
    """Factor on the peak rate at `step` (for LambdaLR): (step + 1) / warmup_steps while warming up, then a
    cosine from 1 to `floor` at `steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    return factor
