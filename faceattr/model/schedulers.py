"""Learning-rate schedules, stepped every optimizer step and sized by the trainer's step count.

:class:`WarmupCosine` is written here rather than composed from torch's ``SequentialLR(LinearLR, CosineAnnealingLR)``
because of what a resumed run needs: a checkpoint restores a torch scheduler planned for the old length, so a run
extended with ``resume=<run> trainer.max_epochs=<more>`` would follow the old cosine past its end, where
``CosineAnnealingLR`` climbs back to the peak. This one notices the new length when its state is loaded and re-plans
the rest of the decay (see :meth:`WarmupCosine.load_state_dict`), so the learning rate never rises after warm-up.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosine(LRScheduler):
    """Linear warm-up from ``start_factor`` x lr to lr over ``warmup_steps``, then a cosine decay to
    ``min_lr_ratio`` x lr at ``total_steps`` (and ``min_lr_ratio`` x lr after it).

    The decay is a cosine segment from ``(segment_start, segment_factor)`` to ``(total_steps, min_lr_ratio)``; it
    starts at ``(warmup_steps, 1.0)`` and is re-planned when a checkpoint of another length is loaded.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_lr_ratio: float = 0.01,
        start_factor: float = 1e-3,
    ) -> None:
        self.total_steps = max(int(total_steps), 2)
        self.warmup_steps = min(max(1, int(warmup_steps)), self.total_steps - 1)
        self.min_lr_ratio = float(min_lr_ratio)
        self.start_factor = float(start_factor)
        self.segment_start = self.warmup_steps
        self.segment_factor = 1.0
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of the configured lr."""
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr_ratio
        progress = (step - self.segment_start) / max(1, self.total_steps - self.segment_start)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.min_lr_ratio + (self.segment_factor - self.min_lr_ratio) * cosine

    def get_lr(self) -> list[float]:
        factor = self.factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved schedule; if this run plans another number of steps (an extended or shortened run), the
        decay continues from the learning rate reached at the saved step down to ``min_lr_ratio`` at the new end.
        A run resumed during warm-up keeps warming up, then decays over the new length."""
        planned_total = self.total_steps
        super().load_state_dict(state_dict)
        if planned_total != self.total_steps:
            step = self.last_epoch
            if step >= self.warmup_steps:
                self.segment_factor = self.factor(step)
                self.segment_start = step
            self.total_steps = max(planned_total, step + 1)


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01
) -> LRScheduler:
    """Linear warm-up from ~0 over ``warmup_fraction`` of the steps, then cosine decay to ``min_lr_ratio`` x lr."""
    total_steps = max(int(total_steps), 2)
    return WarmupCosine(optimizer, total_steps, int(total_steps * warmup_fraction), min_lr_ratio)
