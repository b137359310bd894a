"""Compare any runs: `python scripts/compare_runs.py PATH... [--out DIR] [--metric TAG] [--mode max|min]`.

Each PATH is a run directory (outputs/<date>/<time>-<id>), a sweep directory (multirun/<date>/<time>-<id>) or any folder
above them; every run found below is read (run.json, configs, TensorBoard events via TensorBoard's own reader),
ranked, printed, and written as summary.md, summary.csv and summary.png into --out (the same table and plot as the
end-of-sweep summary). Runs made on different days, by different sweeps, compare side by side. Runs whose overrides
differ only in seed= or data.fold= are also grouped (mean, std and 95% interval per group, ranked by mean;
summary_groups.csv), whichever sweep they come from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faceattr.errors import UserError, exit_on_user_error  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Rank runs and sweeps side by side: a table (printed, summary.md, summary.csv) and a plot.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run or sweep directories")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write summary.{md,csv,png} (default: outputs/comparisons/<date>/<time>)",
    )
    parser.add_argument(
        "--metric", default=None, help="rank by this metric (default: the runs' monitored metric, e.g. val/auroc)"
    )
    parser.add_argument(
        "--mode", choices=("max", "min"), default=None, help="max: higher is better (default: the runs' monitor.mode)"
    )
    parser.add_argument("--title", default=None, help="plot and markdown title (default: the paths)")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from faceattr.sweep.summary import build_summary, format_table, tensorboard_command
    from faceattr.sweep.summary_files import write_summary

    summary = build_summary(args.paths, metric=args.metric, mode=args.mode, title=args.title)
    if all(run.score(summary.metric) is None for run in summary.runs) and args.metric:
        raise UserError(f"--metric {args.metric}: no run has a value for it (try val/auroc or val/loss --mode min)")
    out = args.out or Path("outputs/comparisons") / time.strftime("%Y-%m-%d/%H-%M-%S")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    paths = write_summary(summary, out, tensorboard=tensorboard_command(args.paths))
    print(format_table(summary))
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
