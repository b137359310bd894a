"""Median stopping for sweeps (Optuna's ``MedianPruner`` rule, read from the sweep dir): stop hopeless jobs early.

After each validation epoch ``e`` of a sweep job, the job's best monitored value so far is compared with the median
of the values that the *completed* jobs of the same sweep dir reached at epoch ``e``; when it is worse, training
stops (``trainer.should_stop``, as early stopping does), the best checkpoint so far is tested as usual, and the job's
``run.json`` says ``status: pruned`` (:mod:`faceattr.sweep.jobs` marks it). Each job keeps its per-epoch values in
``metric_history.json`` (:mod:`faceattr.sweep.history`), which is where the other jobs read them.

Why the sweep dir and not Optuna's study: hydra-optuna-sweeper 1.3 (optuna 2.10) gives the job no trial object to
``report``/``should_prune`` with. The rule is the same as ``optuna.pruners.MedianPruner``'s: nothing is pruned before
``n_startup_trials`` jobs have completed or within the first ``n_warmup_epochs`` epochs, and only completed jobs (not
pruned or failed ones) make the median. The sweeper still gets the pruned job's best value so far, and records the
trial as complete: pruned values are below the median, so the sampler learns that region is poor.

``conf/hparams_search/optuna.yaml`` turns it on (``callbacks.median_pruning``); in a single run it does nothing.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from faceattr.numbers import finite_or_none
from faceattr.run_record import Status, read_run_record
from faceattr.sweep.history import MetricHistory, describe, read_history, write_history

log = logging.getLogger(__name__)


def pruning_decision(
    history: MetricHistory, others: list[MetricHistory], epoch: int, n_startup_trials: int, n_warmup_epochs: int
) -> dict[str, Any] | None:
    """Why the job of ``history`` should stop at ``epoch`` (1-based), or None to go on.

    ``others``: the histories of the completed jobs to compare with. Pruned when the job's best value so far is worse
    than their median at ``epoch`` (strictly: a tie goes on).
    """
    best = history.best()
    if best is None or epoch <= n_warmup_epochs or len(others) < n_startup_trials:
        return None
    at_epoch = [other.values[epoch] for other in others if epoch in other.values]
    if not at_epoch:
        return None
    median = statistics.median(at_epoch)
    worse = best < median if history.mode == "max" else best > median
    if not worse:
        return None
    return {"epoch": epoch, "best": best, "median": median, "trials": len(at_epoch)}


def completed_histories(sweep_dir: Path, exclude: Path, metric: str) -> list[MetricHistory]:
    """The histories of ``metric`` of the jobs in ``sweep_dir`` (other than ``exclude``) whose run.json says
    completed."""
    histories = []
    for job in sorted(Path(sweep_dir).iterdir()) if Path(sweep_dir).is_dir() else []:
        if not job.is_dir() or job.resolve() == exclude.resolve():
            continue
        record = read_run_record(job)
        history = read_history(job) if record is not None and record.status is Status.COMPLETED else None
        if history is not None and history.metric == metric:
            histories.append(history)
    return histories


class MedianPruning(Callback):
    """Stop a sweep job whose best ``monitor`` so far is worse than the median of the completed jobs at that epoch.

    Args:
        run_dir: this job's directory (``${paths.output_dir}``); the other jobs are its siblings in the sweep dir.
        monitor: the metric compared (``${monitor.metric}``); mode: ``max`` or ``min`` (``${monitor.mode}``).
        n_startup_trials: prune nothing until this many jobs of the sweep dir have completed.
        n_warmup_epochs: prune nothing within a job's first this many epochs.
    """

    def __init__(
        self, run_dir: str, monitor: str, mode: str = "max", n_startup_trials: int = 5, n_warmup_epochs: int = 1
    ) -> None:
        from faceattr.sweep.jobs import is_multirun

        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.n_startup_trials = int(n_startup_trials)
        self.n_warmup_epochs = int(n_warmup_epochs)
        self.active = is_multirun()
        self.history = MetricHistory(monitor, mode)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # DDP ranks started by Lightning run the job as a single run: they follow rank 0 (a sweep job or not).
        self.active = bool(trainer.strategy.broadcast(self.active, src=0))
        if not self.active and trainer.is_global_zero:
            log.info("median pruning compares the jobs of a sweep (-m); a single run is not pruned")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        saved = read_history(self.run_dir)  # a resumed job keeps its epochs (and a decision taken before a kill)
        if saved is not None and saved.metric == self.monitor:
            self.history = saved
        if self.history.pruned is not None:
            log.info("this job was pruned (%s); not training further", describe(self.history.pruned, self.monitor))
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking:
            return
        value = finite_or_none(trainer.callback_metrics.get(self.monitor))
        decision = None
        if trainer.is_global_zero and value is not None and not math.isnan(value):
            epoch = trainer.current_epoch + 1
            self.history.values[epoch] = value
            others = completed_histories(self.run_dir.parent, self.run_dir, self.monitor)
            decision = pruning_decision(self.history, others, epoch, self.n_startup_trials, self.n_warmup_epochs)
            if decision is not None:
                self.history.pruned = decision
                log.info("job pruned: %s", describe(decision, self.monitor))
            write_history(self.run_dir, self.history)
        # Every rank stops together: the decision is rank 0's (the other jobs may finish between two ranks' reads).
        if trainer.strategy.broadcast(decision is not None, src=0):
            trainer.should_stop = True
