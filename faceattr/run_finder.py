"""What ``ckpt=`` (export, eval) or ``model=<run>`` (predict) names: a ``.ckpt`` file, a run dir (its best
checkpoint) or a sweep dir (the best job's).

A run dir (``outputs/<date>/<time>-<id>/`` from ``train.py``) holds ``run.json``, ``config.yaml`` and
``checkpoints/``; a sweep dir (``multirun/<date>/<time>-<id>/``) holds one run dir per job (``0/``, ``1/``, ...).
The best checkpoint of a run is ``run.json``'s ``best_checkpoint``; without ``run.json`` (a run still going, or
killed) it is the ModelCheckpoint state inside ``last.ckpt``, then the score in the checkpoint names. The best job
of a sweep is the one with the best ``best_score`` of the monitored metric (``monitor.metric``/``monitor.mode`` of
its config).

Every pick is verified (:func:`faceattr.checkpoint.read_checkpoint`): a checkpoint file given as ``ckpt=`` that
does not load is refused with one line naming it; when a run's best checkpoint does not load (truncated by a crash
or a full disk), the run's next checkpoint that loads is used instead (the best scored one by name, else
``last.ckpt``, else the newest) and the reason says so. :func:`check_run_config` refuses a checkpoint whose run's
saved config says another model (a checkpoint copied from another run).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from faceattr.checkpoint import checkpoint_problem, read_checkpoint
from faceattr.errors import UserError
from faceattr.layout import CHECKPOINT_DIR, LAST_CHECKPOINT, RUN_CONFIG, RUN_RECORD
from faceattr.numbers import finite_or_none
from faceattr.preprocess import size_pair
from faceattr.run_record import RunRecord, read_run_record

SCORE_IN_NAME = re.compile(r"(?:auroc|score)[=_-]?(-?\d+(?:\.\d+)?)")


@dataclass
class Resolved:
    """The checkpoint picked, the run it belongs to (if any) and why it was picked."""

    checkpoint: Path
    run_dir: Path | None
    reason: str
    score: float | None = None
    monitor: str | None = None
    run_record: RunRecord | None = None
    run_config: dict[str, Any] = field(default_factory=dict)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run_config(run_dir: Path | None) -> dict[str, Any]:
    """The resolved training config saved by ``train.py`` (empty if there is none or it cannot be read)."""
    if run_dir is None or not (run_dir / RUN_CONFIG).is_file():
        return {}
    try:
        data = yaml.safe_load((run_dir / RUN_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def is_run_dir(path: Path) -> bool:
    return (path / RUN_RECORD).is_file() or (path / CHECKPOINT_DIR).is_dir()


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir a checkpoint file lives in (``<run>/checkpoints/x.ckpt``), if it is one."""
    parent = checkpoint.parent
    run = parent.parent
    if parent.name == CHECKPOINT_DIR and ((run / RUN_RECORD).is_file() or (run / RUN_CONFIG).is_file()):
        return run
    return None


def monitor_of(run_dir: Path, record: RunRecord | None = None) -> tuple[str, str]:
    """(metric, mode) the run was monitored by: its config's ``monitor``, else ``record`` (default: its run.json),
    else val/auroc max."""
    config = read_run_config(run_dir).get("monitor") or {}
    record = read_run_record(run_dir) if record is None else record
    metric = str(config.get("metric") or (record.monitor if record is not None else None) or "val/auroc")
    mode = str(config.get("mode") or "max")
    if mode not in ("min", "max"):
        raise UserError(f"{run_dir / RUN_CONFIG}: monitor.mode={mode!r} must be min or max")
    return metric, mode


def _relocate(recorded: str | None, run_dir: Path) -> Path | None:
    """A recorded checkpoint path as a file of ``run_dir``: the same name in its ``checkpoints/`` (the run dir may
    have been moved or copied since), else the recorded path itself."""
    if not recorded:
        return None
    path = Path(recorded)
    for candidate in (run_dir / CHECKPOINT_DIR / path.name, run_dir / path if not path.is_absolute() else None, path):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _checkpoint_state(last: Path) -> tuple[str | None, float | None]:
    """(best_model_path, best_model_score) of the ModelCheckpoint state saved in ``last``."""
    try:
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable or foreign file: no state
        return None, None
    for key, value in (state.get("callbacks") or {}).items():
        if "ModelCheckpoint" in str(key) and isinstance(value, dict) and value.get("best_model_path"):
            return str(value["best_model_path"]), finite_or_none(value.get("best_model_score"))
    return None, None


def _scored(found: list[Path]) -> list[tuple[float, Path]]:
    """(score in the name, path) of the checkpoints whose names carry a score."""
    scored = []
    for path in found:
        match = SCORE_IN_NAME.search(path.stem) if path.name != LAST_CHECKPOINT else None
        if match:
            scored.append((float(match.group(1)), path))
    return scored


def _fallbacks(found: list[Path], mode: str) -> list[tuple[Path, float | None, str]]:
    """(path, score, why) of a run's checkpoints in the order to fall back on when its best does not load: by the
    score in their names, then ``last.ckpt``, then the newest."""
    ranked = sorted(_scored(found), key=lambda item: item[0], reverse=mode == "max")
    order = [(path, score, f"the best score in the checkpoint names ({score:.4f})") for score, path in ranked]
    order += [(path, None, "the run's latest state") for path in found if path.name == LAST_CHECKPOINT]
    order += [
        (path, None, "the newest checkpoint") for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
    ]
    first: dict[Path, tuple[Path, float | None, str]] = {}
    for item in order:
        first.setdefault(item[0], item)
    return list(first.values())


def best_of_run(run_dir: Path) -> Resolved:
    """The best checkpoint of one run dir that loads (see the module doc for the order of the sources)."""
    resolved = _recorded_best(run_dir)
    problem = checkpoint_problem(resolved.checkpoint)
    if problem is None:
        return resolved
    checkpoints = run_dir / CHECKPOINT_DIR
    broken = resolved.checkpoint.resolve()
    found = [path for path in sorted(checkpoints.glob("*.ckpt")) if path.resolve() != broken]
    for path, score, why in _fallbacks(found, monitor_of(run_dir, resolved.run_record)[1]):
        if checkpoint_problem(path) is None:
            resolved.reason = f"the run's best checkpoint does not load ({problem}); using {path.name} instead: {why}"
            resolved.checkpoint, resolved.score = path, score
            return resolved
    raise UserError(f"{problem}; no other checkpoint in {checkpoints} loads either")


def _recorded_best(run_dir: Path) -> Resolved:
    """The best checkpoint of one run dir as recorded (run.json, the state in last.ckpt, the names), unverified."""
    record = read_run_record(run_dir)
    metric, mode = monitor_of(run_dir, record)
    config = read_run_config(run_dir)
    checkpoints = run_dir / CHECKPOINT_DIR
    found = sorted(checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []

    best = _relocate(record.best_checkpoint, run_dir) if record is not None else None
    if best is not None:
        score = record.best_score
        shown = "n/a" if score is None else f"{score:.4f}"
        return Resolved(
            best,
            run_dir,
            f"best checkpoint of the run by {metric} ({mode}) = {shown}, from {RUN_RECORD}",
            score,
            metric,
            record,
            config,
        )
    if not found:
        hint = f" ({RUN_RECORD} status: {record.status})" if record is not None else ""
        raise UserError(
            f"{run_dir} has no checkpoints ({CHECKPOINT_DIR}/*.ckpt){hint}: training saves one per validation "
            "epoch with the default callbacks; pass a run that finished at least one epoch"
        )
    last = checkpoints / LAST_CHECKPOINT
    if last.is_file():
        recorded, score = _checkpoint_state(last)
        best = _relocate(recorded, run_dir)
        if best is not None:
            shown = "n/a" if score is None else f"{score:.4f}"
            return Resolved(
                best,
                run_dir,
                f"best checkpoint by {metric} ({mode}) = {shown}, from the "
                f"ModelCheckpoint state in {LAST_CHECKPOINT} (no usable {RUN_RECORD})",
                score,
                metric,
                record,
                config,
            )
    scored = _scored(found)
    if scored:
        score, best = (max if mode == "max" else min)(scored, key=lambda item: item[0])
        return Resolved(
            best,
            run_dir,
            f"best score in the checkpoint names ({mode}) = {score:.4f} (no usable {RUN_RECORD} or checkpoint state)",
            score,
            metric,
            record,
            config,
        )
    best = last if last.is_file() else found[-1]
    return Resolved(best, run_dir, f"no best checkpoint recorded; using {best.name}", None, metric, record, config)


def _job_sort_key(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def best_of_sweep(sweep_dir: Path, jobs: list[Path]) -> Resolved:
    """The best job of a sweep by its monitored metric; the reason lists every job's score."""
    rows: list[tuple[Path, float | None, str]] = []
    metric = mode = None
    for job in jobs:
        job_metric, job_mode = monitor_of(job)
        if metric is None:
            metric, mode = job_metric, job_mode
        elif (job_metric, job_mode) != (metric, mode):
            raise UserError(
                f"the jobs of sweep {sweep_dir} monitor different metrics ({metric} {mode} vs {job_metric} {job_mode} "
                f"in {job.name}/); export one run dir instead: ckpt={job}"
            )
        try:
            resolved = best_of_run(job)
        except UserError:
            record = read_run_record(job)
            rows.append((job, None, str(record.status) if record is not None else "no checkpoint"))
            continue
        rows.append((job, resolved.score, "" if resolved.score is not None else "no score"))
    candidates = [(score, job) for job, score, _ in rows if score is not None]
    table = ", ".join(f"{job.name}: {f'{score:.4f}' if score is not None else note}" for job, score, note in rows)
    if not candidates:
        raise UserError(
            f"no job of sweep {sweep_dir} has a checkpoint with a {metric} score ({table}); "
            "export one run dir or .ckpt instead"
        )
    # Best score; ties go to the lowest job number.
    sign = -1.0 if mode == "max" else 1.0
    score, job = min(candidates, key=lambda item: (sign * item[0], _job_sort_key(item[1])))
    best = best_of_run(job)
    best.reason = f"job {job.name} of {len(jobs)} has the best {metric} ({mode}) = {score:.4f} [{table}]; {best.reason}"
    return best


def resolve_checkpoint(ckpt: str | Path) -> Resolved:
    """Resolve ``ckpt=`` (file, run dir or sweep dir) to one checkpoint file; UserError when it cannot."""
    if ckpt is None or str(ckpt).strip() in ("", "???"):
        raise UserError("ckpt is required: python export.py ckpt=<.ckpt file | run dir | sweep dir>")
    path = Path(str(ckpt)).expanduser()
    if not path.exists():
        raise UserError(f"ckpt={ckpt}: no such file or directory")
    if path.is_file():
        read_checkpoint(path)  # a file that does not load: one line naming it
        run_dir = run_dir_of(path.resolve())
        monitor = monitor_of(run_dir)[0] if run_dir else None
        return Resolved(
            path,
            run_dir,
            "checkpoint file given",
            None,
            monitor,
            read_run_record(run_dir) if run_dir else None,
            read_run_config(run_dir),
        )
    if is_run_dir(path):
        return best_of_run(path)
    if path.name == CHECKPOINT_DIR and is_run_dir(path.parent):
        return best_of_run(path.parent)
    jobs = sorted((child for child in path.iterdir() if child.is_dir() and is_run_dir(child)), key=_job_sort_key)
    if jobs:
        return best_of_sweep(path, jobs)
    raise UserError(
        f"ckpt={ckpt}: a directory with no checkpoints: expected a run dir (with {RUN_RECORD} or {CHECKPOINT_DIR}/) "
        f"or a sweep dir (with one run dir per job), or pass a .ckpt file"
    )


def _size(value: Any) -> list[int] | None:
    """A configured size (an int or [height, width]; None: no crop) as the checkpoint records it."""
    return None if value is None else list(size_pair(value))


def _list_difference(config: list[str], checkpoint: list[str]) -> str:
    """How two attribute lists differ, briefly: counts, names only in one of them, or the order."""

    def names(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f", ... ({len(items)})" if len(items) > 4 else "")

    only_config = [a for a in config if a not in checkpoint]
    only_checkpoint = [a for a in checkpoint if a not in config]
    parts = [f"has {len(config)} attributes, the checkpoint {len(checkpoint)}"]
    if only_config:
        parts.append(f"not in the checkpoint: {names(only_config)}")
    if only_checkpoint:
        parts.append(f"only in the checkpoint: {names(only_checkpoint)}")
    if not only_config and not only_checkpoint:
        parts = ["lists the checkpoint's attributes in another order"]
    return ", ".join(parts)


def check_run_config(hparams: dict[str, Any], run_config: dict[str, Any], source: str) -> None:
    """UserError when the run's saved config contradicts the checkpoint (a checkpoint from another run)."""
    data = run_config.get("data") or {}
    model = run_config.get("model") or {}
    problems = []
    if "image_size" in data and _size(data["image_size"]) != list(hparams["image_size"]):
        problems.append(
            f"data.image_size {_size(data['image_size'])} vs the checkpoint's {list(hparams['image_size'])}"
        )
    if "crop" in data and _size(data["crop"]) != (None if hparams.get("crop") is None else list(hparams["crop"])):
        problems.append(f"data.crop {_size(data['crop'])} vs the checkpoint's {hparams.get('crop')}")
    if data.get("attributes") and list(data["attributes"]) != list(hparams["attributes"]):
        problems.append(f"data.attributes {_list_difference(list(data['attributes']), list(hparams['attributes']))}")
    if model.get("backbone") and model["backbone"] != hparams["backbone"]:
        problems.append(f"model.backbone {model['backbone']} vs the checkpoint's {hparams['backbone']}")
    if problems:
        raise UserError(
            f"the checkpoint does not match {source} ({'; '.join(problems)}): it belongs to another run; "
            "pass that run's dir or its .ckpt"
        )
