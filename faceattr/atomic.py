"""Atomic file writes: every file the project writes is either complete under its final name or absent.

A write goes to a temporary file in the destination directory (``.<name>.<random>.partial``: hidden, so a glob for
``*.ckpt`` or ``*.json`` never matches it), is flushed and fsynced, then renamed over the final name with
``os.replace`` (atomic within one filesystem) and the directory is fsynced. A crash or a full disk leaves the previous
complete file or none; the temporary file is removed on error, and :func:`remove_stale_temporaries` removes those a
killed process left behind (``train.py`` does it when a run starts).

A write that fails because the disk is full, the file system is read-only or the directory vanished raises the
one-line :class:`~faceattr.errors.UserError` of :func:`faceattr.errors.disk_write_error`.

- :func:`write_bytes`, :func:`write_text`, :func:`write_json`: data already in memory.
- :func:`atomic_path`: writers that need a path (``torch.jit.save``, ``onnx.save``, ``savefig``).
- :func:`writable_directory`: an entry's output folder, created and proven writable before its slow steps run (a
  parent that is a file, not writable or read-only is the same kind of one line, naming the folder).
- Lightning's checkpoint saving goes through :func:`write_bytes` too: ``faceattr.checkpoint_io.AtomicCheckpointIO``,
  a Trainer plugin in ``conf/trainer/default.yaml`` (its own module: it imports Lightning, this one does not).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from faceattr.errors import disk_write_error

log = logging.getLogger(__name__)

TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"
# The final name's share of a temporary name (file names are limited to 255 bytes).
TEMP_NAME_CHARS = 200
# Errors of fsync on a directory from file systems that do not support it: the rename itself has happened.
UNSUPPORTED_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES)


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named like a temporary file of this module."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create (exclusively) and open a new temporary file beside ``path``; permissions follow the umask."""
    while True:
        temp = path.with_name(f"{TEMP_PREFIX}{path.name[:TEMP_NAME_CHARS]}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in UNSUPPORTED_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in UNSUPPORTED_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _write(file: BinaryIO, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``file`` (the point where a full disk fails)."""
    file.write(data)


@contextlib.contextmanager
def translated(path: Path, needed: int | None, hint: str | None) -> Iterator[None]:
    """Turn a full disk, a read-only file system or a vanished directory into the one-line UserError."""
    try:
        yield
    except OSError as exc:
        error = disk_write_error(exc, path, needed, hint)
        if error is None:
            raise
        raise error from exc


def write_bytes(path: str | Path, data: bytes | bytearray | memoryview, *, hint: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, rename); returns ``path``.

    ``hint``: the setting that writes elsewhere, for the disk-full message (default: see ``disk_write_error``).
    """
    path = Path(path)
    view = memoryview(data)
    with translated(path, view.nbytes, hint):
        fd, temp = _create_temporary(path)
        try:
            with open(fd, "wb") as file:
                _write(file, view)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            _remove(temp)
            raise
        _fsync_directory(path.parent)
    return path


def write_text(path: str | Path, text: str, *, hint: str | None = None) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"), hint=hint)


def write_json(path: str | Path, obj: Any, *, hint: str | None = None) -> Path:
    """Write ``obj`` as JSON (indent 2, ``default=str``, trailing newline) to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n", hint=hint)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, hint: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name; on success it is fsynced and
    renamed to ``path``, on error removed.

    The temporary name ends in ``.partial``: give writers that pick the format by extension the format explicitly
    (``savefig(..., format="png")``). A writer that reports a full disk without an ``OSError`` (``torch.save``
    raises a RuntimeError) is better served by writing into memory and :func:`write_bytes`.
    """
    path = Path(path)
    with translated(path, None, hint):
        fd, temp = _create_temporary(path)
        os.close(fd)
    try:
        yield temp
        with translated(path, _size(temp), hint):
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            _fsync_directory(path.parent)
    except OSError as exc:
        needed = _size(temp)
        _remove(temp)
        error = disk_write_error(exc, path, needed, hint)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        _remove(temp)
        raise


def writable_directory(directory: str | Path, *, hint: str | None = None) -> Path:
    """Create ``directory`` (and its parents) and write and remove a temporary file in it; returns it.

    An entry calls it before its slow steps for the folder its results go to, so that a folder that cannot be
    written fails first, in one line naming it and ``hint`` (the setting that writes elsewhere), not after them.
    """
    directory = Path(directory)
    what = f"the output directory {directory}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = _create_temporary(directory / "write-check")
        os.close(fd)
        _remove(temp)
    except OSError as exc:
        error = disk_write_error(exc, directory / "write-check", None, hint, what)
        if error is None:
            raise
        raise error from exc
    return directory


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files a killed writer left in ``directory`` (not below it); returns what was removed."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if is_temporary(entry) and entry.is_file():
            _remove(entry)
            removed.append(entry)
    if removed:
        log.info("removed %d stale temporary file(s) in %s", len(removed), directory)
    return removed
