"""One job of a Hydra multirun: failures are recorded instead of stopping the sweep; DDP re-runs the job, not the sweep.

A single run (:func:`run_single_job`) records its failure the same way (``run.json`` says ``status: failed`` with
the one-line error), then stops with that error. Both remove the temporary files a killed writer left in the run
dir (:func:`faceattr.atomic.remove_stale_temporaries`) before they start.

A multirun job that an earlier invocation of the same command left in the sweep dir (``hydra.sweep.dir=<sweep
dir>``) is skipped when it finished, and otherwise continues from its last good checkpoint
(:mod:`faceattr.sweep.resume_sweep`). A job that the median-pruning callback stopped (:mod:`faceattr.sweep.pruning`)
ends with ``status: pruned`` in its ``run.json``.

Three multirun pitfalls are handled here (``train.py`` calls :func:`run_multirun_job` in multirun mode):

1. **A failing job.** Hydra's basic sweeper re-raises the first failed job after its batch (and ``SystemExit``
   from a one-line user error would end the whole process), so later jobs and ``on_multirun_end`` never ran. Here
   the error is caught: the job's ``run.json`` says ``status: failed`` with the one-line error, the full traceback
   goes to the job's log file (``<job dir>/<job name>.log``), and the job returns None, which the Optuna sweeper
   records as a failed trial (``max_failure_rate`` in conf/hparams_search/optuna.yaml lets the study go on).
   (Not NaN: the sweeper would pass the NaN on when telling Optuna the trial failed, and crash.)
2. **DDP child processes.** Lightning's subprocess launcher starts ranks 1..N-1 by re-running this script with the
   same ``sys.argv`` plus ``hydra.run.dir=<hydra.run.dir>``. In a multirun that argv holds ``-m`` and the sweep
   (every child would start the whole sweep again) and ``hydra.run.dir`` is not the job's directory. While the job
   runs, ``sys.argv`` becomes this job's overrides as a single run and ``hydra.run.dir`` the job's directory, so the
   children train this job and write into its directory.
3. **Sequential DDP jobs in one process.** Lightning leaves ``LOCAL_RANK``/``MASTER_PORT``/... in ``os.environ`` and
   the process group initialized; the next job would then not start its children and wait for ranks that are
   gone. Both are reset after each job. Lightning's child-process observer also stays behind: when a rank of a
   job that already failed exits with an error, it SIGKILLs this process, in the middle of the next job. After each
   job the observer is given nothing more to watch (:func:`faceattr.lightning_workarounds.disarm_process_observers`),
   and the job's rank processes are waited for (killed after ``RANK_EXIT_TIMEOUT_S``: a rank left alone in a
   collective never returns).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from faceattr.atomic import remove_stale_temporaries
from faceattr.errors import UserError, find_user_error, one_line
from faceattr.layout import CHECKPOINT_DIR, RUN_CONFIG, RUN_RECORD
from faceattr.lightning_workarounds import disarm_process_observers
from faceattr.run_record import RunRecord, Status, read_run_record

log = logging.getLogger(__name__)

# Variables Lightning's subprocess launcher sets for the processes of one DDP job.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra overrides a DDP child must not inherit from the multirun (Lightning appends run.dir/job.name/output_subdir).
CHILD_DROPPED_HYDRA_KEYS = ("hydra.mode", "hydra.run.dir", "hydra.job.name", "hydra.output_subdir")
# Command-line flags that choose the config; a child must see the same ones.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
MAX_ERROR_CHARS = 500
# How long the rank processes of a finished job may take to exit before they are killed.
RANK_EXIT_TIMEOUT_S = 60.0


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``, or ``hydra.mode: MULTIRUN`` in the config)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def error_line(exc: BaseException) -> str:
    """One line describing ``exc``: a user error's message, else ``ExceptionType: first line of the message``."""
    user_error = find_user_error(exc)
    if user_error is not None:
        line = one_line(user_error)
    else:
        text = str(exc).strip()
        first = next((part.strip() for part in text.splitlines() if part.strip()), "")
        line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def global_rank() -> int:
    """This process's global rank from the environment (0 outside distributed jobs); set before Lightning starts."""
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def is_rank_zero() -> bool:
    """Whether this process is global rank 0: not a DDP process started by SLURM or by Lightning (``LOCAL_RANK``)."""
    return global_rank() == 0 and os.environ.get("LOCAL_RANK", "0") == "0"


def run_multirun_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)`` as one job of a multirun; on an exception record the failure and return None.

    A job an earlier invocation finished (``run.json``: completed or pruned) is skipped and returns its recorded
    score; an unfinished one continues from its last good checkpoint (``ckpt_path``). A job dir made with other
    overrides raises a UserError, and nothing is written into it.
    """
    from faceattr.sweep.resume_sweep import previous_attempt

    started = time.time()
    overrides = list(HydraConfig.get().overrides.task)
    job_dir = _job_dir()
    previous = previous_attempt(job_dir, overrides)
    if previous.done:
        log.info("job %s: already %s (%s); skipped", job_dir.name, previous.status, job_dir / RUN_RECORD)
        return previous.best_score
    env_before = {name: os.environ.get(name) for name in DIST_ENV}
    threads_before = set(threading.enumerate())
    _remove_stale_temporaries()
    try:
        if previous.resume_from is not None:
            log.info(
                "job %s: continuing the %s attempt from %s",
                job_dir.name,
                str(previous.status) if previous.status is Status.FAILED else "interrupted",
                previous.resume_from,
            )
            with read_write(cfg), open_dict(cfg):
                cfg.ckpt_path = str(previous.resume_from)
        _record_start(cfg, overrides, previous.resume_from)
        with _ddp_children_rerun_this_job(cfg, previous.resume_from):
            result = task(cfg)
        _mark_if_pruned(job_dir)
        return result
    except Exception as exc:  # noqa: BLE001 - the sweep goes on; KeyboardInterrupt/SystemExit still stop it
        record_failure(cfg, exc, started)
        return None
    finally:
        _release_rank_processes(threads_before)
        _reset_distributed(env_before)


def _record_start(cfg: DictConfig, overrides: list[str], resume_from: Path | None) -> None:
    """``run.json`` says ``running`` with the job's overrides (rank 0), until the job's end replaces it."""
    from faceattr.sweep.resume_sweep import running_record

    if is_rank_zero():
        _job_dir().mkdir(parents=True, exist_ok=True)
        running_record(overrides, cfg, resume_from).write(_job_dir())


def _mark_if_pruned(job_dir: Path) -> None:
    """A job the median-pruning callback stopped: its completed ``run.json`` becomes ``status: pruned`` + why."""
    from faceattr.sweep.history import describe, read_history

    if not is_rank_zero():
        return
    history = read_history(job_dir)
    record = read_run_record(job_dir)
    if history is not None and history.pruned is not None and record and record.status is Status.COMPLETED:
        record.status, record.pruned = Status.PRUNED, history.pruned
        record.reason = describe(history.pruned, history.metric)
        record.write(job_dir)


def run_single_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)`` as a single run; on an exception record the failure in ``run.json`` and re-raise it.

    A failure that changed nothing in a run dir that already has a record (``resume=<run dir>`` with a bad override:
    the run's ``config.yaml`` was not rewritten) leaves that record as it is.
    """
    started = time.time()
    config_before = _stat(_job_dir() / RUN_CONFIG)
    _remove_stale_temporaries()
    try:
        return task(cfg)
    except Exception as exc:
        untouched = _stat(_job_dir() / RUN_CONFIG) == config_before
        if not (untouched and (_job_dir() / RUN_RECORD).is_file()):
            record_failure(cfg, exc, started, console=False)
        raise


def _stat(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of ``path``: what changes when it is written again (atomically: a new inode)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _job_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _remove_stale_temporaries() -> None:
    """Remove what a killed writer left in the run dir and its checkpoints/ (rank 0 only: the others write nothing)."""
    if not is_rank_zero():
        return
    for directory in (_job_dir(), _job_dir() / CHECKPOINT_DIR):
        remove_stale_temporaries(directory)


def _log_file() -> Path | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def record_failure(cfg: DictConfig, exc: Exception, started: float, console: bool = True) -> None:
    """Record that the run or sweep job failed with ``exc``: the traceback in its log file, ``run.json`` with
    ``status: failed`` and the one-line error (global rank 0), and with ``console`` a line on the console."""
    hydra_cfg = HydraConfig.get()
    line = error_line(exc)
    log_file = _log_file()
    # The traceback goes to the job's log file only; the console (shared by all jobs) gets one line.
    record = logging.LogRecord(
        log.name, logging.ERROR, __file__, 0, "job failed with:\n%s", ("".join(traceback.format_exception(exc)),), None
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    if console:
        where = f" (traceback in {log_file})" if log_file else ""
        log.error("job %s failed: %s%s", hydra_cfg.job.num, line, where)
    if not is_rank_zero():
        return
    failure = RunRecord(
        status=Status.FAILED,
        error=line,
        error_type=type(exc).__name__,
        log_file=str(log_file) if log_file else None,
        backbone=OmegaConf.select(cfg, "model.backbone", default=None, throw_on_resolution_failure=False),
        overrides=list(hydra_cfg.overrides.task),
        monitor=OmegaConf.select(cfg, "monitor.metric", default=None, throw_on_resolution_failure=False),
        wall_time_s=round(time.time() - started, 1),
    )
    try:
        job_dir = _job_dir()
        job_dir.mkdir(parents=True, exist_ok=True)
        failure.write(job_dir)
    except (OSError, UserError) as write_error:  # the sweep must go on, the error be shown, even without a record
        log.error("could not write the failure record in %s: %s", _job_dir(), write_error)


def _is_subprocess_ddp(cfg: DictConfig) -> bool:
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None, throw_on_resolution_failure=False)
    name = str(strategy or "")
    return name.startswith("ddp") and "spawn" not in name and "fork" not in name and "notebook" not in name


def _config_flags(argv: list[str]) -> list[str]:
    """The ``--config-name``/``--config-path``/``--config-dir`` flags (with values) of a command line."""
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in CONFIG_FLAGS:
            kept += [arg, next(args, "")]
        elif any(arg.startswith(flag + "=") for flag in CONFIG_FLAGS if flag.startswith("--")):
            kept.append(arg)
    return kept


def child_argv(argv: list[str], ckpt_path: str | None = None) -> list[str]:
    """The command line that re-creates the current multirun job as a single run (without the Lightning extras);
    with ``ckpt_path`` (a resumed job) the ranks start from that checkpoint too."""
    hydra_cfg = HydraConfig.get()
    hydra_overrides = [
        o for o in hydra_cfg.overrides.hydra if o.split("=", 1)[0].lstrip("+~") not in CHILD_DROPPED_HYDRA_KEYS
    ]
    task = list(hydra_cfg.overrides.task)
    if ckpt_path:
        quoted = str(ckpt_path).replace("\\", "\\\\").replace("'", "\\'")
        task = [o for o in task if o.split("=", 1)[0].lstrip("+~") != "ckpt_path"] + [f"ckpt_path='{quoted}'"]
    return [argv[0], *_config_flags(argv[1:]), *task, *hydra_overrides, "hydra.mode=RUN"]


@contextlib.contextmanager
def _ddp_children_rerun_this_job(cfg: DictConfig, resume_from: Path | None = None) -> Iterator[None]:
    """Make Lightning's DDP children (``_hydra_subprocess_cmd``) run this job, as a single run, in its directory
    (from ``resume_from`` when the job continues an earlier attempt)."""
    hydra_cfg = HydraConfig.get()
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="")).lower()
    if _is_subprocess_ddp(cfg) and "joblib" in launcher:
        raise UserError(
            f"trainer.strategy={cfg.trainer.strategy} starts one process per device by re-running train.py, which a "
            "joblib worker cannot do; use the basic launcher (jobs one after another, each on all devices) or "
            "hydra/launcher=slurm"
        )
    argv_before = list(sys.argv)
    run_dir_before = OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"]  # type: ignore[index]
    sys.argv = child_argv(argv_before, str(resume_from) if resume_from else None)
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(_job_dir())
    try:
        yield
    finally:
        sys.argv = argv_before
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = run_dir_before


def _release_rank_processes(threads_before: set[threading.Thread]) -> None:
    """Disarm the child-process observers this job started, then wait for (or kill) the job's rank processes."""
    children = disarm_process_observers(threads_before)
    deadline = time.monotonic() + RANK_EXIT_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("rank process %s of the finished job is still running; killing it", child.pid)
            child.kill()
            child.wait()
        if child.returncode:
            log.info("rank process %s of the finished job exited with code %s", child.pid, child.returncode)


def _reset_distributed(env_before: dict[str, str | None]) -> None:
    """Undo what a DDP job left in this process: the process group and the launcher's environment variables."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - best effort, the next job re-initializes anyway
        log.warning("could not destroy the torch.distributed process group: %s", exc)
    for name, value in env_before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
