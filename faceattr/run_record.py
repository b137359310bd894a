"""``run.json``: what a run (or a sweep job) leaves for summaries, export and eval to read.

Written atomically (``faceattr.atomic``): a reader never sees half a record. A completed run records its scores,
best and tested checkpoints and the per-attribute test table; a failed one its status and one-line error
(``faceattr/sweep/jobs.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceattr.atomic import write_json
from faceattr.layout import RUN_RECORD

__all__ = ["RUN_RECORD", "record_run"]


def record_run(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as ``path`` (``<run dir>/run.json``) atomically."""
    write_json(path, record)
