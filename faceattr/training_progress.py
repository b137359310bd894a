"""Training progress: Lightning's side of the rule in ``faceattr/progress.py`` (a bar on a terminal, lines otherwise).

:func:`progress_bar` (conf/callbacks/default.yaml's ``callbacks.progress_bar``) gives Lightning's TQDM bar when
stdout is a terminal, else :class:`EpochLines`: one line per training epoch and one per test (or stand-alone
validation) run, on global rank zero only, through the progress logger. Both are ``ProgressBar`` callbacks:
Lightning allows one per Trainer and adds its own TQDM bar only when there is none. Kept apart from
``faceattr/progress.py`` because it needs Lightning, which batch prediction does not load.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from faceattr.errors import UserError
from faceattr.progress import format_metrics, is_terminal, log

MODES = ("auto", "bar", "lines")


def progress_bar(mode: str = "auto", refresh_rate: int = 10) -> ProgressBar:
    """The progress callback for ``mode``: ``bar`` (Lightning's TQDM bar redrawn every ``refresh_rate`` batches),
    ``lines`` (one log line per epoch, ``EpochLines``) or ``auto``: the bar when its output stream is a terminal.

    Lightning's TQDM bar writes to ``sys.stdout`` (lightning/pytorch/callbacks/progress/tqdm_progress.py), so
    ``auto`` asks whether stdout is a terminal: ``python train.py > log.txt`` gets lines even when stderr is not
    redirected.
    """
    if mode not in MODES:
        raise UserError(f"callbacks.progress_bar.mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "bar" or (mode == "auto" and is_terminal(sys.stdout)):
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return EpochLines()


class EpochLines(ProgressBar):
    """Log one line per training epoch (and per test run), never per batch; on global rank zero only.

    The epoch line shows the metrics logged with ``prog_bar=True`` (``trainer.progress_bar_metrics``). Validation
    runs inside the training epoch, before ``on_train_epoch_end``, so the line carries that epoch's validation
    figures; in an epoch without validation (``check_val_every_n_epoch`` > 1) it leaves out the validation metrics,
    which ``progress_bar_metrics`` would still hold from an earlier epoch.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._fit_started = 0.0
        self._epoch_started = 0.0
        self._eval_started = 0.0
        # Names the validation loop logs (learned from the first validation), and whether one ran since the last line.
        self._validation_keys: set[str] = set()
        self._keys_before_validation: set[str] = set()
        self._validated = False

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _active(self, trainer: L.Trainer) -> bool:
        return self._enabled and trainer.is_global_zero

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()
        self._validated = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_started = time.monotonic()
        if not trainer.sanity_checking:  # the sanity check's metrics are discarded before training starts
            self._keys_before_validation = set(trainer.progress_bar_metrics)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.VALIDATING:  # trainer.validate(): a run of its own
            self._log_evaluation(trainer, "validation", trainer.num_val_batches)
            return
        self._validation_keys |= set(trainer.progress_bar_metrics) - self._keys_before_validation
        self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        metrics = dict(trainer.progress_bar_metrics)
        if not self._validated:
            metrics = {name: value for name, value in metrics.items() if name not in self._validation_keys}
        now = time.monotonic()
        epochs = trainer.max_epochs
        epoch = f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs is not None and epochs > 0 else "")
        summary = f"{epoch}: step {trainer.global_step}, {now - self._epoch_started:.1f} s"
        summary += f" ({now - self._fit_started:.1f} s in all)"
        log.info("%s%s", summary, f" | {format_metrics(metrics)}" if metrics else "")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_started = time.monotonic()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_evaluation(trainer, "test", trainer.num_test_batches)

    def _log_evaluation(self, trainer: L.Trainer, name: str, batches: list[int | float]) -> None:
        if not self._active(trainer):
            return
        metrics = trainer.progress_bar_metrics
        count = sum(batches)
        summary = f"{name}: {count:g} batch{'' if count == 1 else 'es'}, {time.monotonic() - self._eval_started:.1f} s"
        log.info("%s%s", summary, f" | {format_metrics(metrics)}" if metrics else "")
