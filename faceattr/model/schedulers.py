"""Learning-rate schedules built from torch's own schedulers, sized by the trainer's step count."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01
) -> LRScheduler:
    """Linear warm-up from ~0 over ``warmup_fraction`` of the steps, then cosine decay to ``min_lr_ratio`` x lr."""
    total_steps = max(int(total_steps), 2)
    warmup = min(max(1, int(total_steps * warmup_fraction)), total_steps - 1)
    base_lr = optimizer.param_groups[0]["lr"]
    return SequentialLR(
        optimizer,
        schedulers=[
            LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=total_steps - warmup, eta_min=base_lr * min_lr_ratio),
        ],
        milestones=[warmup],
    )
