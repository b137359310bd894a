"""The training entry: compose -> instantiate -> fit -> test with the best checkpoint -> record the run.

``train(cfg)`` is what ``python train.py`` runs (see ``train.py``, which prints its summary and returns the best
monitored score to Hydra's sweepers). It leaves in the run directory (``faceattr/layout.py``): ``checkpoints/``,
``tensorboard/``, ``config.yaml`` (resolved) and ``run.json`` (``faceattr/run_record.py``: status, best score, best
and tested checkpoints, the per-attribute test table, timings) that sweep summaries, eval and export read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from faceattr.atomic import write_text
from faceattr.best_metric import BestMetric
from faceattr.checkpoint import check_checkpoint_fits
from faceattr.config_checks import build, check_types
from faceattr.errors import UserError
from faceattr.hparams import flat_hparams, log_hparams_with_metrics
from faceattr.layout import RUN_CONFIG
from faceattr.numbers import finite_or_none
from faceattr.resolvers import register_resolvers
from faceattr.resume import resumed_config
from faceattr.run_record import RunRecord, Status


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


@dataclass
class TrainResult:
    """What a finished run reports: where it is, its best checkpoint and score, whether this process prints."""

    output_dir: Path
    best_checkpoint: str | None
    best_score: float | None
    monitor: str
    tensorboard: bool
    rank_zero: bool


def _resumed(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>``: the run's own config and last good checkpoint, plus the command line's key=value."""
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    return resumed_config(
        cfg.resume,
        list(hydra_cfg.overrides.task) if hydra_cfg else [],
        set(hydra_cfg.runtime.choices) if hydra_cfg else set(),
    )


def _build(
    cfg: DictConfig, trainer_cfg: DictConfig
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer, BestMetric]:
    """The data (checked first: a bad folder fails before the model is built), the model and the trainer."""
    datamodule = build(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build(
        cfg.model,
        "model",
        attributes=list(datamodule.attribute_names),
        image_size=list(datamodule.image_size),
        crop=None if datamodule.crop is None else list(datamodule.crop),
        jpeg_scaling=bool(getattr(datamodule, "jpeg_scaling", False)),
        # data.align=detect: the images were aligned by the detector, so the service detects faces for this model.
        face_alignment="detect" if getattr(datamodule, "align", "none") == "detect" else "celeba",
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        _convert_="all",
    )
    best_metric = BestMetric(cfg.monitor.metric, cfg.monitor.mode)
    # First: the progress callbacks' epoch line and bar show the <metric>_best it logs at the end of the epoch.
    callbacks = [best_metric, *instantiate_group(cfg.get("callbacks"))]
    loggers = instantiate_group(cfg.get("logger"))
    if cfg.get("ckpt_path"):
        check_checkpoint_fits(cfg.ckpt_path, model)
    # callbacks.progress_bar=null means no bar: otherwise Lightning would add its own (and it refuses
    # enable_progress_bar=False beside a progress-bar callback).
    extra = (
        {}
        if "enable_progress_bar" in trainer_cfg
        else {"enable_progress_bar": any(isinstance(callback, ProgressBar) for callback in callbacks)}
    )
    trainer = build(trainer_cfg, "trainer", callbacks=callbacks, logger=loggers or False, **extra)
    return datamodule, model, trainer, best_metric


def _completed_record(
    cfg: DictConfig,
    trainer: L.Trainer,
    model,
    best_path: str,
    best_score: float | None,
    test_metrics: dict[str, float],
    started: float,
) -> RunRecord:
    return RunRecord(
        status=Status.COMPLETED,
        backbone=cfg.model.backbone,
        overrides=list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        monitor=cfg.monitor.metric,
        best_score=best_score,
        best_checkpoint=best_path or None,
        tested_checkpoint=(best_path or None) if test_metrics else None,
        test={k: finite_or_none(v) for k, v in test_metrics.items()},
        test_per_attribute=model.results.get("test", {}).get("per_attribute", {}) if test_metrics else {},
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        num_parameters=model.num_parameters,
        wall_time_s=round(time.time() - started, 1),
    )


def train(cfg: DictConfig) -> TrainResult:
    """Train and test one configuration: resume? -> check -> build -> fit -> test the best -> record."""
    started = time.time()
    register_resolvers()  # idempotent; the entry script registered them before Hydra composed
    if cfg.get("resume"):
        cfg = _resumed(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    check_types(cfg)
    trainer_cfg = resolve_trainer_config(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model, trainer, best_metric = _build(cfg, trainer_cfg)

    if trainer.is_global_zero:
        write_text(output_dir / RUN_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = best_metric.best  # the best epoch's value, also without a ModelCheckpoint
    test_metrics: dict[str, float] = {}
    if cfg.get("test"):
        # The best checkpoint when there is one; else the weights at the end of training.
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        test_metrics = {k: v for k, v in (results[0] if results else {}).items() if k.count("/") == 1}

    if trainer.is_global_zero:
        log_hparams_with_metrics(trainer.loggers, flat_hparams(cfg))
        _completed_record(cfg, trainer, model, best_path, best_score, test_metrics, started).write(output_dir)
    tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
    return TrainResult(
        output_dir, best_path or None, best_score, cfg.monitor.metric, tensorboard, trainer.is_global_zero
    )
