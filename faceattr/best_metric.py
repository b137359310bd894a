"""The best value of the monitored metric over a run's validation epochs, whatever callbacks are configured.

``ModelCheckpoint`` knows the best score only when it is configured (``callbacks.model_checkpoint=null`` turns it
off); ``train()`` always adds this callback, so the run record and the value returned to sweepers are the best
epoch's, never merely the last one's. Its state is checkpointed, so a resumed run keeps the best of its first part.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from faceattr.numbers import finite_or_none


class BestMetric(Callback):
    """Track the best value (``mode`` min or max) of ``metric`` at the end of each validation epoch."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.metric = metric
        self.mode = mode
        self.best: float | None = None

    @property
    def state_key(self) -> str:
        return f"BestMetric{{metric={self.metric}}}"

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the epoch's metrics reach callback_metrics (as ModelCheckpoint does); not during the sanity check.
        if trainer.sanity_checking:
            return
        value = finite_or_none(trainer.callback_metrics.get(self.metric))
        if value is not None and not math.isnan(value) and self.is_better(value):
            self.best = value

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
