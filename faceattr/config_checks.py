"""Config mistakes caught before they become deep tracebacks: wrong value types (faceattr/config/) and
constructors that reject a value. (A checkpoint that does not fit the configured model: faceattr/checkpoint.py.)"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from faceattr.config.check import check_config
from faceattr.errors import UserError


def check_types(cfg: DictConfig) -> None:
    """Raise a UserError naming the first setting of a training config with a wrong type or value (its schema is
    faceattr.config.train.TrainConfig)."""
    check_config(cfg, "train")


def build(cfg: DictConfig, what: str, **kwargs: Any) -> Any:
    """``instantiate(cfg, **kwargs)``; a constructor rejecting a configured value becomes one line naming ``what``."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, UserError) or not isinstance(cause, (TypeError, ValueError)):
            raise
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise UserError(f"the {what} config has a bad value: {first} (check the {what}.* overrides)") from None
