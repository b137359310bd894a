"""Groups of repeats: runs whose overrides differ only in ``seed`` and/or ``data.fold``, with each metric's mean, std
and 95% interval.

One mechanism for both kinds of repeat: a sweep over seeds (``seed=1,2,3``: how much a configuration's score owes
to chance) and k-fold cross-validation (``data.folds=5 data.fold=0,1,2,3,4``: the same configuration trained and
validated on each fold of the training pool). A group is what the runs share apart from those keys; which of the
keys vary is said wherever groups are shown (a "seed group", a "fold group", or both).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from faceattr.run_record import Status
from faceattr.sweep.runs import REPEAT_KEYS, Run, natural_key, repeat_override

CONFIDENCE = 0.95
#: How each repeat key is named in the summary: (its kind of group, the column of its values).
NAMES = {"seed": ("seed", "seeds"), "data.fold": ("fold", "folds")}


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
class RepeatGroup:
    """Runs whose overrides are the same but for the :data:`~faceattr.sweep.runs.REPEAT_KEYS`."""

    overrides: list[str]  # the shared overrides (without seed= or data.fold=)
    runs: list[Run] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.status is Status.COMPLETED]

    def values(self, key: str) -> list[str]:
        """Each member's value of the repeat ``key`` ("" where it has none), in job order."""
        return [run.repeats.get(key, "") for run in self.runs]

    def stats(self, value: Callable[[Run], float | None]) -> Interval | None:
        """``value`` over the completed runs that have it."""
        return interval([v for v in (value(run) for run in self.completed) if v is not None])


def varying_keys(groups: list[RepeatGroup]) -> list[str]:
    """The repeat keys whose value differs between the runs of some group, in :data:`REPEAT_KEYS` order."""
    return [key for key in REPEAT_KEYS if any(len(set(group.values(key))) > 1 for group in groups)]


def group_kind(keys: list[str]) -> str:
    """What the groups are called: "seed", "fold" or "seed/fold" (for ``keys`` varying)."""
    return "/".join(NAMES[key][0] for key in keys)


def repeat_groups(runs: list[Run], metric: str, mode: str) -> list[RepeatGroup]:
    """The runs grouped by their overrides without the repeat keys, best mean ``metric`` first; [] when no group
    holds runs with different seeds or folds (nothing to average)."""
    groups: dict[tuple[str, ...], RepeatGroup] = {}
    for run in sorted(runs, key=lambda run: natural_key(run.path)):  # members in job order
        key = tuple(o for o in run.overrides if repeat_override(o) is None)
        groups.setdefault(key, RepeatGroup(list(key))).runs.append(run)
    if not varying_keys(list(groups.values())):
        return []
    sign = -1.0 if mode == "max" else 1.0

    def key(group: RepeatGroup) -> tuple:
        stats = group.stats(lambda run: run.score(metric))
        return (stats is None, sign * stats.mean if stats is not None else 0.0)

    return sorted(groups.values(), key=key)
