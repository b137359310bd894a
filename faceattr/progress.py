"""Progress for terminals and for log files: a bar redrawn in place on a terminal, a few log lines otherwise.

On a terminal a bar redraws itself in place with carriage returns. Redirected to a file (CI, ``nohup``, SLURM,
``> log.txt``) every redraw would stay in the file, so there progress goes through ``logging`` instead (Hydra sends
it to the console and to the run's log file), a line at a time. The rule is :func:`is_terminal`, for:

- counted work (:class:`Progress`: batch prediction's photos, the image cache's build): a tqdm bar on stderr, else a
  log line each time another tenth is done;
- training (``faceattr/training_progress.py``, Lightning's side of the same rule): Lightning's TQDM bar, else one
  line per training epoch and one per test run, through this module's logger and :func:`format_metrics`.

This module imports neither torch nor Lightning, so ``predict.py`` and the cache builder report progress without
loading the training stack.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

log = logging.getLogger(__name__)

#: Off a terminal, counted work logs a line each time another 1/LOG_STEPS of it is done.
LOG_STEPS = 10


def is_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is an interactive terminal (False for a file, a pipe, a closed or missing stream)."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``total`` items of work called ``what`` (``"predicting"``, ``"caching train"``), counted in ``unit``: a tqdm bar
    on stderr when it is a terminal, else a log line each time another tenth is done (the last one included)."""

    def __init__(self, total: int, what: str, unit: str = "images") -> None:
        self.total, self.what, self.unit = total, what, unit
        self.done = 0
        self.started = time.perf_counter()
        self._next_line = 1  # the next tenth to log
        self._bar = None
        if is_terminal(sys.stderr):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        if self.total <= 0 or self._next_line > LOG_STEPS or self.done * LOG_STEPS < self._next_line * self.total:
            return
        seconds = time.perf_counter() - self.started
        log.info(
            "%s: %d/%d %s (%d%%), %.1f s, %.1f %s/s",
            self.what,
            self.done,
            self.total,
            self.unit,
            100 * self.done // self.total,
            seconds,
            self.done / max(seconds, 1e-9),
            self.unit,
        )
        self._next_line = self.done * LOG_STEPS // self.total + 1  # the next tenth not reached yet

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def format_metrics(metrics: dict[str, Any]) -> str:
    """``name=value`` pairs sorted by name, numbers to 4 decimals; a ``<name>_step`` value (the last batch's) is left
    out when its ``<name>_epoch`` (the epoch's mean) is there."""
    shown = {
        name: value
        for name, value in metrics.items()
        if not (name.endswith("_step") and f"{name[: -len('_step')]}_epoch" in metrics)
    }
    return " ".join(f"{name}={format_value(shown[name])}" for name in sorted(shown))


def format_value(value: Any) -> str:
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return str(value)
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)
