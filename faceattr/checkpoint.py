"""A faceattr checkpoint on disk: the one check that it loads, for every reader (export, eval, ``ckpt_path=``,
``resume=``, ``model=<run>`` of predict).

A file that does not load is refused with one line naming it and saying what it is (empty, truncated, a pickle of
foreign code, a bare state_dict, another model's checkpoint). Loading is always ``weights_only=True``: no pickled
code runs. Finding the checkpoint a run or a sweep names is :mod:`faceattr.run_finder`; rebuilding the
LightningModule from one is :func:`faceattr.model.loading.load_module`.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from faceattr.errors import UserError

ZIP_MAGIC = b"PK\x03\x04"
#: What every faceattr checkpoint's ``hyper_parameters`` carry (the model to rebuild and what it was trained for).
REQUIRED_HPARAMS = ("backbone", "attributes", "image_size")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), at most ``limit`` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` (no pickled code runs), after checking that it is
    a faceattr (Lightning) checkpoint; a one-line UserError saying what the file is otherwise."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file")
    if not zipfile.is_zipfile(checkpoint):
        with open(checkpoint, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
        if not head:
            raise UserError(
                f"{checkpoint} is not a PyTorch checkpoint: the file is empty (a save cut short by a "
                "full disk or a crash?); use another checkpoint of the run"
            )
        if head == ZIP_MAGIC:
            raise UserError(
                f"{checkpoint} is truncated (an incomplete zip archive: a save cut short by a full disk "
                "or a crash); use another checkpoint of the run"
            )
        raise UserError(
            f"{checkpoint} is not a PyTorch checkpoint (torch.save writes a zip archive; this file is "
            "not one): pass a .ckpt written by train.py"
        )
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"a pickled {found.group(1)}" if found else "pickled objects"
        raise UserError(
            f"refusing to load {checkpoint}: it holds {what}, which weights_only loading does not allow (loading it "
            "unsafely could run code); faceattr checkpoints hold only tensors and plain values"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
        raise UserError(f"{checkpoint} is not a readable PyTorch checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict):
        raise UserError(
            f"{checkpoint} holds a {type(state).__name__}, not a Lightning checkpoint: pass a .ckpt written by train.py"
        )
    if "state_dict" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(
                f"{checkpoint} is a bare state_dict ({len(state)} tensor{'s' if len(state) != 1 else ''}), not a "
                "Lightning checkpoint: export needs the .ckpt written by train.py (it holds the model's "
                "hyper-parameters)"
            )
        keys = ", ".join(map(str, list(state)[:5])) or "none"
        raise UserError(
            f"{checkpoint} is not a Lightning checkpoint (no state_dict; keys: {keys}): pass a .ckpt "
            "written by train.py"
        )
    hparams = state.get("hyper_parameters") or {}
    missing = [key for key in REQUIRED_HPARAMS if key not in hparams]
    if missing:
        raise UserError(
            f"{checkpoint} is a Lightning checkpoint of another model (its hyper_parameters lack "
            f"{', '.join(missing)}): not a faceattr checkpoint from train.py"
        )
    return state


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` does not load as a faceattr checkpoint (the one line of :func:`read_checkpoint`), or None."""
    try:
        read_checkpoint(checkpoint)
    except UserError as exc:
        return str(exc)
    return None


def _kept(optimizer_state: dict[str, Any], with_buffers: bool = True) -> set[str]:
    """What an optimizer's state dict keeps: its settings per parameter group (``lr``, ``betas``, ``momentum``, ...)
    and, as ``state:<name>``, its buffers per parameter (``exp_avg``, ``momentum_buffer``, ...)."""
    groups = optimizer_state.get("param_groups") or [{}]
    buffers = list((optimizer_state.get("state") or {}).values())
    kept = set(groups[0]) - {"params"}
    return kept | {f"state:{name}" for name in (buffers[0] if buffers and with_buffers else {})}


def _probe(factory: Any) -> torch.optim.Optimizer:
    """The optimizer ``factory`` builds, on one parameter, after one step (so that it holds its buffers)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    parameter.grad = torch.zeros(1)
    optimizer = factory([{"params": [parameter], "weight_decay": 0.0}])
    optimizer.step()
    return optimizer


def _closest_optimizers(kept: set[str]) -> list[str]:
    """The ``torch.optim`` classes whose state keeps what is closest to ``kept`` (another torch version may add or
    drop a setting, so the match need not be exact)."""
    with_buffers = any(key.startswith("state:") for key in kept)
    scores: dict[str, float] = {}
    for cls in vars(torch.optim).values():
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            continue
        try:
            own = _kept(_probe(cls).state_dict(), with_buffers)
        except Exception:  # noqa: BLE001 - a class that needs arguments (or a closure) cannot be the match
            continue
        scores[cls.__name__] = len(kept & own) / max(len(kept | own), 1)
    best = max(scores.values(), default=0.0)
    return sorted(name for name, score in scores.items() if score == best and best > 0)


def _scheduler_keys(state: dict) -> set[str]:
    """A scheduler state's own settings (the private bookkeeping of torch's base class left out)."""
    return {key for key in state if not key.startswith("_")}


def _optimizer_problem(state: dict[str, Any], factory: Any, scheduler_factory: Any) -> str | None:
    """How the optimizer and LR scheduler ``state`` was saved with differ from the configured ones, or None."""
    saved = state.get("optimizer_states") or []
    if not saved:
        return "it holds the weights only (no optimizer state to resume); start from it with a new run instead"
    optimizer = _probe(factory)
    name = type(optimizer).__name__
    kept = _kept(saved[0])
    if kept != _kept(optimizer.state_dict(), any(key.startswith("state:") for key in kept)):
        closest = _closest_optimizers(kept)
        if name not in closest:
            return f"it was trained with the optimizer {' or '.join(closest) or 'unknown'} but the config has {name}"
    schedulers = state.get("lr_schedulers") or []
    if scheduler_factory is None:
        return "it was trained with an LR scheduler but the config has none (scheduler=none)" if schedulers else None
    scheduler = scheduler_factory(optimizer, total_steps=1)
    if not schedulers:
        return f"it was trained without an LR scheduler but the config has {type(scheduler).__name__}"
    if _scheduler_keys(schedulers[0]) != _scheduler_keys(scheduler.state_dict()):
        return f"it was trained with another LR scheduler than the config's {type(scheduler).__name__}"
    return None


def check_checkpoint_fits(ckpt_path: str | Path, model: Any) -> None:
    """A checkpoint to resume from (``ckpt_path=``) must load and be a faceattr checkpoint of the same backbone,
    attributes and input size as the configured ``model`` (a LightningModule, read through its ``hparams``), saved
    with the same kind of optimizer and LR scheduler as the model's (its ``optimizer_factory`` and
    ``scheduler_factory``): restoring another optimizer's state fails inside ``fit``."""
    try:
        state = read_checkpoint(Path(ckpt_path))
    except UserError as exc:
        raise UserError(f"ckpt_path={ckpt_path} is not a loadable checkpoint: {exc}") from None
    saved = state["hyper_parameters"]
    fix = "use the run's own settings (or resume=<run dir>)"
    for key in REQUIRED_HPARAMS:
        if saved.get(key) != model.hparams.get(key):
            raise UserError(
                f"ckpt_path={ckpt_path} was trained with {key}={saved.get(key)} but the config has "
                f"{key}={model.hparams.get(key)}; {fix}"
            )
    factory = getattr(model, "optimizer_factory", None)
    problem = None if factory is None else _optimizer_problem(state, factory, getattr(model, "scheduler_factory", None))
    if problem:
        raise UserError(f"ckpt_path={ckpt_path}: {problem}; {fix}")
