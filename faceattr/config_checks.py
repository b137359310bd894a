"""Config mistakes caught before they become deep tracebacks: wrong value types, constructors that reject a value,
and checkpoints that do not fit the configured model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceattr.errors import UserError

# Numeric knobs a user types on the command line, and what they must be.
NUMBER_KEYS: dict[str, tuple[type, ...]] = {
    "seed": (int,),
    "data.batch_size": (int,),
    "data.num_workers": (int,),
    "data.limit": (int,),
    "data.val_limit": (int,),
    "trainer.max_epochs": (int,),
    "trainer.min_epochs": (int,),
    "trainer.check_val_every_n_epoch": (int,),
    "trainer.log_every_n_steps": (int,),
    "optimizer.lr": (int, float),
    "optimizer.weight_decay": (int, float),
    "optimizer.momentum": (int, float),
    "model.drop_rate": (int, float),
}


def check_types(cfg: DictConfig) -> None:
    """Raise a UserError naming the first numeric knob whose value has the wrong type."""
    for key, types in NUMBER_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            kind = "an integer" if types == (int,) else "a number"
            raise UserError(f"{key}={value!r}: expected {kind}")


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
