"""The ranked table of runs: what ``summary.md``, ``summary.csv`` and the printed table show.

One code path for the end-of-sweep Hydra callback and ``scripts/compare_runs.py``::

    summary = build_summary([Path("multirun/2025-01-01/12-00-00-ab12")])
    print(format_table(summary))
    write_summary(summary, out_dir)  # faceattr/sweep/summary_files.py

Runs whose overrides differ only in ``seed`` and/or ``data.fold`` form a *group of repeats*
(:mod:`faceattr.sweep.repeat_groups`): a *seed group* for a sweep over ``seed=1,2,3``, a *fold group* for k-fold
cross-validation (``data.folds=5 data.fold=0,1,2,3,4``), with or without other axes. When some group holds runs
with different seeds or folds, the summary starts with one row per group: each metric's mean, standard deviation
and 95% interval of the mean (Student's t, over the group's completed runs), the seeds or folds of its members,
groups ranked by their mean validation score, and links to the member runs; ``summary_groups.csv`` holds the same
numbers. Without seeds or folds varying there are no groups and the summary is the per-run table alone.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faceattr.errors import UserError
from faceattr.run_record import Status
from faceattr.sweep.repeat_groups import (
    CONFIDENCE,
    NAMES,
    Interval,
    RepeatGroup,
    group_kind,
    repeat_groups,
    varying_keys,
)
from faceattr.sweep.runs import Run, load_runs

STATUS_ORDER = {Status.COMPLETED: 0, Status.PRUNED: 1, Status.INCOMPLETE: 2, Status.FAILED: 3}


@dataclass
class Summary:
    """Runs ranked by ``metric`` (best first); failed and incomplete runs last."""

    runs: list[Run]
    metric: str
    mode: str
    title: str
    common_overrides: list[str]
    groups: list[RepeatGroup] = field(default_factory=list)  # groups of repeats, only when seeds or folds vary

    def varying_overrides(self, run: Run, short: bool = False) -> list[str]:
        """The run's overrides that not every run shares (all of them when there is only one run)."""
        common = set(self.common_overrides) if len(self.runs) > 1 else set()
        varying = [o for o in run.overrides if o not in common]
        return [short_override(o) for o in varying] if short else varying

    @property
    def repeat_keys(self) -> list[str]:
        """The repeat keys that vary within the groups (``seed``, ``data.fold``); [] without groups."""
        return varying_keys(self.groups)

    @property
    def counts(self) -> dict[Status, int]:
        counts: dict[Status, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts


def short_override(override: str) -> str:
    """``key=value`` with a long float value cut to 4 significant digits (Optuna's samples), for display."""
    key, sep, value = override.partition("=")
    if not sep or len(value) <= 8:
        return override
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.4g}" if "." in value or "e" in value.lower() else override


def rank_runs(runs: list[Run], metric: str, mode: str = "max") -> list[Run]:
    """Completed runs by their ``metric`` (``mode`` max: highest first), then runs without a score, then failures."""
    if mode not in ("max", "min"):
        raise UserError(f"mode={mode!r}: use max or min")
    sign = -1.0 if mode == "max" else 1.0

    def key(run: Run) -> tuple:
        score = run.score(metric)
        return (STATUS_ORDER.get(run.status, 1), score is None, sign * score if score is not None else 0.0)

    return sorted(runs, key=key)  # stable: ties keep the directory order


def build_summary(
    paths: list[Path], metric: str | None = None, mode: str | None = None, title: str | None = None
) -> Summary:
    """Read every run under ``paths`` and rank them (by default by the runs' monitored metric and mode)."""
    runs = load_runs([Path(p) for p in paths])
    monitors = [r.monitor for r in runs if r.monitor]
    metric = metric or (max(set(monitors), key=monitors.count) if monitors else "val/auroc")
    modes = [r.mode for r in runs if r.monitor == metric]
    mode = mode or (max(set(modes), key=modes.count) if modes else "max")
    ranked = rank_runs(runs, metric, mode)
    override_sets = [set(r.overrides) for r in ranked]
    common = [o for o in ranked[0].overrides if all(o in s for s in override_sets)] if ranked else []
    title = title or ", ".join(str(p) for p in paths)
    return Summary(
        runs=ranked,
        metric=metric,
        mode=mode,
        title=title,
        common_overrides=common,
        groups=repeat_groups(ranked, metric, mode),
    )


# ---------------------------------------------------------------------------------------------------------------
# Table


def _fmt_score(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _fmt_count(count: int | None) -> str:
    if count is None:
        return ""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{suffix}"
    return str(count)


def _display_path(path: str | None) -> str:
    """A path relative to the current directory when it lies below it (shorter to read), else as given."""
    if not path:
        return ""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except (OSError, ValueError):
        return path


def table_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table, as strings."""
    metric_column = summary.metric not in ("val/auroc", "val/auroc_best")
    header = ["#", "job", "status", "overrides", "backbone"]
    header += [f"best {summary.metric}"] if metric_column else []
    # Ranked on validation only; the test figures are shown for reporting, never for choosing a model.
    header += ["val/auroc", "test/auroc", "test/acc", "test/bacc", "epochs", "time", "params", "best checkpoint"]
    rows = []
    rank = 0
    for run in summary.runs:
        scored = run.status is Status.COMPLETED and run.score(summary.metric) is not None
        rank += scored
        row = [
            str(rank) if scored else "-",
            run.name,
            run.status,
            " ".join(summary.varying_overrides(run, short=True)),
            run.backbone or "",
        ]
        row += [_fmt_score(run.score(summary.metric))] if metric_column else []
        row += [
            _fmt_score(run.val_auroc_best),
            *(_fmt_score(run.test.get(f"test/{name}")) for name in ("auroc", "acc", "bacc")),
            "" if run.epochs is None else str(run.epochs),
            _fmt_time(run.wall_time_s),
            _fmt_count(run.num_parameters),
            _display_path(run.best_checkpoint),
        ]
        rows.append(row)
    return header, rows


def group_metrics(summary: Summary) -> list[tuple[str, str, Callable[[Run], float | None]]]:
    """(column, csv name, value of a run) of the metrics a group of repeats reports: the ranking metric, val/auroc and
    the test figures."""
    metrics: list[tuple[str, str, Callable[[Run], float | None]]] = []
    if summary.metric not in ("val/auroc", "val/auroc_best"):
        metrics.append((f"best {summary.metric}", "best_score", lambda run: run.score(summary.metric)))
    metrics.append(("val/auroc", "val_auroc_best", lambda run: run.val_auroc_best))
    for name in ("auroc", "acc", "bacc"):
        metrics.append((f"test/{name}", f"test_{name}", lambda run, tag=f"test/{name}": run.test.get(tag)))
    return metrics


def _fmt_interval(stats: Interval | None) -> str:
    if stats is None:
        return ""
    if stats.std is None:
        return f"{stats.mean:.4f} (n=1)"
    return f"{stats.mean:.4f} ± {stats.std:.4f} [{stats.low:.4f}, {stats.high:.4f}]"


def _group_label(summary: Summary, group: RepeatGroup) -> str:
    common = set(summary.common_overrides)
    return " ".join(short_override(o) for o in group.overrides if o not in common) or "(all runs)"


def group_rows(summary: Summary, link_base: Path | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the groups' table (a column of the members' values per varying repeat key: ``seeds``,
    ``folds``); with ``link_base`` the members are markdown links relative to it."""
    metrics = group_metrics(summary)
    keys = summary.repeat_keys
    header = ["#", "group", "runs", *(NAMES[key][1] for key in keys), *(label for label, _, _ in metrics), "members"]
    rows = []
    rank = 0
    for group in summary.groups:
        scored = group.stats(lambda run: run.score(summary.metric)) is not None
        rank += scored
        others = len(group.runs) - len(group.completed)
        runs = f"{len(group.completed)}" + (f" (+{others} not completed)" if others else "")
        members = [_member_link(run, link_base) for run in group.runs]
        rows.append(
            [
                str(rank) if scored else "-",
                _group_label(summary, group),
                runs,
                *(",".join(group.values(key)) for key in keys),
                *(_fmt_interval(group.stats(value)) for _, _, value in metrics),
                " ".join(members),
            ]
        )
    return header, rows


def _member_link(run: Run, link_base: Path | None) -> str:
    if link_base is None:
        return run.name
    try:
        target = os.path.relpath(run.path.resolve(), Path(link_base).resolve())
    except ValueError:  # another drive
        target = str(run.path.resolve())
    return f"[{run.name}]({Path(target).as_posix()}/)"


def _groups_heading(summary: Summary) -> str:
    """ "2 seed groups (runs that differ only in seed): ...", "1 fold group (... only in data.fold)", ..."""
    direction = "highest" if summary.mode == "max" else "lowest"
    count = len(summary.groups)
    keys = summary.repeat_keys
    return (
        f"{count} {group_kind(keys)} group{'' if count == 1 else 's'} (runs that differ only in "
        f"{' and '.join(keys)}): mean ± std [{CONFIDENCE:.0%} interval of the mean, Student's t] over each group's "
        f"completed runs, ranked by mean best {summary.metric} ({direction} first)"
    )


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table, padded so that it also reads well as plain text."""
    cells = [[_escape(c) for c in header]] + [[_escape(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = {
        i
        for i, name in enumerate(header)
        if name in ("#", "epochs", "time", "params", "runs")
        or name.startswith(("val/", "test/"))
        or name.startswith("best ")
        and name != "best checkpoint"
    }

    def line(row: list[str]) -> str:
        padded = (c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _failures(summary: Summary) -> list[str]:
    """A line per run that did not complete: pruned, failed or incomplete, and why."""
    lines = []
    for run in summary.runs:
        if run.status is not Status.COMPLETED:
            what = " ".join(summary.varying_overrides(run, short=True))
            where = f" (log: {_display_path(run.log_file)})" if run.log_file else ""
            label = f"{run.name} [{what}]" if what else run.name
            lines.append(f"- {label}: {run.status}: {run.error or 'no error recorded'}{where}")
    return lines


def _headline(summary: Summary) -> str:
    counts = summary.counts
    shown = (Status.COMPLETED, Status.PRUNED, Status.FAILED, Status.INCOMPLETE)
    parts = [f"{counts[s]} {s}" for s in shown if counts.get(s)]
    direction = "highest" if summary.mode == "max" else "lowest"
    return f"{len(summary.runs)} runs ({', '.join(parts)}), ranked by best {summary.metric} ({direction} first)"


def format_table(summary: Summary) -> str:
    """The text printed at the end of a sweep: headline, table, common overrides, failures."""
    header, rows = table_rows(summary)
    out = [f"Summary of {summary.title}: {_headline(summary)}"]
    if summary.groups:
        out += [_groups_heading(summary) + ":", markdown_table(*group_rows(summary)), "runs:"]
    out.append(markdown_table(header, rows))
    if summary.common_overrides and len(summary.runs) > 1:
        out.append("common overrides: " + " ".join(summary.common_overrides))
    failures = _failures(summary)
    if failures:
        out += ["not completed:", *failures]
    return "\n".join(out)


def tensorboard_command(paths: list[Path]) -> str:
    """The command that opens ``paths`` (run or sweep dirs) side by side in TensorBoard."""
    if len(paths) == 1:
        return f"tensorboard --logdir {shlex.quote(str(paths[0]))}"
    spec = ",".join(f"{Path(p).name or 'run'}{i}:{p}" for i, p in enumerate(paths))
    return f"tensorboard --logdir_spec {shlex.quote(spec)}"


def render_markdown(
    summary: Summary,
    plot_name: str | None = "summary.png",
    tensorboard: str | None = None,
    link_base: Path | None = None,
) -> str:
    """``summary.md``; ``link_base``: the folder it is written to (member runs of groups link from there)."""
    header, rows = table_rows(summary)
    out = [f"# Summary: {summary.title}", "", _headline(summary) + ".", ""]
    if summary.common_overrides and len(summary.runs) > 1:
        out += ["Common overrides: `" + " ".join(summary.common_overrides) + "`", ""]
    if summary.groups:
        out += [
            f"## {group_kind(summary.repeat_keys).capitalize()} groups",
            "",
            _groups_heading(summary) + ".",
            "",
            markdown_table(*group_rows(summary, link_base)),
            "",
            "## Runs",
            "",
        ]
    out += [markdown_table(header, rows), ""]
    failures = _failures(summary)
    if failures:
        out += ["## Runs that did not complete", "", *failures, ""]
    if plot_name:
        out += [f"![val/auroc per epoch and ranked scores]({plot_name})", ""]
    if tensorboard:
        out += [f"TensorBoard (curves, HParams tab): `{tensorboard}`", ""]
    return "\n".join(out)
