"""Learning-rate schedules shared by the model worlds' trainers (mini LLM, SAM)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
