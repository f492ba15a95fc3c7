"""The learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def learning_rate(step: int, *, peak: float, warmup_steps: int, total_steps: int,
                  min_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warmup rises linearly to `peak` at step warmup_steps - 1 (never 0, so the first step
    learns); then a half cosine falls to `peak * min_ratio` at the last step.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 1:
        return peak
    progress = min(1.0, (step - warmup_steps) / (decay_steps - 1))
    floor = peak * min_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
