"""Config mistakes caught before they become deep tracebacks: wrong value types (faceattr/config_schema.py),
constructors that reject a value, and checkpoints that do not fit the configured model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from faceattr.config_schema import check_config
from faceattr.errors import UserError


def check_types(cfg: DictConfig) -> None:
    """Raise a UserError naming the first setting of a training config with a wrong type or value (its schema is
    faceattr.config_schema.TrainConfig)."""
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


def check_checkpoint_fits(ckpt_path: str | Path, model: Any) -> None:
    """A checkpoint to resume from must load (see ``read_checkpoint``) and be a faceattr checkpoint of the same
    backbone, attributes and input size."""
    from faceattr.export.build import read_checkpoint

    try:
        saved = read_checkpoint(Path(ckpt_path))["hyper_parameters"]
    except UserError as exc:
        raise UserError(f"ckpt_path={ckpt_path} is not a loadable checkpoint: {exc}") from None
    for key in ("backbone", "attributes", "image_size"):
        if saved.get(key) != model.hparams.get(key):
            raise UserError(
                f"ckpt_path={ckpt_path} was trained with {key}={saved.get(key)} but the config has "
                f"{key}={model.hparams.get(key)}; use the run's own settings (or resume=<run dir>)"
            )
