"""``resume=<run dir>``: continue a run in its own directory, from its ``last.ckpt``, with its own config.

``conf/hydra/default.yaml`` points ``hydra.run.dir`` at the resumed run (``${coalesce:${resume},...}``), so the
TensorBoard events, checkpoints and ``run.json`` keep going in the same place. The config is the run's own
``config.yaml``; only ``key=value`` overrides (e.g. ``trainer.max_epochs=20`` to extend it) may be added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from faceattr.errors import UserError


def coalesce(*values: Any) -> Any:
    """The first value that is not None/empty (the ``${coalesce:a,b}`` resolver)."""
    return next((value for value in values if value not in (None, "")), None)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("coalesce"):
        OmegaConf.register_new_resolver("coalesce", coalesce)


def resumed_config(run_dir: str | Path, overrides: list[str], group_choices: set[str]) -> DictConfig:
    """The config to resume ``run_dir`` with: its saved config, ``ckpt_path`` = its last checkpoint, plus the
    ``key=value`` ``overrides`` (other than ``resume`` itself)."""
    run_dir = Path(run_dir).expanduser()
    saved, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for path in (saved, last):
        if not path.is_file():
            raise UserError(f"resume={run_dir}: missing {path}; give a run dir made by train.py that saved a checkpoint")
    extra = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra."))]
    groups = [o for o in extra if o.split("=", 1)[0].lstrip("+~") in group_choices]
    if groups or any(o.startswith("ckpt_path=") for o in extra):
        raise UserError(
            f"resume={run_dir} takes the run's own config; drop {', '.join(groups) or 'ckpt_path'} "
            "(only key=value changes such as trainer.max_epochs=20 can be added)"
        )
    cfg = OmegaConf.load(saved)
    cfg.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in extra]))
    cfg.ckpt_path = str(last)
    cfg.resume = str(run_dir)
    cfg.paths.output_dir = str(run_dir)
    return cfg
