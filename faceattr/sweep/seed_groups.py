"""Seed groups: runs whose overrides differ only in ``seed``, with each metric's mean, std and 95% interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from faceattr.run_record import Status
from faceattr.sweep.runs import Run, natural_key, seed_override

CONFIDENCE = 0.95


@dataclass
class Interval:
    """Mean, sample standard deviation and the 95% interval of the mean of ``n`` values (std and interval need 2)."""

    n: int
    mean: float
    std: float | None = None
    low: float | None = None
    high: float | None = None


def interval(values: list[float], confidence: float = CONFIDENCE) -> Interval | None:
    """The mean of ``values`` with its Student-t interval (``mean +- t(n-1) * std / sqrt(n)``); None when empty."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(1, mean)
    from scipy.stats import t

    std = statistics.stdev(values)
    half = float(t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return Interval(len(values), mean, std, mean - half, mean + half)


@dataclass
class SeedGroup:
    """Runs whose overrides are the same but for ``seed``."""

    overrides: list[str]  # the shared overrides (without seed=)
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status is Status.COMPLETED]

    @property
    def seeds(self) -> list[str]:
        return [str(run.seed) for run in self.runs]

    def stats(self, value: Callable[[Run], float | None]) -> Interval | None:
        """``value`` over the completed runs that have it."""
        return interval([v for v in (value(run) for run in self.completed) if v is not None])


def seed_groups(runs: list[Run], metric: str, mode: str) -> list[SeedGroup]:
    """The runs grouped by their overrides without ``seed=``, best mean ``metric`` first; [] when no group holds
    runs with different seeds (nothing to average)."""
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for run in sorted(runs, key=lambda run: natural_key(run.path)):  # members in job order
        key = tuple(o for o in run.overrides if seed_override(o) is None)
        groups.setdefault(key, SeedGroup(list(key))).runs.append(run)
    if not any(len(set(group.seeds)) > 1 for group in groups.values()):
        return []
    sign = -1.0 if mode == "max" else 1.0

    def key(group: SeedGroup) -> tuple:
        stats = group.stats(lambda run: run.score(metric))
        return (stats is None, sign * stats.mean if stats is not None else 0.0)

    return sorted(groups.values(), key=key)
