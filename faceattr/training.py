"""The training entry: compose -> instantiate -> fit -> test with the best checkpoint -> record the run.

``train(cfg)`` is what ``python train.py`` runs (see ``train.py``). It returns the best monitored score so that
Hydra sweepers (Optuna) can optimize it, and leaves in the run directory: ``checkpoints/``, ``tensorboard/``,
``config.yaml`` (resolved) and ``run.json`` (status, scores, best checkpoint, timings) that sweep summaries read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.tensorboard.summary import hparams as hparams_summary

import faceattr.sweep  # noqa: F401 - registers ${multirun_job_name:} (conf/logger/tensorboard.yaml)
from faceattr.atomic import write_json, write_text
from faceattr.best_metric import BestMetric
from faceattr.config_checks import build, check_checkpoint_fits, check_types
from faceattr.errors import UserError
from faceattr.numbers import finite_or_none
from faceattr.resume import register_resolvers, resumed_config

register_resolvers()  # ${coalesce:...} (conf/hydra/default.yaml), before Hydra composes

RUN_RECORD = "run.json"
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
    "val/auroc_best", "val/auroc", "val/acc", "val/bacc", "val/loss",
    "test/auroc", "test/acc", "test/bacc", "test/f1", "test/loss",
)


def resolve_trainer_config(trainer_cfg: DictConfig) -> DictConfig:
    """Map the Lightning 1.x ``gpus`` flag to ``accelerator``/``devices`` and check a GPU request is satisfiable."""
    trainer_cfg = trainer_cfg.copy()
    with open_dict(trainer_cfg):
        gpus = trainer_cfg.pop("gpus", None)
        if gpus is not None:
            count = len(gpus) if isinstance(gpus, (list, tuple)) or OmegaConf.is_list(gpus) else int(gpus)
            trainer_cfg.accelerator = "gpu" if count else "cpu"
            trainer_cfg.devices = gpus if count else 1
    if str(trainer_cfg.get("accelerator")) in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        devices = trainer_cfg.get("devices")
        wanted = len(devices) if OmegaConf.is_list(devices) else (int(devices) if str(devices).isdigit() else 1)
        if available == 0:
            raise UserError(
                f"the config asks for {wanted} GPU(s) (trainer.gpus/trainer.accelerator) but no CUDA device is "
                "visible; drop trainer.gpus (CPU training) or run on a machine with a GPU"
            )
        if wanted > available:
            raise UserError(f"the config asks for {wanted} GPUs but only {available} are visible; lower trainer.gpus")
    return trainer_cfg


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a ``{name: {_target_: ...}}`` group (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


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
            writer = logger.experiment._get_file_writer()
            for summary in (experiment, start, end):
                writer.add_summary(summary)
            # Close: the logger was finalized after testing, and the next job of a sweep may run in this process.
            logger.experiment.close()


def record_run(path: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically: readers (summaries, export) never see half a record."""
    write_json(path, record)


def train(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return the best value of ``cfg.monitor.metric``."""
    started = time.time()
    if cfg.get("resume"):
        hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
        cfg = resumed_config(
            cfg.resume,
            list(hydra_cfg.overrides.task) if hydra_cfg else [],
            set(hydra_cfg.runtime.choices) if hydra_cfg else set(),
        )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    check_types(cfg)
    trainer_cfg = resolve_trainer_config(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")  # fail fast on a bad data folder, before building the model
    model = build(
        cfg.model,
        "model",
        attributes=list(datamodule.attribute_names),
        image_size=list(datamodule.image_size),
        crop=None if datamodule.crop is None else list(datamodule.crop),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        _convert_="all",
    )
    best_metric = BestMetric(cfg.monitor.metric, cfg.monitor.mode)
    callbacks = [*instantiate_group(cfg.get("callbacks")), best_metric]
    loggers = instantiate_group(cfg.get("logger"))
    if cfg.get("ckpt_path"):
        check_checkpoint_fits(cfg.ckpt_path, model)
    trainer: L.Trainer = build(trainer_cfg, "trainer", callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = finite_or_none(checkpoint.best_model_score) if checkpoint is not None and best_path else None
    if best_score is None:
        best_score = best_metric.best  # the best epoch's value, also without a ModelCheckpoint
    test_metrics: dict[str, float] = {}
    if cfg.get("test"):
        # The best checkpoint when there is one; else the weights at the end of training.
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: v for k, v in (results[0] if results else {}).items() if k.count("/") == 1}

    if trainer.is_global_zero:
        log_hparams_with_metrics(trainer.loggers, flat_hparams(cfg))
        record_run(
            output_dir / RUN_RECORD,
            {
                "status": "completed",
                "backbone": cfg.model.backbone,
                "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
                "monitor": cfg.monitor.metric,
                "best_score": best_score,
                "best_checkpoint": best_path or None,
                "val_auroc_best": finite_or_none(model.best_val_auroc),
                # Which weights test/* come from: the best checkpoint, or null for the final in-memory weights.
                "tested_checkpoint": (best_path or None) if test_metrics else None,
                "test": {k: finite_or_none(v) for k, v in test_metrics.items()},
                # Per attribute on the test split: positive rate, accuracy, balanced accuracy, AUROC, F1, threshold.
                "test_per_attribute": model.results.get("test", {}).get("per_attribute", {}) if test_metrics else {},
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "num_parameters": model.num_parameters,
                "wall_time_s": round(time.time() - started, 1),
            },
        )
        score = "n/a" if best_score is None else f"{best_score:.4f}"
        print(f"\nrun dir:         {output_dir}")
        print(f"best checkpoint: {best_path or 'none saved'} ({cfg.monitor.metric}={score})")
        if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers):
            print(f"tensorboard:     tensorboard --logdir {output_dir}")
    return best_score
