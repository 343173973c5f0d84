"""Learning-rate schedules: a pure function of the step (0 for the first mini-batch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("inverse_time", "constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    """``lr_at(step)`` for one of SCHEDULES, after an optional linear warm-up.

    inverse_time: lr / (1 + decay * step)            (the report's decay, per mini-batch step)
    constant:     lr
    step:         lr * gamma ** (step // step_size)
    cosine:       lr * (1 + cos(pi * progress)) / 2, progress from 0 to 1 over total_steps
    """

    kind: str = "inverse_time"
    lr: float = 0.1
    decay: float = 0.0
    total_steps: int = 1
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.decay < 0 or self.warmup_steps < 0 or self.step_size < 1 or self.total_steps < 1:
            raise ValueError("decay and warm-up must be >= 0, step size and total steps >= 1")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        t = step - self.warmup_steps
        if self.kind == "inverse_time":
            return self.lr / (1.0 + self.decay * t)
        if self.kind == "step":
            return self.lr * self.gamma ** (t // self.step_size)
        if self.kind == "cosine":
            progress = min(1.0, t / max(1, self.total_steps - self.warmup_steps))
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr
