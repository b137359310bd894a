"""Resume a sweep: run the same ``-m`` command again with ``hydra.sweep.dir=<the sweep dir>``.

Job dirs are named by job number, and the same command makes the same jobs in the same order, so job ``n`` of the
new invocation is job ``n`` of the old one. What each job does then (:func:`previous_attempt`, called by
:func:`faceattr.sweep.jobs.run_multirun_job` before the job trains):

- ``run.json`` says ``completed`` or ``pruned``: the job is skipped; its files stay untouched and the summary at the
  end lists it with the others;
- otherwise (no ``run.json``, ``running``: the job was killed; ``failed``) it runs again: from its last checkpoint
  that loads (``faceattr/resume.py``'s rule: ``last.ckpt``, else the newest good one) when it has one, else from
  the start. To start a job over, delete its directory.

Before the first job starts, :func:`check_before_launch` (the sweep callback's ``on_multirun_start``) refuses, with
one line and nothing written:

- a job dir whose recorded overrides differ from what this command gives that job number (another command, or the
  same values in another order): results of two sweeps would mix;
- ``resume=`` in a multirun: it resumes a single run (its own config); a sweep is resumed with ``hydra.sweep.dir``;
- an Optuna search into a sweep dir that already holds jobs: the sampler proposes new points, so job numbers would
  not match. An Optuna search continues through its study storage, into a new sweep dir (docs/sweeps.md).

Each job records ``status: running`` with its overrides in ``run.json`` when it starts (:func:`running_record`):
that is what the next invocation compares with, since Hydra rewrites ``.hydra/overrides.yaml`` before a job runs.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from faceattr.errors import UserError
from faceattr.hydra_workarounds import BASIC_SWEEPER, basic_sweeper_jobs
from faceattr.layout import CHECKPOINT_DIR
from faceattr.run_record import RunRecord, Status, read_run_record

log = logging.getLogger(__name__)

SWEEP_CONFIG = "multirun.yaml"  # Hydra's copy of the sweep's config in the sweep dir


@dataclass
class PreviousAttempt:
    """What an earlier invocation left in a job dir."""

    status: Status | None  # run.json's status; None without run.json (an unreadable one reads as failed)
    best_score: float | None = None
    resume_from: Path | None = None  # the checkpoint to continue from, None to start from the beginning

    @property
    def done(self) -> bool:
        return self.status is not None and self.status.done


def recorded_overrides(job_dir: Path) -> list[str] | None:
    """The overrides the job dir was made with: ``run.json``'s, else ``.hydra/overrides.yaml`` (still the old
    invocation's in the launching process, before the sweeper starts)."""
    record = read_run_record(job_dir)
    if record is not None and record.overrides:
        return list(record.overrides)
    saved = Path(job_dir) / ".hydra" / "overrides.yaml"
    if saved.is_file():
        try:
            return [str(o) for o in OmegaConf.load(saved)]
        except Exception:  # noqa: BLE001 - unreadable: nothing to compare with
            return None
    return None


def check_same_job(job_dir: Path, recorded: list[str], overrides: list[str], sweep_command: str | None = None) -> None:
    """Refuse (UserError) when the job dir was made with other overrides than this job's (in any order)."""
    if sorted(recorded) == sorted(overrides):
        return
    job_dir = Path(job_dir)
    old = [o for o in recorded if o not in overrides]
    new = [o for o in overrides if o not in recorded]
    fix = (
        f"resume it with the command that made it: {sweep_command}"
        if sweep_command
        else "resume it with the command that made it"
    )
    raise UserError(
        f"hydra.sweep.dir={job_dir.parent}: job {job_dir.name} was run with [{' '.join(old)}] where this command "
        f"gives it [{' '.join(new)}]; {fix}, or give a new hydra.sweep.dir"
    )


def last_good_checkpoint(job_dir: Path) -> Path | None:
    """The checkpoint an unfinished job continues from (faceattr/resume.py's rule), None when it has none."""
    checkpoints = Path(job_dir) / CHECKPOINT_DIR
    if not checkpoints.is_dir() or not any(checkpoints.glob("*.ckpt")):
        return None
    from faceattr.resume import resume_checkpoint

    try:
        return resume_checkpoint(Path(job_dir))
    except UserError as exc:
        log.warning("job %s: %s; starting it over", Path(job_dir).name, exc)
        return None


def previous_attempt(job_dir: Path, overrides: list[str]) -> PreviousAttempt:
    """What to do with a job dir an earlier invocation may have left: skip it, continue it or start it.

    Raises UserError when the dir belongs to a job with other overrides (see :func:`check_same_job`)."""
    record = read_run_record(job_dir)
    if record is None:
        return PreviousAttempt(None, resume_from=last_good_checkpoint(job_dir))
    if record.overrides:
        check_same_job(job_dir, record.overrides, overrides)
    if record.status.done:
        return PreviousAttempt(record.status, best_score=record.best_score)
    return PreviousAttempt(record.status, resume_from=last_good_checkpoint(job_dir))


def running_record(overrides: list[str], cfg: DictConfig, resume_from: Path | None) -> RunRecord:
    """The ``run.json`` of a job that has started (replaced by the completed or failed record when it ends)."""
    return RunRecord(
        status=Status.RUNNING,
        overrides=list(overrides),
        backbone=OmegaConf.select(cfg, "model.backbone", default=None, throw_on_resolution_failure=False),
        monitor=OmegaConf.select(cfg, "monitor.metric", default=None, throw_on_resolution_failure=False),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        resumed_from=str(resume_from) if resume_from else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Before the first job: refuse what cannot resume cleanly (the launching process, before the sweeper writes).


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs (named by job number) an earlier invocation left in ``sweep_dir``."""
    if not Path(sweep_dir).is_dir():
        return []
    jobs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def sweep_command(sweep_dir: Path) -> str | None:
    """``python train.py -m <overrides> hydra.sweep.dir=<sweep dir>`` of the invocation that made ``sweep_dir``
    (from Hydra's ``multirun.yaml``), None when unknown."""
    saved = Path(sweep_dir) / SWEEP_CONFIG
    try:
        task = [str(o) for o in OmegaConf.load(saved).hydra.overrides.task]
    except Exception:  # noqa: BLE001 - no or unreadable multirun.yaml
        return None
    return shlex.join(["python", "train.py", "-m", *task, f"hydra.sweep.dir={sweep_dir}"])


def expected_job_overrides(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job the basic sweeper will launch, in job-number order (None when they cannot be
    worked out here, e.g. a ``glob()`` sweep: the jobs then check themselves)."""
    try:
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
        return basic_sweeper_jobs(params, [str(o) for o in config.hydra.overrides.task])
    except Exception as exc:  # noqa: BLE001 - e.g. glob() needs Hydra's config loader
        log.debug("cannot work out the jobs of this sweep before it starts (%s); each job checks itself", exc)
        return None


def check_before_launch(config: DictConfig) -> None:
    """Refuse (UserError, one line) a multirun that would mix with what its sweep dir holds; log what resumes."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    resume = OmegaConf.select(config, "resume", default=None)
    if resume:
        command = sweep_command(Path(str(resume)))
        raise UserError(
            "resume= continues a single run; to resume a sweep run the same -m command again with "
            "hydra.sweep.dir=<sweep dir> instead of resume=" + (f": {command}" if command else "")
        )
    jobs = job_dirs(sweep_dir)
    if not jobs:
        return
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if "optuna" in sweeper.lower():
        raise UserError(
            f"hydra.sweep.dir={sweep_dir} already holds {len(jobs)} job(s): an Optuna search continues through its "
            "study storage (same hydra.sweeper.storage and study_name) into a new sweep dir; drop hydra.sweep.dir"
        )
    expected = expected_job_overrides(config) if sweeper == BASIC_SWEEPER else None
    if expected is not None:
        command = sweep_command(sweep_dir)
        for job in jobs:
            recorded = recorded_overrides(job)
            number = int(job.name)
            if recorded is not None and number < len(expected):
                check_same_job(job, recorded, expected[number], command)
    done = sum(record is not None and record.status.done for record in map(read_run_record, jobs))
    log.info(
        "resuming the sweep in %s: %d of its %d job dir(s) finished and are kept; the others run again",
        sweep_dir,
        done,
        len(jobs),
    )
