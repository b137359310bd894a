"""The summary's files: ``summary.md``, ``summary.csv``, ``summary.png`` and, when seeds or folds vary,
``summary_groups.csv``; each written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from faceattr.atomic import write_text
from faceattr.sweep.repeat_groups import NAMES
from faceattr.sweep.summary import Summary, group_metrics, group_rows, render_markdown, table_rows

SUMMARY_FILES = ("summary.md", "summary.csv", "summary.png")
GROUPS_FILE = "summary_groups.csv"  # only when seeds or folds vary


CSV_COLUMNS = (
    "rank",
    "job",
    "status",
    "backbone",
    "overrides",
    "varying_overrides",
    "monitor",
    "best_score",
    "val_auroc_best",
    "test_auroc",
    "test_acc",
    "test_bacc",
    "test_f1",
    "test_loss",
    "epochs",
    "wall_time_s",
    "num_parameters",
    "best_checkpoint",
    "error",
    "run_dir",
)


def write_csv(summary: Summary, path: Path) -> None:
    header, rows = table_rows(summary)
    with io.StringIO(newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run, row in zip(summary.runs, rows):
            writer.writerow(
                {
                    "rank": row[0] if row[0] != "-" else "",
                    "job": run.name,
                    "status": run.status,
                    "backbone": run.backbone or "",
                    "overrides": " ".join(run.overrides),
                    "varying_overrides": " ".join(summary.varying_overrides(run)),
                    "monitor": summary.metric,
                    "best_score": run.score(summary.metric),
                    "val_auroc_best": run.val_auroc_best,
                    "test_auroc": run.test.get("test/auroc"),
                    "test_acc": run.test.get("test/acc"),
                    "test_bacc": run.test.get("test/bacc"),
                    "test_f1": run.test.get("test/f1"),
                    "test_loss": run.test.get("test/loss"),
                    "epochs": run.epochs,
                    "wall_time_s": run.wall_time_s,
                    "num_parameters": run.num_parameters,
                    "best_checkpoint": run.best_checkpoint or "",
                    "error": run.error or "",
                    "run_dir": str(run.path.resolve()),
                }
            )
        write_text(path, f.getvalue())


def write_groups_csv(summary: Summary, path: Path) -> None:
    """``summary_groups.csv``: a row per group of repeats: what varies in it (``varies``: seed, data.fold or both),
    the members' values of each (``seeds``, ``folds``), each metric's n, mean, std and 95% interval, the members."""
    metrics = group_metrics(summary)
    header, rows = group_rows(summary)
    keys = summary.repeat_keys
    columns = ["rank", "group", "overrides", "varies", *(NAMES[key][1] for key in keys), "runs", "completed"]
    for _, name, _ in metrics:
        columns += [f"{name}_{part}" for part in ("n", "mean", "std", "ci95_low", "ci95_high")]
    columns += ["members", "member_dirs"]
    with io.StringIO(newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for group, row in zip(summary.groups, rows):
            record = {
                "rank": row[0] if row[0] != "-" else "",
                "group": row[1],
                "overrides": " ".join(group.overrides),
                "varies": " ".join(keys),
                **{NAMES[key][1]: " ".join(group.values(key)) for key in keys},
                "runs": len(group.runs),
                "completed": len(group.completed),
                "members": " ".join(run.name for run in group.runs),
                "member_dirs": " ".join(str(run.path.resolve()) for run in group.runs),
            }
            for _, name, value in metrics:
                stats = group.stats(value)
                record.update(
                    {
                        f"{name}_n": stats.n if stats else 0,
                        f"{name}_mean": stats.mean if stats else None,
                        f"{name}_std": stats.std if stats else None,
                        f"{name}_ci95_low": stats.low if stats else None,
                        f"{name}_ci95_high": stats.high if stats else None,
                    }
                )
            writer.writerow(record)
        write_text(path, f.getvalue())


def write_summary(summary: Summary, out_dir: Path, tensorboard: str | None = None) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv``, ``summary.png`` (and with groups of repeats ``summary_groups.csv``) into
    ``out_dir``; return their paths."""
    from faceattr.sweep.plot import plot_summary

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in SUMMARY_FILES}
    plot_summary(summary, paths["summary.png"])
    write_csv(summary, paths["summary.csv"])
    if summary.groups:
        paths[GROUPS_FILE] = out_dir / GROUPS_FILE
        write_groups_csv(summary, paths[GROUPS_FILE])
    write_text(paths["summary.md"], render_markdown(summary, "summary.png", tensorboard, link_base=out_dir))
    return paths
