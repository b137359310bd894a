"""The sweep's Hydra callback (registered in ``conf/hydra/default.yaml``): before the first job it refuses a sweep dir
that cannot be resumed cleanly; when the multirun ends it summarizes the sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    """After the last job of a multirun: write ``summary.{md,csv,png}`` into the sweep dir and print the table.
    Before the first: check that the jobs an earlier invocation left in the sweep dir are this command's.

    Runs in the process that launched the sweep (not in the jobs), once, whatever the launcher. Jobs are ranked
    by the config's ``monitor.metric``/``monitor.mode``. It never fails the sweep: a problem is logged instead.

    Args:
        enabled: false = do nothing (``hydra.callbacks.sweep_summary.enabled=false``).
        print_table: print the table to stdout.
    """

    def __init__(self, enabled: bool = True, print_table: bool = True) -> None:
        self.enabled = enabled
        self.print_table = print_table

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Resuming into an existing sweep dir: refuse a mismatch with one line and exit status 2, before the
        sweeper writes anything (faceattr/sweep/resume_sweep.py). Hydra turns an exception raised by a callback
        into a warning, so this exits itself."""
        from faceattr.errors import UserError, one_line
        from faceattr.sweep.resume_sweep import check_before_launch

        try:
            check_before_launch(config)
        except UserError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from exc

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from faceattr.sweep.jobs import global_rank

        if not self.enabled or global_rank() != 0:
            return
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if not sweep_dir.is_dir():
                log.warning("sweep summary: %s does not exist (no job ran)", sweep_dir)
                return
            from faceattr.sweep.summary import build_summary, format_table, tensorboard_command
            from faceattr.sweep.summary_files import write_summary

            metric = OmegaConf.select(config, "monitor.metric", default=None)
            mode = OmegaConf.select(config, "monitor.mode", default=None)
            summary = build_summary([sweep_dir], metric=metric, mode=mode, title=str(sweep_dir))
            tensorboard = tensorboard_command([sweep_dir])
            paths = write_summary(summary, sweep_dir, tensorboard=tensorboard)
        except Exception as exc:  # noqa: BLE001 - the jobs are done; a summary problem must not hide their results
            log.exception("could not summarize the sweep: %s", exc)
            return
        if self.print_table:
            print("\n" + format_table(summary), flush=True)
            print(f"summary: {paths['summary.md']} (+ .csv, .png); {tensorboard}", flush=True)
