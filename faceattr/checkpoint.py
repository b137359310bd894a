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


def check_checkpoint_fits(ckpt_path: str | Path, model: Any) -> None:
    """A checkpoint to resume from (``ckpt_path=``) must load and be a faceattr checkpoint of the same backbone,
    attributes and input size as the configured ``model`` (a LightningModule, read through its ``hparams``)."""
    try:
        saved = read_checkpoint(Path(ckpt_path))["hyper_parameters"]
    except UserError as exc:
        raise UserError(f"ckpt_path={ckpt_path} is not a loadable checkpoint: {exc}") from None
    for key in REQUIRED_HPARAMS:
        if saved.get(key) != model.hparams.get(key):
            raise UserError(
                f"ckpt_path={ckpt_path} was trained with {key}={saved.get(key)} but the config has "
                f"{key}={model.hparams.get(key)}; use the run's own settings (or resume=<run dir>)"
            )
