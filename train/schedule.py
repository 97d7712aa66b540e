"""What the stage-0 pretrainings share: the learning-rate schedule (linear warm-up, then cosine to a floor)
and the summary they return."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np


def warmup_cosine(warmup_steps: int, steps: int, floor: float = 0.0) -> Callable[[int], float]:
    """Factor on the peak rate at `step` (for LambdaLR): (step + 1) / warmup_steps while warming up, then a
    cosine from 1 to `floor` at `steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    return factor


def loss_summary(losses: Sequence[float], start_time: float) -> dict:
    """{steps, seconds (since `start_time`, a perf_counter reading), loss_first, loss_last}: the losses'
    means over the first and the last 10% of steps."""
    tenth = max(1, len(losses) // 10)
    return {"steps": len(losses), "seconds": time.perf_counter() - start_time,
            "loss_first": float(np.mean(losses[:tenth])), "loss_last": float(np.mean(losses[-tenth:]))}
