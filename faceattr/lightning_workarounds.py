"""Where faceattr depends on how Lightning behaves beyond its documented API.

Written for, and checked against, Lightning 2.6.6, the version pyproject.toml pins: tests/test_lightning_workarounds.py
pins that version and fails when Lightning stops behaving as described here, so that a Lightning upgrade starts with a
look at this module. Nothing else in ``faceattr/`` reads Lightning's internals (``tests/test_imports.py``).
"""

from __future__ import annotations

import subprocess
import threading

LIGHTNING_VERSION = "2.6.6"

#: The name of the thread Lightning's subprocess launcher starts to watch a DDP job's rank processes
#: (``lightning/fabric/strategies/launchers/subprocess_script.py``, ``_ChildProcessObserver``).
OBSERVER_THREAD = "child-process-observer"


def disarm_process_observers(threads_before: set[threading.Thread]) -> list[subprocess.Popen]:
    """Stop the child-process observers started since ``threads_before`` from killing this process; return the rank
    processes they watched.

    The observer checks its processes every few seconds and, when one has exited with an error, SIGKILLs the others
    and this (the launching) process. Lightning starts one per DDP fit and never stops it, and gives no public way to,
    so in a process that runs several jobs one after the other (a sweep) a rank of a finished job that exits with an
    error would kill the next job. The observer reads the list its launcher was given (``_child_processes``, the
    launcher's ``procs``): emptied, its next check finds every process done and it ends without killing anyone.
    """
    children: list[subprocess.Popen] = []
    for thread in threading.enumerate():
        if thread in threads_before or thread.name != OBSERVER_THREAD:
            continue
        watched = getattr(thread, "_child_processes", None)
        if isinstance(watched, list):
            children += watched
            watched.clear()
    return children
