"""Every OmegaConf resolver the configs use, registered in one explicit place: :func:`register_resolvers`.

The entry scripts call it before Hydra composes (``conf/hydra/default.yaml`` uses ``${coalesce:}`` and
``${run_id:}`` in the run and sweep dirs); ``train()`` calls it again (idempotent) for in-process use.

- ``${coalesce:a,b}``: the first value that is not null/empty (``resume=<run dir>`` or a new run dir);
- ``${run_id:}``: a short id that tells apart runs started in the same second;
- ``${multirun_job_name:}``: a multirun job's overrides as one safe path component ("" outside multiruns).
  ``conf/logger/tensorboard.yaml`` uses it as the TensorBoard logger's ``version``, so each job of a sweep writes
  its events to ``<job dir>/tensorboard/<overrides>/`` and ``tensorboard --logdir <sweep dir>`` lists the jobs as
  ``0/tensorboard/model=resnet34,optimizer.lr=0.001``, ``1/tensorboard/...``; single runs keep their events
  directly in ``<run dir>/tensorboard/``.

They name run folders, below everything else: this module imports nothing of the product.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any

from omegaconf import OmegaConf

RUN_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
RUN_ID_CHARS = 4
_run_id: str | None = None
#: Longest job name produced (bytes): file names are limited to 255 bytes on common file systems.
MAX_NAME_BYTES = 200


def coalesce(*values: Any) -> Any:
    """The first value that is not None/empty (the ``${coalesce:a,b}`` resolver)."""
    return next((value for value in values if value not in (None, "")), None)


def run_id() -> str:
    """The ``${run_id:}`` resolver: a short id that tells apart runs started in the same second, the same for the
    whole process (Hydra may resolve the run dir more than once).

    On SLURM it is the job's id (``<array job>_<task>`` for an array job, ``.<step>`` added for a later ``srun`` step),
    the same in every task of a multi-task job (DDP ranks started by SLURM share the run dir); else 4 random
    characters of ``[0-9a-z]``. DDP ranks started by Lightning get the run dir itself (``hydra.run.dir=...``); sweep
    jobs get the sweep dir from the launching process (Hydra copies the resolver cache to them).
    """
    global _run_id
    if _run_id is None:
        env = os.environ
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            slurm = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        else:
            slurm = env.get("SLURM_JOB_ID", "")
        step = env.get("SLURM_STEP_ID", "")
        if slurm and step.isdigit() and step != "0":
            slurm += f".{step}"
        _run_id = slurm or "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(RUN_ID_CHARS))
    return _run_id


def safe_path_component(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` usable as one directory name: no path separators, at most ``max_bytes`` (then a hash suffix)."""
    name = name.replace("/", "_").replace("\\", "_").replace("\0", "")
    if name in (".", ".."):
        name = name.replace(".", "_")
    encoded = name.encode()
    if len(encoded) <= max_bytes:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    return encoded[: max_bytes - 11].decode(errors="ignore") + "~" + digest


def multirun_job_name() -> str:
    """The ``${multirun_job_name:}`` resolver: the current job's ``hydra.job.override_dirname`` in a multirun, made
    path-safe; "" otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    return safe_path_component(str(hydra_cfg.job.override_dirname or ""))


def register_resolvers() -> None:
    """Register every resolver (idempotent)."""
    for name, resolver, cache in (
        ("coalesce", coalesce, False),
        ("run_id", run_id, True),
        ("multirun_job_name", multirun_job_name, False),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=cache)
