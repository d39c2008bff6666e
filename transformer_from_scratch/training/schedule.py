"""The learning-rate schedule: linear warm-up, then cosine decay to a floor.

A pure function of the step, so resuming needs no scheduler state.
"""

import math


def learning_rate(step: int, *, peak: float, floor: float, warmup: int, total: int) -> float:
    """The rate for ``step`` (0-based): ``peak * (step+1)/warmup`` during warm-up, then a
    half cosine from ``peak`` down to ``floor`` at ``total`` (Loshchilov & Hutter 2017)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return floor
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
