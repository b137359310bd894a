"""The pre-decoded image cache (``data.cache``): each split decoded, cropped and resized once, read back memory-mapped.

Decoding a JPEG costs most of a data worker's time per image, every epoch (the idea behind FFCV and DALI is to pay
it once). With ``data.cache=<dir>`` the datamodule's ``setup`` writes, per split, the uint8 model inputs that the
uncached path produces before augmentation (decode, centre crop, resize: the same code, so the same pixels) into

    <dir>/<split>.npy     (N, 3, H, W) uint8, a NumPy array file read with ``numpy.load(mmap_mode="r")``
    <dir>/<split>.json    its header, written last: the key it was built for, its shape and the skipped items

Later epochs, later runs and the other DDP ranks read from it; augmentation (``data.train_augment``: flip, ...) still
runs per item and epoch, on the uint8 image. It takes ``N x 3 x H x W`` bytes: 202,599 CelebA images are ~2.5 GB at
64x64, ~10 GB at 128x128 and ~23.6 GB at the whole 218x178 frame.

Key: a hash of the real path of the image folder, the split's file list (so ``limit``/``val_limit``/``seed`` count),
the input size, the crop and the preprocessing steps. A header with another key is rebuilt in place (one slot per
split). Replacing image files under the same names is not detected: delete the folder then.

Complete or absent: the array is written to a temporary file in ``<dir>`` and renamed (``faceattr.atomic``), the
old header is removed before and the new one written after, all under an exclusive ``fcntl`` lock on
``<dir>/.lock`` (as the generated-data cache does), so concurrent runs build a split once and never read half of
one. Its size is checked against the free space first; a build that runs out of disk anyway leaves nothing.

With ``data.align=detect`` (``faceattr/data/face_align.py``) the cached images are the aligned faces: detection and
alignment run once, in this build, and the key holds the detector settings (through the loader's repr). A photo in
which the detector finds no face is recorded in the header's ``no_face`` list (skipped for that reason, not as
corrupt) and left out of the split: the split's ``filenames`` and ``labels`` are those of the photos with a face.
Its count and first paths are logged when the cache is built and whenever it is read, without detecting again.

Bad images behave as without the cache: with ``skip_corrupt=false`` the build stops with the same one-line error;
with ``skip_corrupt=true`` the item is recorded as skipped in the header, and reading it gives ``None``, which
``collate_skipping_corrupt`` drops and counts. A cache holding skipped items is refused by a run with
``skip_corrupt=false`` with that item's error (or rebuilt, if the file has been fixed meanwhile).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from faceattr.atomic import atomic_path, remove_stale_temporaries, write_json
from faceattr.data.celeba import CelebAImages
from faceattr.data.face_align import NoFaceError
from faceattr.errors import UserError, format_size
from faceattr.progress import Progress

log = logging.getLogger(__name__)

#: Bumped when the file format or the meaning of the pixels changes: older caches are rebuilt.
CACHE_VERSION = 1
SETTING = "data.cache"
#: Images decoded per batch of the build's DataLoader.
BUILD_BATCH = 64
#: Paths of photos without a face named in the log (the header lists them all).
NO_FACE_SHOWN = 5


def cache_bytes(num_images: int, image_size: Sequence[int]) -> int:
    """Disk size of a cached split: one uint8 byte per channel and pixel (the array file's header aside)."""
    height, width = image_size
    return num_images * 3 * height * width


def cache_key(source: CelebAImages, image_size: Sequence[int], crop: Sequence[int] | None) -> dict:
    """What a cached split depends on; its ``key`` entry is the hash the header records."""
    files = hashlib.sha256(b"\n".join(bytes(name) for name in source.filenames)).hexdigest()
    decoder = repr(source.loader)
    described = {
        "version": CACHE_VERSION,
        "image_dir": os.path.realpath(source.image_dir),
        "files_sha256": files,
        "num_images": len(source),
        "image_size": list(image_size),
        "crop": None if crop is None else list(crop),
        "preprocessing": f"{decoder} then {source.transform!r}",
    }
    described["key"] = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return described


class CachedImages(CelebAImages):
    """The images of ``source`` read from its cache file: the same items, ``(uint8 (3, H, W), labels)``, with only
    ``transform`` (the augmentation, or None) left to run per item; a skipped item is ``None``.

    ``rows``: the array rows (``source``'s indices) kept, in order, when some are left out (photos without a face);
    None: all. ``filenames``, ``labels`` and ``skipped`` are those of the kept rows.

    The array is opened (memory-mapped, read-only) in each process on first use, so DataLoader workers share the
    page cache and pickling the dataset copies no pixels.
    """

    def __init__(self, source: CelebAImages, array_path: Path, skipped: np.ndarray, transform=None, rows=None) -> None:
        filenames, labels = source.filenames, source.labels
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            filenames, labels, skipped = filenames[rows], labels[torch.from_numpy(rows)], skipped[rows]
        super().__init__(source.image_dir, filenames, labels, transform, source.skip_corrupt, source.loader)
        self.array_path = str(array_path)
        self.skipped = skipped
        self.rows = rows
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def _images(self) -> np.ndarray:
        if self._array is None:  # a plain ndarray over the mapping: indexing a np.memmap costs twice as much
            self._array = np.load(self.array_path, mmap_mode="r").view(np.ndarray)
        return self._array

    def __getitem__(self, index: int):
        if self.skipped[index]:
            return None
        row = index if self.rows is None else self.rows[index]
        image = torch.from_numpy(np.array(self._images()[row]))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def __getitems__(self, indices: list[int]) -> list:
        """The items of a batch (what a DataLoader asks for): one read of the array and one of the labels, then
        the augmentation per image."""
        rows = np.asarray(indices, dtype=np.int64)
        images = torch.from_numpy(self._images()[rows if self.rows is None else self.rows[rows]])
        labels = self.labels[torch.as_tensor(indices, dtype=torch.int64)]
        items = []
        for position, index in enumerate(indices):
            if self.skipped[index]:
                items.append(None)
                continue
            image = images[position]
            if self.transform is not None:
                image = self.transform(image)
            items.append((image, labels[position]))
        return items


class _Numbered(Dataset):
    """``(index, image or None, no face)`` of ``images`` (built with ``skip_corrupt=True``), for the build's
    DataLoader: None for a corrupt image, and ``no face`` True for a photo the detector finds no face in."""

    def __init__(self, images: CelebAImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            item = self.images[index]
        except NoFaceError:
            return index, None, True
        return index, None if item is None else item[0], False


def _keep_list(items):
    return items


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of the cache folder (created if needed)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = (directory / ".lock").open("a")
    except OSError as exc:
        raise UserError(f"cannot create the {SETTING} folder {directory}: {exc.strerror or exc}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_header(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _usable(header: dict | None, wanted: dict, array_path: Path, image_size: Sequence[int]) -> bool:
    if header is None or header.get("key") != wanted["key"]:
        return False
    try:
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.dtype == np.uint8 and array.shape == (wanted["num_images"], 3, *image_size)


def _check_space(directory: Path, split: str, num_images: int, image_size: Sequence[int]) -> None:
    needed = cache_bytes(num_images, image_size)
    free = shutil.disk_usage(directory).free
    if needed > free:
        height, width = image_size
        raise UserError(
            f"{SETTING} needs ~{format_size(needed)} for the {num_images} {split} images at {height}x{width} but "
            f"{directory} has {format_size(free)} free: free space, point {SETTING} at a larger disk, or set "
            f"{SETTING}=null"
        )


def _build(
    source: CelebAImages, split: str, array_path: Path, image_size: Sequence[int], num_workers: int
) -> tuple[list[int], list[int]]:
    """Write the array file of ``source``'s pre-augmentation images; returns the skipped (corrupt) indices and
    those of the photos without a face."""
    tolerant = CelebAImages(
        source.image_dir, source.filenames, source.labels, source.transform, skip_corrupt=True, loader=source.loader
    )
    loader = DataLoader(_Numbered(tolerant), batch_size=BUILD_BATCH, num_workers=num_workers, collate_fn=_keep_list)
    shape = (len(source), 3, *image_size)
    blank = np.zeros(shape[1:], dtype=np.uint8)
    skipped: list[int] = []
    no_face: list[int] = []
    aligning = getattr(source.loader, "aligner", None) is not None
    progress = Progress(len(source), f"{'detecting faces and caching' if aligning else 'caching'} {split}")
    try:
        with atomic_path(array_path, hint=f"{SETTING}=...") as temporary, open(temporary, "wb") as file:
            np.lib.format.write_array_header_1_0(
                file,
                {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape},
            )
            for batch in loader:
                for index, image, faceless in batch:
                    if faceless:
                        no_face.append(index)
                        file.write(blank.tobytes())
                    elif image is None:
                        if not source.skip_corrupt:
                            source[index]  # raises the one-line error of the uncached path
                        skipped.append(index)
                        file.write(blank.tobytes())
                    else:
                        file.write(image.numpy().tobytes())  # C order of (3, H, W) whatever the tensor's strides
                progress.advance(len(batch))
            file.flush()
    finally:
        progress.close()
    return skipped, no_face


def _kept_rows(source: CelebAImages, split: str, no_face: list[int]) -> np.ndarray | None:
    """The rows of the photos with a face (None: all), after logging those without one; a one-line UserError when
    no photo of the split has a face."""
    if not no_face:
        return None
    shown = ", ".join(source.path(index) for index in no_face[:NO_FACE_SHOWN])
    more = f" and {len(no_face) - NO_FACE_SHOWN} more" if len(no_face) > NO_FACE_SHOWN else ""
    if len(no_face) == len(source):
        raise UserError(
            f"the detector finds no face in any of the {len(source)} {split} photos (data.align=detect; e.g. "
            f"{shown}): check the photos, or lower data.detector.min_score or raise data.detector.max_side"
        )
    log.warning(
        "%d of the %d %s photos show no face the detector finds (data.align=detect); left out: %s%s",
        len(no_face),
        len(source),
        split,
        shown,
        more,
    )
    return np.setdiff1d(np.arange(len(source)), np.asarray(no_face, dtype=np.int64))


def cached(
    source: CelebAImages,
    directory: str | Path,
    split: str,
    image_size: Sequence[int],
    crop: Sequence[int] | None,
    augmentation=None,
    num_workers: int = 0,
) -> CachedImages:
    """``source`` (whose ``transform`` is the crop and resize, without augmentation) read from its cache in
    ``directory``, built first unless a complete one for the same key is there; ``augmentation`` runs per item."""
    directory = Path(directory).expanduser()
    array_path, header_path = directory / f"{split}.npy", directory / f"{split}.json"
    wanted = cache_key(source, image_size, crop)
    with _locked(directory):
        header = _read_header(header_path)
        if _usable(header, wanted, array_path, image_size) and _still_valid(source, header["skipped"]):
            log.info("reading the %s images from the cache %s", split, array_path)
        else:
            if header is not None:
                log.info("rebuilding the cached %s images in %s: data or preprocessing changed", split, directory)
            remove_stale_temporaries(directory)
            with contextlib.suppress(FileNotFoundError):
                header_path.unlink()
            with contextlib.suppress(FileNotFoundError):
                array_path.unlink()
            _check_space(directory, split, len(source), image_size)
            log.info(
                "caching the %d %s images at %dx%d in %s (~%s)",
                len(source),
                split,
                *image_size,
                array_path,
                format_size(cache_bytes(len(source), image_size)),
            )
            skipped, no_face = _build(source, split, array_path, image_size, num_workers)
            header = {**wanted, "shape": [len(source), 3, *image_size], "skipped": skipped, "no_face": no_face}
            write_json(header_path, header, hint=f"{SETTING}=...")
    mask = np.zeros(len(source), dtype=bool)
    mask[header["skipped"]] = True
    rows = _kept_rows(source, split, header.get("no_face", []))
    return CachedImages(source, array_path, mask, augmentation, rows)


def _still_valid(source: CelebAImages, skipped: list[int]) -> bool:
    """Whether a cache with ``skipped`` items suits ``source``: always with ``skip_corrupt``; without it, the first
    skipped image raises its error, as uncached, and an image fixed since the build makes the cache stale."""
    if not skipped or source.skip_corrupt:
        return True
    source[skipped[0]]  # raises the one-line error when the file is still bad
    return False
