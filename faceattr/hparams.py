"""TensorBoard's HParams record of a run: its key settings and overrides against its final metrics."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torch.utils.tensorboard.writer import FileWriter

HPARAM_KEYS = (
    "model.backbone",
    "model.pretrained",
    "optimizer._target_",
    "optimizer.lr",
    "optimizer.weight_decay",
    "scheduler._target_",
    "data.batch_size",
    "data.image_size",
    "data.limit",
    "data.val_limit",
    "trainer.max_epochs",
    "trainer.precision",
    "seed",
)
HPARAM_METRICS = (
    "val/auroc_best",
    "val/auroc",
    "val/acc",
    "val/bacc",
    "val/loss",
    "test/auroc",
    "test/acc",
    "test/bacc",
    "test/f1",
    "test/loss",
)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The hyper-parameters shown in TensorBoard's HParams tab: key settings plus whatever the sweep overrode."""
    keys = list(HPARAM_KEYS)
    choices: dict[str, Any] = {}
    if HydraConfig.initialized():
        keys += [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task if "=" in o]
        choices = dict(HydraConfig.get().runtime.choices)
    params = {}
    for key in dict.fromkeys(keys):
        # A config-group override (model=resnet34, experiment=quickstart) shows the option's name, not its content.
        value = choices[key] if key in choices else OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = str(OmegaConf.to_container(value, resolve=True))
        params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


@rank_zero_only
def log_hparams_with_metrics(loggers: list[Logger], params: dict[str, Any]) -> None:
    """Write TensorBoard's HParams record for this run.

    The HParams tab shows, for each metric tag listed here, the last value of that scalar in the same run, so the
    scalars already logged (val/auroc_best, test/auroc, ...) fill the table without a second, conflicting copy.
    """
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            experiment, start, end = hparams_summary(params, {name: 0.0 for name in HPARAM_METRICS})
            # A writer of its own, in the logger's folder (a new event file, read by TensorBoard as the same run):
            # the logger's writer was closed when it was finalized after testing. Closed at once, as the next job
            # of a sweep may run in this process.
            writer = FileWriter(logger.log_dir)
            for summary in (experiment, start, end):
                writer.add_summary(summary)
            writer.close()
