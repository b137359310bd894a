"""``resume=<run dir>``: continue a run in its own directory, from its ``last.ckpt``, with its own config.

``conf/hydra/default.yaml`` points ``hydra.run.dir`` at the resumed run (``${coalesce:${resume},...}``), so the
TensorBoard events, checkpoints and ``run.json`` keep going in the same place. The config is the run's own
``config.yaml``; only ``key=value`` overrides (e.g. ``trainer.max_epochs=20`` to extend it) may be added. A
``last.ckpt`` that does not load (cut short by a crash of an older version, or damaged) is refused, and the run
resumes from the newest of its checkpoints that loads, saying so.

New run dirs are ``outputs/<date>/<time>-<id>``: ``${run_id:}`` (``faceattr/resolvers.py``) tells apart runs
started in the same second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from faceattr.checkpoint import checkpoint_problem, read_checkpoint
from faceattr.errors import UserError
from faceattr.layout import CHECKPOINT_DIR, LAST_CHECKPOINT, RUN_CONFIG

log = logging.getLogger(__name__)


def resume_checkpoint(run_dir: Path) -> Path:
    """``<run dir>/checkpoints/last.ckpt`` if it loads; else the newest checkpoint of the run that loads (by training
    step), with a warning; a UserError naming what was tried when none does."""
    checkpoints = run_dir / CHECKPOINT_DIR
    last = checkpoints / LAST_CHECKPOINT
    problem = checkpoint_problem(last) if last.is_file() else f"missing {last}"
    if problem is None:
        return last
    newest: tuple[tuple[int, int], Path] | None = None
    for path in sorted(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []:
        if path == last:
            continue
        try:
            state = read_checkpoint(path)
        except UserError:
            continue
        key = (int(state.get("global_step") or 0), int(state.get("epoch") or 0))
        if newest is None or key > newest[0]:
            newest = (key, path)
    if newest is None:
        raise UserError(
            f"resume={run_dir}: no checkpoint to resume from ({problem}; no other checkpoint in "
            f"{checkpoints} loads); start a new run"
        )
    (step, epoch), path = newest
    log.warning(
        "resume=%s: %s; resuming from %s instead (the newest checkpoint that loads: epoch %d, step %d)",
        run_dir,
        problem,
        path,
        epoch,
        step,
    )
    return path


def resumed_config(run_dir: str | Path, overrides: list[str], group_choices: set[str]) -> DictConfig:
    """The config to resume ``run_dir`` with: its saved config, ``ckpt_path`` = its last checkpoint, plus the
    ``key=value`` ``overrides`` (other than ``resume`` itself)."""
    run_dir = Path(run_dir).expanduser()
    saved = run_dir / RUN_CONFIG
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: missing {saved}; give a run dir made by train.py that saved a checkpoint")
    extra = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra."))]
    groups = [o for o in extra if o.split("=", 1)[0].lstrip("+~") in group_choices]
    if groups or any(o.startswith("ckpt_path=") for o in extra):
        raise UserError(
            f"resume={run_dir} takes the run's own config; drop {', '.join(groups) or 'ckpt_path'} "
            "(only key=value changes such as trainer.max_epochs=20 can be added)"
        )
    checkpoint = resume_checkpoint(run_dir)
    cfg = rebased(OmegaConf.load(saved), run_dir)
    cfg.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in extra]))
    cfg.ckpt_path = str(checkpoint)
    cfg.resume = str(run_dir)
    cfg.paths.output_dir = str(run_dir)
    return cfg


def rebased(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The saved (resolved) config of a run with every path inside the run's recorded directory moved into
    ``run_dir``, where the run is now: a run dir moved or copied elsewhere (another disk, another machine) keeps
    writing its checkpoints and events into itself, not into the directory it was first made in."""
    recorded = str(OmegaConf.select(cfg, "paths.output_dir", default="") or "").rstrip("/")
    here = str(Path(run_dir).resolve())
    if not recorded or recorded == here:
        return cfg

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, list):
            return [move(item) for item in value]
        if isinstance(value, str) and (value == recorded or value.startswith(recorded + "/")):
            return here + value[len(recorded) :]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(cfg, resolve=False)))
