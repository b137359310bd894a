"""``run.json``: what a run (or a sweep job) leaves for summaries, sweeps, export and eval to read, in one type.

:class:`RunRecord` is the record, :class:`Status` its status; :meth:`RunRecord.write` is the one writer and
:func:`read_run_record` the one reader. Training writes the completed record (``faceattr/training.py``), a sweep job
its ``running`` record when it starts, its failure, or that it was pruned (``faceattr/sweep/jobs.py``); the sweep
resume, the summaries, export and eval read it back.

Written atomically (``faceattr.atomic``): a reader never sees half a record. Every field is written, ``null`` when
unknown, so ``jq``-style readers see one schema. The reader is tolerant: a missing ``run.json`` is ``None``, an
unreadable one a failed record that says so, unknown keys are ignored, and a record of the earlier format (with
``val_auroc_best`` beside ``best_score``) reads as one with ``best_score`` alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from faceattr.atomic import write_json
from faceattr.layout import RUN_RECORD
from faceattr.numbers import finite_or_none

#: The monitored metric of a record that names none (the earlier format's default).
DEFAULT_MONITOR = "val/auroc"
#: The earlier format's copy of the best val/auroc, now ``best_score`` (with ``monitor: val/auroc``).
LEGACY_BEST_KEY = "val_auroc_best"


class Status(StrEnum):
    """Where a run stands. ``RUNNING`` is written when a sweep job starts and replaced when it ends (a job that
    stays ``running`` was killed); ``INCOMPLETE`` is never written: summaries show it for a run dir without a record
    or with a ``running`` one."""

    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"  # stopped early by median pruning, then tested as a completed run is
    FAILED = "failed"
    INCOMPLETE = "incomplete"

    @property
    def done(self) -> bool:
        """Whether the run finished (a resumed sweep skips it)."""
        return self in (Status.COMPLETED, Status.PRUNED)


@dataclass
class RunRecord:
    """One ``run.json``."""

    status: Status
    overrides: list[str] = field(default_factory=list)  # the run's (sweep job's) command-line overrides
    backbone: str | None = None
    monitor: str | None = None  # the metric that chose the best checkpoint (monitor.metric)
    best_score: float | None = None  # its best value over the validation epochs
    best_checkpoint: str | None = None
    # Which weights test/* come from: the best checkpoint, or null for the final in-memory weights (or no test).
    tested_checkpoint: str | None = None
    test: dict[str, float | None] = field(default_factory=dict)  # test/* macro figures
    # Per attribute on the test split: positive rate, accuracy, balanced accuracy, AUROC, F1, threshold.
    test_per_attribute: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs: int | None = None
    global_step: int | None = None
    num_parameters: int | None = None
    wall_time_s: float | None = None
    # A failure: its one-line error, the exception's type and the log file holding the traceback.
    error: str | None = None
    error_type: str | None = None
    log_file: str | None = None
    # A sweep job that started: when, and the checkpoint it continues from.
    started_at: str | None = None
    resumed_from: str | None = None
    # A pruned job: the decision (epoch, best, median, trials; faceattr/sweep/history.py) and one line saying why.
    pruned: dict[str, Any] | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"status": self.status.value}

    def write(self, run_dir: Path) -> Path:
        """Write this record as ``<run_dir>/run.json``, atomically."""
        return write_json(Path(run_dir) / RUN_RECORD, self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The record a ``run.json`` object holds, whichever version wrote it (wrong types read as unknown)."""
        status = _status(data.get("status"))
        error = _text(data.get("error"))
        if status is None:
            status = Status.FAILED
            error = error or f"{RUN_RECORD} has an unknown status {data.get('status')!r}"
        monitor = _text(data.get("monitor"))
        best_score = finite_or_none(data.get("best_score"))
        legacy_best = finite_or_none(data.get(LEGACY_BEST_KEY))
        if best_score is None and legacy_best is not None and monitor in (None, DEFAULT_MONITOR):
            monitor, best_score = DEFAULT_MONITOR, legacy_best
        overrides = data.get("overrides")
        best_checkpoint = _text(data.get("best_checkpoint"))
        test = {str(k): finite_or_none(v) for k, v in _mapping(data.get("test")).items()}
        # Records older than tested_checkpoint: test/* were the best checkpoint's.
        tested = best_checkpoint if test else None
        if "tested_checkpoint" in data:
            tested = _text(data["tested_checkpoint"])
        return cls(
            status=status,
            overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
            backbone=_text(data.get("backbone")),
            monitor=monitor,
            best_score=best_score,
            best_checkpoint=best_checkpoint,
            tested_checkpoint=tested,
            test=test,
            test_per_attribute=_mapping(data.get("test_per_attribute")),
            epochs=_count(data.get("epochs")),
            global_step=_count(data.get("global_step")),
            num_parameters=_count(data.get("num_parameters")),
            wall_time_s=finite_or_none(data.get("wall_time_s")),
            error=error,
            error_type=_text(data.get("error_type")),
            log_file=_text(data.get("log_file")),
            started_at=_text(data.get("started_at")),
            resumed_from=_text(data.get("resumed_from")),
            pruned=data.get("pruned") if isinstance(data.get("pruned"), dict) else None,
            reason=_text(data.get("reason")),
        )


def read_run_record(run_dir: Path) -> RunRecord | None:
    """``<run_dir>/run.json``: None without one; a failed record saying why when it cannot be read."""
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return RunRecord(Status.FAILED, error=f"unreadable {RUN_RECORD}: {exc}")
    if not isinstance(data, dict):
        return RunRecord(Status.FAILED, error=f"unreadable {RUN_RECORD}: not a JSON object")
    return RunRecord.from_json(data)


def _status(value: Any) -> Status | None:
    try:
        status = Status(value)
    except ValueError:
        return None
    return None if status is Status.INCOMPLETE else status


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
