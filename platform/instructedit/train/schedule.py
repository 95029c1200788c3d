"""The hypernetwork's learning-rate schedule: a pure function of the step.

Nothing of it is stored: the loop sets every Adam group's lr from (base lr, step) before each
update, so a run resumed from state.pt at step k (whatever lr its optimizer state carries, also
one written before schedules existed) continues exactly the uninterrupted run's schedule.
"""

from __future__ import annotations

import math

from ..config import TrainConfig


def lr_factor(step: int, tc: TrainConfig) -> float:
    """Multiplier of the base lr for the update that takes the editor from `step` completed steps
    to step + 1: linear warm-up to 1 over warmup_steps, then `lr_decay` from 1 at the end of the
    warm-up to min_lr_ratio at max_steps."""
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    if tc.lr_decay == "none":
        return 1.0
    span = max(1, tc.max_steps - tc.warmup_steps)
    progress = min(1.0, (step - tc.warmup_steps) / span)
    shape = 1.0 - progress if tc.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * shape
