"""The schema of ``conf/train.yaml`` (``train_schema``): the types of its own keys, and of the knobs of its groups.

The groups (data, model, trainer, ...) are free-form ``_target_`` configs that take any constructor argument, so
their fields are ``Any`` here and Hydra composes whatever ``conf/<group>/<option>.yaml`` holds. The few knobs users
type values into (``data.batch_size``, ``trainer.max_epochs``, ``optimizer.lr``, ...) are typed by the ``*Knobs``
dataclasses each group field names (:func:`free_form`); faceattr.config.check checks them after composing, and on a
resumed run's saved config.yaml alike. Every value is in the YAML: the fields here are ``MISSING``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from faceattr.constraints import (
    BATCH_SIZE,
    DROP_RATE,
    EPOCHS,
    EVERY_N,
    FRACTION,
    IMAGE_COUNT,
    LEARNING_RATE,
    LOG_EVERY_N_STEPS,
    MIN_EPOCHS,
    NON_NEGATIVE,
    SEED,
    WORKERS,
    at_least,
    one_of,
    setting,
)

#: Field metadata: the field is a free-form config group; its value is the dataclass typing its knobs (or None).
FREE_FORM = "free_form"


def free_form(knobs: type | None = None, default: Any = MISSING) -> Any:
    """A field for a free-form config group (any key); ``knobs`` types the keys users type values into."""
    return dataclasses.field(default=default, metadata={FREE_FORM: knobs})


@dataclass
class MonitorConfig:
    metric: str = MISSING
    mode: str = setting(MISSING, check=one_of(("min", "max")), problem="expected min or max")


@dataclass
class DataKnobs:
    batch_size: int = BATCH_SIZE.field(MISSING)
    eval_batch_size: Optional[int] = BATCH_SIZE.field(MISSING, optional=True)
    num_workers: int = WORKERS.field(MISSING)
    limit: Optional[int] = IMAGE_COUNT.field(MISSING, optional=True)
    val_limit: Optional[int] = IMAGE_COUNT.field(MISSING, optional=True)
    seed: Optional[int] = SEED.field(MISSING, optional=True)
    skip_corrupt: Optional[bool] = MISSING
    # A folder for the pre-decoded image cache (faceattr/data/cache.py), or null.
    cache: Optional[str] = MISSING
    # Decode JPEGs at a reduced DCT scale (decode_scale in faceattr/preprocess.py).
    jpeg_scaling: Optional[bool] = MISSING
    # k-fold cross-validation (faceattr/data/splits.py): the number of folds (null = off) and the validation fold;
    # that the fold is below the number of folds is the datamodule's check.
    folds: Optional[int] = setting(MISSING, check=at_least(2), problem="expected null or an integer >= 2 (folds)")
    fold: Optional[int] = setting(MISSING, check=at_least(0), problem="expected an integer >= 0 (below data.folds)")
    # Attribute columns whose value combinations the training sampler balances (faceattr/data/sampling.py).
    balance_groups: Optional[list[str]] = MISSING
    # Face alignment of the training images (faceattr/data/face_align.py).
    align: Optional[str] = setting(MISSING, check=one_of(("none", "detect")), problem="expected none or detect")
    # data=folder: the CSV, the made split's ratios and its record (faceattr/data/folder.py, splits.py).
    labels: Optional[str] = MISSING
    split_ratios: Optional[list[float]] = setting(
        MISSING,
        check=lambda v: len(v) == 3 and all(x > 0 for x in v) and abs(sum(v) - 1) <= 1e-6,
        problem="expected three positive fractions for train, valid and test that sum to 1, e.g. [0.8,0.1,0.1]",
    )
    split_record: Optional[str] = MISSING


@dataclass
class TrainerKnobs:
    max_epochs: Optional[int] = EPOCHS.field(MISSING, optional=True)
    min_epochs: Optional[int] = MIN_EPOCHS.field(MISSING, optional=True)
    check_val_every_n_epoch: Optional[int] = EVERY_N.field(MISSING, optional=True)
    log_every_n_steps: Optional[int] = LOG_EVERY_N_STEPS.field(MISSING, optional=True)


@dataclass
class OptimizerKnobs:
    lr: Optional[float] = LEARNING_RATE.field(MISSING, optional=True)
    weight_decay: Optional[float] = NON_NEGATIVE.field(MISSING, optional=True)
    momentum: Optional[float] = FRACTION.field(MISSING, optional=True)


@dataclass
class ModelKnobs:
    drop_rate: Optional[float] = DROP_RATE.field(MISSING, optional=True)


@dataclass
class TrainConfig:
    seed: Optional[int] = SEED.field(MISSING, optional=True)
    ckpt_path: Optional[str] = MISSING
    resume: Optional[str] = MISSING
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    test: bool = MISSING
    data: Any = free_form(DataKnobs)
    model: Any = free_form(ModelKnobs)
    optimizer: Any = free_form(OptimizerKnobs)
    trainer: Any = free_form(TrainerKnobs)
    paths: Any = free_form()
    # Options that may hold nothing (scheduler=none, callbacks=none): the group is then null.
    scheduler: Any = free_form(default=None)
    callbacks: Any = free_form(default=None)
    logger: Any = free_form(default=None)
    # experiment=backbone_sweep's settings per backbone (null in every other config).
    backbone_settings: Any = free_form(default=None)
