"""``metric_history.json``: a sweep job's monitored metric per epoch, and why it was pruned if it was.

Written (atomically) by the median-pruning callback (:mod:`faceattr.sweep.pruning`) after each validation epoch;
read by the same callback in the other jobs of the sweep (the median of earlier jobs at the same epoch) and by
:mod:`faceattr.sweep.jobs`, which marks a pruned job's ``run.json`` ``status: pruned``. Plain JSON, no Lightning:
cheap to read from any process::

    {"metric": "val/auroc", "mode": "max", "values": {"1": 0.61, "2": 0.64},
     "pruned": {"epoch": 2, "best": 0.64, "median": 0.71, "trials": 3}}     # "pruned" only when it was
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceattr.atomic import write_json
from faceattr.layout import METRIC_HISTORY


@dataclass
class MetricHistory:
    """The monitored metric of one job per epoch (1-based), and the pruning decision (None: not pruned)."""

    metric: str
    mode: str = "max"
    values: dict[int, float] = field(default_factory=dict)
    pruned: dict[str, Any] | None = None

    def best(self) -> float | None:
        """The best value so far (``mode``), None before the first epoch."""
        if not self.values:
            return None
        return max(self.values.values()) if self.mode == "max" else min(self.values.values())

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "metric": self.metric,
            "mode": self.mode,
            "values": {str(epoch): value for epoch, value in sorted(self.values.items())},
        }
        if self.pruned is not None:
            record["pruned"] = self.pruned
        return record


def describe(pruned: dict[str, Any], metric: str) -> str:
    """One line: why a job was pruned (its history's ``pruned``)."""
    return (
        f"best {metric} {pruned['best']:.4f} at epoch {pruned['epoch']}, below the median "
        f"{pruned['median']:.4f} of {pruned['trials']} completed job(s) at that epoch"
    )


def history_path(run_dir: Path) -> Path:
    return Path(run_dir) / METRIC_HISTORY


def read_history(run_dir: Path) -> MetricHistory | None:
    """The job's history, or None when it has none (or an unreadable one: a job we cannot compare with)."""
    try:
        record = json.loads(history_path(run_dir).read_text())
        return MetricHistory(
            metric=str(record["metric"]),
            mode=str(record.get("mode", "max")),
            values={int(epoch): float(value) for epoch, value in (record.get("values") or {}).items()},
            pruned=record.get("pruned"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_history(run_dir: Path, history: MetricHistory) -> None:
    write_json(history_path(run_dir), history.to_json())
