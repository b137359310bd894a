"""faceattr/lightning_workarounds.py against the installed Lightning: the pinned version, and the behaviour of
Lightning's child-process observer that it disarms. A Lightning upgrade that changes either fails here first."""

from __future__ import annotations

import subprocess
import sys
import threading

import lightning
from conftest import REPO
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

from faceattr.lightning_workarounds import LIGHTNING_VERSION, OBSERVER_THREAD, disarm_process_observers


def test_lightning_is_the_pinned_version():
    assert lightning.__version__ == LIGHTNING_VERSION
    assert f'"lightning=={LIGHTNING_VERSION}"' in (REPO / "pyproject.toml").read_text()


def _failed_rank() -> subprocess.Popen:
    rank = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    rank.wait()
    return rank


def _watch(rank: subprocess.Popen) -> tuple[threading.Thread, subprocess.Popen]:
    """Lightning's observer of ``rank``, with a stand-in for the launching process (this one, in a DDP job) as
    the process it kills."""
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    observer = _ChildProcessObserver(main_pid=launcher.pid, child_processes=[rank], sleep_period=1)
    observer.start()
    return observer, launcher


def test_the_observer_kills_the_launcher_when_a_rank_fails_unless_disarmed():
    before = set(threading.enumerate())
    observer, launcher = _watch(_failed_rank())
    assert observer.name == OBSERVER_THREAD
    observer.join(timeout=10)
    assert launcher.wait(timeout=10) == -9  # what a sweep's next job would suffer: SIGKILL

    rank = _failed_rank()
    observer, launcher = _watch(rank)
    assert disarm_process_observers(before) == [rank]  # the failed rank, to be waited for by the caller
    observer.join(timeout=10)
    try:
        assert not observer.is_alive() and launcher.poll() is None  # it ended without killing anyone
    finally:
        launcher.kill()
        launcher.wait()
