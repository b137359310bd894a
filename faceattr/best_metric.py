"""The best value of the monitored metric over a run's validation epochs: the run's one best score.

``train()`` always adds this callback, whatever else is configured (``callbacks.model_checkpoint=null`` turns
ModelCheckpoint off), so the run record's ``best_score`` and the value returned to sweepers are the best epoch's,
never merely the last one's. Its state is checkpointed, so a resumed run keeps the best of its first part.

It also logs the best so far as ``<metric>_best`` (``val/auroc_best`` with the default monitor) for TensorBoard, the
other loggers and the progress output. When: Lightning runs the callbacks' ``on_validation_epoch_end`` before the
module's, which logs the metric, and forbids ``self.log`` in ``on_validation_end``, where the epoch's value is
known. So the value is read in ``on_validation_end`` (as ModelCheckpoint does) and logged in ``on_train_epoch_end``,
which comes after the epoch's validation and before its figures are collected; a progress callback placed after this
one shows it in the same epoch.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from faceattr.numbers import finite_or_none

SUFFIX = "_best"


class BestMetric(Callback):
    """Track the best value (``mode`` min or max) of ``metric`` at the end of each validation epoch; log it as
    ``<metric>_best`` at the end of each training epoch once there is one."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.metric = metric
        self.mode = mode
        self.best: float | None = None

    @property
    def state_key(self) -> str:
        return f"BestMetric{{metric={self.metric}}}"

    @property
    def logged_name(self) -> str:
        return self.metric + SUFFIX

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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best is not None:
            pl_module.log(self.logged_name, self.best, prog_bar=True, sync_dist=True)  # the same on every rank

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = finite_or_none(state_dict.get("best"))
