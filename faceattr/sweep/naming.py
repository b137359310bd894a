"""``${multirun_job_name:}``: a multirun job's overrides as one safe path component ("" outside multiruns).

``conf/logger/tensorboard.yaml`` uses it as the TensorBoard logger's ``version``, so each job of a sweep writes its
events to ``<job dir>/tensorboard/<overrides>/`` and ``tensorboard --logdir <sweep dir>`` lists the jobs as
``0/tensorboard/model=resnet34,optimizer.lr=0.001``, ``1/tensorboard/...``. Single runs keep their events directly in
``<run dir>/tensorboard/``.
"""

from __future__ import annotations

import hashlib

# Longest name we produce (bytes): file names are limited to 255 bytes on common file systems.
MAX_BYTES = 200


def safe_path_component(name: str, max_bytes: int = MAX_BYTES) -> str:
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
    """The current job's ``hydra.job.override_dirname`` in a multirun, made path-safe; "" otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return ""
    return safe_path_component(str(hydra_cfg.job.override_dirname or ""))
