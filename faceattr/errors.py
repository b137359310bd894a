"""User errors: expected mistakes (a missing folder, a bad override) and a full or read-only disk, reported as one
line, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


# Write failures that are the machine's state, not a bug: reported as one line (disk_write_error).
NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# Recognised wherever they come from (a library's own write); the others only from a write we know is one.
ANY_WRITE_ERRNOS = (*NO_SPACE, errno.EROFS)


def _where_to_write() -> str | None:
    """The setting that sends this process's output elsewhere: the run dir of train.py, the folder of export.py."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.job.config_name in ("export", "eval"):
        return "output_dir=..."
    return "hydra.sweep.dir=..." if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir=..."


def _existing(directory: Path) -> Path | None:
    """``directory`` or its nearest existing parent (where free space can be measured)."""
    for candidate in (directory, *directory.parents):
        if candidate.is_dir():
            return candidate
    return None


def format_size(size: float) -> str:
    """``38.2 MB``: decimal units, as ``ls -h --si`` and ``df -H`` show them."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest of ``path``'s parents that exists but is a file (which no directory can be created in), if any."""
    for candidate in path.parents:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def disk_write_error(
    exc: OSError,
    path: str | Path | None = None,
    needed: int | None = None,
    hint: str | None = None,
    what: str | None = None,
) -> UserError | None:
    """The one-line UserError for a write of ``path`` (``needed`` bytes) that failed with ``exc`` because the disk is
    full, the file system read-only, a parent is a file, or the directory gone or not writable; None for any other
    error. ``what``: how the message names what was written (default: ``path``).

    ``hint`` is the setting that writes elsewhere (default: ``hydra.run.dir=...`` in a training run,
    ``hydra.sweep.dir=...`` in a sweep, ``output_dir=...`` in an export or evaluation). Without ``path`` (a library's
    own write, see find_user_error) only a full disk and a read-only file system are recognised.
    """
    code = exc.errno
    target = Path(path) if path is not None else (Path(str(exc.filename)) if exc.filename else None)
    what = what or (str(target) if target is not None else "a file")
    setting = hint or _where_to_write()
    if code in NO_SPACE:
        sizes = []
        existing = _existing(target.parent) if target is not None else None
        if existing is not None:
            with contextlib.suppress(OSError):
                sizes.append(f"{format_size(shutil.disk_usage(existing).free)} free")
        if needed:
            sizes.append(f"~{format_size(needed)} needed")
        shown = f" ({', '.join(sizes)})" if sizes else ""
        fix = f"free space or set {setting}" if setting else "free space or write elsewhere"
        return UserError(f"{NO_SPACE[code]} writing {what}{shown}: {fix}")
    if code == errno.EROFS:
        fix = f"set {setting} to a writable directory" if setting else "write to a writable directory"
        return UserError(f"read-only file system writing {what}: {fix}")
    if path is None:
        return None
    directory = Path(path).parent
    blocker = _file_in_the_way(Path(path))
    if code in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        fix = f"move it away or set {setting}" if setting else "move it away or write elsewhere"
        return UserError(f"{blocker} is a file, not a directory (writing {what}): {fix}")
    if code in (errno.ENOENT, errno.ENOTDIR) and not directory.is_dir():
        fix = f"recreate it or set {setting}" if setting else "recreate it"
        return UserError(f"the output directory {directory} vanished writing {what} (deleted or unmounted?): {fix}")
    if code in (errno.EACCES, errno.EPERM):
        # The directory refusing: the parent of what the failing call created (a file, or a directory of mkdir -p).
        directory = Path(str(exc.filename)).parent if exc.filename else directory
        fix = f"make {directory} writable or set {setting}" if setting else f"make {directory} writable"
        return UserError(f"permission denied writing {what}: {fix}")
    return None


def find_user_error(exc: BaseException) -> UserError | None:
    """Return the UserError behind ``exc`` (Hydra's instantiate and DataLoader workers wrap it), if any; a full disk
    or read-only file system behind it (a library's own write failing) counts as one (see disk_write_error)."""
    seen: set[int] = set()
    disk_error: OSError | None = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        if disk_error is None and isinstance(current, OSError) and current.errno in ANY_WRITE_ERRNOS:
            disk_error = current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return disk_write_error(disk_error) if disk_error is not None else None


def one_line(error: UserError) -> str:
    """The user-facing line of ``error``.

    A UserError raised inside a DataLoader worker comes back re-created with the worker's whole traceback as its
    message; the line we wrote is the last one, after the class name.
    """
    text = str(error).strip()
    last = text.splitlines()[-1] if text else type(error).__name__
    marker = "UserError: "
    return last.split(marker, 1)[1] if marker in last and "\n" in text else last


def exit_on_user_error(func: F) -> F:
    """Decorate an entry point: a UserError anywhere below becomes ``error: <line>`` on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {one_line(user_error)}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
