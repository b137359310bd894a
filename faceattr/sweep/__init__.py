"""Sweeps: multirun job handling, TensorBoard run names, and the ranked summary of a sweep or of any runs.

- :mod:`faceattr.sweep.jobs` runs one multirun job: a failure is recorded in its ``run.json``, not fatal to the
  sweep, and Lightning's DDP child processes re-run that job (not the whole sweep) into the job's directory.
- :mod:`faceattr.sweep.runs` reads run directories (``run.json``, configs, TensorBoard events).
- :mod:`faceattr.sweep.summary` ranks them (:mod:`~faceattr.sweep.repeat_groups`: runs that differ only in seed or
  fold) and :mod:`~faceattr.sweep.summary_files` writes ``summary.md``, ``summary.csv`` and ``summary.png``.
- :mod:`faceattr.sweep.resume_sweep`, :mod:`~faceattr.sweep.pruning`, :mod:`~faceattr.sweep.history`: re-running a
  sweep into its own dir, and median pruning of Optuna trials from the per-epoch history of the earlier ones.
- :class:`SweepSummaryCallback` (a Hydra callback, see ``conf/hydra/default.yaml``) does that when a multirun ends;
  ``scripts/compare_runs.py`` does it for any run or sweep directories.

Importing this package is cheap (no TensorBoard or matplotlib): Hydra instantiates the callback in every run.
"""

from faceattr.sweep.callback import SweepSummaryCallback

__all__ = ["SweepSummaryCallback"]
