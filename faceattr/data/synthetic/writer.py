"""Writing generated folders so that each is complete or absent, and the cache of generated data.

A folder ``root`` is built in a new temporary sibling ``.<name>.partial-<hex>`` (same file system), flushed to disk
and only then renamed to ``root``; its marker, written last, records what it holds (generator version, number of
images, seed, layout). All of this runs under an exclusive lock on the sibling file ``.<name>.lock``, so a temporary
sibling seen while holding that lock was left by a killed run: it is removed. A generation that is killed or runs
out of disk space therefore never leaves a folder that looks complete.

``root`` is only ever replaced when it is empty or holds an earlier generated folder, and the cache
(:func:`ensure_synthetic`) never replaces one: a folder generated for other settings is reported, not regenerated,
since another run may be reading it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from faceattr.data.synthetic.celeba_files import (
    GENERATOR_VERSION,
    LAYOUTS,
    MARKER,
    marker,
    read_marker,
    write_kaggle,
    write_original,
)
from faceattr.errors import UserError, disk_write_error

log = logging.getLogger(__name__)

_PARTIAL = ".partial-"
_CACHE_SETTING = "data.root=..."  # where training's generated data goes (conf/data/synthetic.yaml)


def _check_arguments(num_images: int, seed: int, workers: int | None) -> None:
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise UserError(f"num_images must be a positive integer, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer or None, got {workers!r}")


def _real(root: Path) -> Path:
    """Where ``root`` really is (symbolic links resolved), so that its siblings are on its file system."""
    return Path(os.path.realpath(root))


def _lock_file(root: Path) -> Path:
    return root.parent / f".{root.name}.lock"


def _temporaries(root: Path) -> list[Path]:
    """The temporary siblings of ``root`` that exist now."""
    pattern = re.compile(re.escape(f".{root.name}{_PARTIAL}") + "[0-9a-f]{32}")
    try:
        names = os.listdir(root.parent)
    except OSError:
        return []
    return [root.parent / name for name in names if pattern.fullmatch(name)]


def _temporary_name(root: Path) -> Path:
    return root.parent / f".{root.name}{_PARTIAL}{uuid.uuid4().hex}"


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``root`` (creating its parent folder), after removing stale temporaries."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        handle = _lock_file(root).open("a")
    except OSError as exc:
        raise UserError(f"cannot create the output folder {root}: {exc.strerror or exc}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for stale in _temporaries(root):
                log.info("removing %s, left by an interrupted generation", stale)
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _describe(found: dict) -> str:
    text = f"{found.get('num_images')} images, seed {found.get('seed')}"
    if found.get("layout") != "original":
        text += f", {found.get('layout')} layout"
    if found.get("version") != GENERATOR_VERSION:
        text += f", generator version {found.get('version')}"
    return text


def _generated_contents(root: Path) -> dict | None:
    """The marker of the generated folder at ``root``, None if there is nothing (or an empty folder) there.

    Raises UserError for anything else: a file, or a folder holding other data, is never replaced.
    """
    if not root.exists():
        return None
    if not root.is_dir():
        raise UserError(f"{root} exists and is not a folder: choose another output folder")
    found = read_marker(root)
    if found is None and any(root.iterdir()):
        raise UserError(
            f"{root} holds files that are not a complete generated data set ({MARKER} is missing): "
            f"choose an empty or new folder, or delete it"
        )
    return found


def _check_replaceable(root: Path) -> None:
    found = _generated_contents(root)
    if found is not None:
        log.warning("replacing the generated data set in %s (%s)", root, _describe(found))


@contextlib.contextmanager
def _building(root: Path, setting: str | None = None) -> Iterator[Path]:
    """A new temporary sibling of ``root`` to build in; removed on the way out unless installed.

    A full disk (or a read-only or unwritable folder) is a one-line UserError naming ``setting``, the setting that
    writes elsewhere.
    """
    if os.path.ismount(root):  # cannot be renamed over, and its parent is another file system
        raise UserError(f"{root} is a mount point: generate into a new folder inside it")
    temporary = _temporary_name(root)
    try:
        temporary.mkdir()
        yield temporary
    except OSError as exc:
        error = disk_write_error(exc, root, hint=setting)
        if error is None:
            raise
        raise error from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _install(temporary: Path, root: Path) -> None:
    """Make the complete folder ``temporary`` appear at ``root`` in one rename (over nothing, an empty folder, or an
    earlier generated folder: the callers have refused anything else)."""
    # Everything written must be on disk before the rename, or a power cut could leave a folder that looks complete
    # but holds empty files. One sync(2) costs tens of ms where an fsync per image cost ~5 ms each (measured).
    os.sync()
    old = None
    if root.is_dir() and any(root.iterdir()):  # an earlier generated folder: moved aside, deleted once replaced
        old = _temporary_name(root)
        os.rename(root, old)
    try:
        os.rename(temporary, root)  # replaces a missing or empty folder
    except OSError:
        if old is not None:
            os.rename(old, root)
        raise
    _sync_directory(root.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate_celeba(root: str | Path, num_images: int, seed: int = 0, workers: int | None = None) -> Path:
    """Write ``num_images`` generated faces and all five annotation files in the original layout to ``root``.

    ``workers`` processes render the images (None: one per CPU); the output does not depend on it. ``root`` appears
    complete or not at all; an earlier generated folder there is replaced, other data is refused. Returns ``root``.
    """
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    real = _real(root)
    with _locked(real):
        _check_replaceable(real)
        with _building(real) as temporary:
            log.info("generating %d synthetic images (seed %d) into %s", num_images, seed, root)
            write_original(temporary, num_images, seed, workers)
            _install(temporary, real)
    return root


def ensure_synthetic(root: str | Path, num_images: int, seed: int = 0, workers: int | None = None) -> Path:
    """Return ``root`` holding generated data for (num_images, seed), generating it unless already there.

    Safe to call from several processes at once (DDP ranks, parallel sweep jobs): generation happens under the
    exclusive lock of ``root`` and its marker is checked again once the lock is held. A folder generated for other
    settings (or holding other data) is an error, never regenerated: another run may be reading it.
    """
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    real = _real(root)
    wanted = marker(num_images, seed, "original")
    if read_marker(real) == wanted and not _temporaries(real):
        return root
    with _locked(real):
        found = _generated_contents(real)
        if found == wanted:
            return root
        if found is not None:
            raise UserError(
                f"{root} holds generated data of {_describe(found)}, not {_describe(wanted)}; another "
                f"run may be reading it: give this one a folder of its own (data.root) or delete it"
            )
        with _building(real, _CACHE_SETTING) as temporary:
            log.info("generating %d synthetic images (seed %d) into %s", num_images, seed, root)
            write_original(temporary, num_images, seed, workers)
            _install(temporary, real)
    return root


def write_kaggle_layout(src_original_root: str | Path, dst_root: str | Path) -> Path:
    """Convert an original-layout CelebA folder into Kaggle's layout (``jessicali9530/celeba-dataset``) at ``dst_root``.

    See :func:`faceattr.data.synthetic.celeba_files.write_kaggle` for the files. ``dst_root`` appears complete or
    not at all; an earlier generated folder there is replaced, other data is refused. Returns ``dst_root``.
    """
    src, dst = Path(src_original_root).expanduser(), Path(dst_root).expanduser()
    real = _real(dst)
    with _locked(real):
        _check_replaceable(real)
        with _building(real) as temporary:
            write_kaggle(src, temporary)
            _install(temporary, real)
    return dst


def generate_synthetic(
    root: str | Path, num_images: int, seed: int = 0, layout: str = "original", workers: int | None = None
) -> Path:
    """Generate into ``root`` in ``layout`` (one of LAYOUTS); the entry point of the command-line script."""
    if layout not in LAYOUTS:
        raise UserError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "original":
        return generate_celeba(root, num_images, seed, workers)
    _check_arguments(num_images, seed, workers)
    root = Path(root).expanduser()
    real = _real(root)
    with _locked(real):
        _check_replaceable(real)
        # Render next to ``root`` (same file system, so the images are hard-linked, not copied), then convert.
        with _building(real) as original, _building(real) as temporary:
            log.info("generating %d synthetic images (seed %d, kaggle layout) into %s", num_images, seed, root)
            write_original(original, num_images, seed, workers)
            write_kaggle(original, temporary)
            _install(temporary, real)
    return root
