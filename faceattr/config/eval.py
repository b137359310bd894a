"""The schema of ``conf/eval.yaml`` (``eval_schema``), which Hydra composes onto: every key's type and what its value
must be. Every value, and what it means, is in the YAML (the fields here are ``MISSING``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from faceattr.constraints import BATCH_SIZE, WORKERS, between, one_of, setting


def _threshold_or_calibrated(value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() == "calibrated":
            return True
        try:
            value = float(value)
        except ValueError:
            return False
    return between(0, 1)(value)


@dataclass
class EvalDataConfig:
    root: Optional[str] = setting(MISSING, problem="expected a path or null")
    num_workers: Optional[int] = WORKERS.field(MISSING, optional=True)
    eval_batch_size: Optional[int] = BATCH_SIZE.field(MISSING, optional=True)


@dataclass
class EvalConfig:
    ckpt: str = setting(MISSING, check=lambda v: v.strip() != "", problem="expected a .ckpt file, run dir or sweep dir")
    split: str = setting(MISSING, check=one_of(("test", "valid")), problem="expected one of test, valid")
    # A number or the word calibrated: OmegaConf has no union of float and str, so the check says which.
    thresholds: Any = setting(
        MISSING, check=_threshold_or_calibrated, problem="expected a number in [0, 1] (e.g. 0.5) or calibrated"
    )
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    # null = Male and Young where the data has both; [] = off; a list = those attribute columns.
    groups: Optional[list[str]] = setting(
        MISSING, problem="expected null, [] or a list of attribute columns, e.g. [Male,Young]"
    )
    output_dir: Optional[str] = setting(MISSING, problem="expected a path or null")
    tensorboard: bool = MISSING
