"""Reading CelebA from disk: the annotation files of both public layouts, and the image dataset.

Layouts (``root`` may also be the parent of a ``celeba/`` folder, as torchvision lays it out):

* original (Google Drive / torchvision): ``list_attr_celeba.txt``, ``list_eval_partition.txt``, ``img_align_celeba/``
* Kaggle ``jessicali9530/celeba-dataset``: ``list_attr_celeba.csv``, ``list_eval_partition.csv``,
  ``img_align_celeba/img_align_celeba/``

The attributes are the file's columns, in file order (CelebA's own file: the official 40); a CelebA-format folder
with other columns is read the same way. Labels are stored as uint8 0/1 (CelebA's -1 becomes 0); partitions are 0
train, 1 valid, 2 test. The annotation files are read as UTF-8 (:func:`read_annotation_text`): a file an editor saved
as UTF-16 or Latin-1 is refused with one line naming it.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from faceattr.data.transforms import ImageLoader
from faceattr.errors import UserError

SPLITS = {"train": 0, "valid": 1, "test": 2}

GET_CELEBA = (
    "get CelebA from Kaggle (jessicali9530/celeba-dataset) or the original Google Drive folder and point "
    "data.root at it, or train on generated data with data=synthetic"
)


@dataclass(frozen=True)
class CelebAIndex:
    """Everything the annotation files say: one row per image, in file order, every attribute column of the file.

    Also what a plain folder's CSV says (:func:`faceattr.data.folder.read_folder`, layout ``folder``): there the
    filenames are paths relative to ``image_dir``, labels may be unknown (255) and partitions -1 (no split column).
    """

    image_dir: Path
    layout: str
    filenames: np.ndarray  # (N,) fixed-width byte strings: no per-item Python objects to copy into workers
    attribute_names: tuple[str, ...]
    labels: torch.Tensor  # (N, A) uint8: 1, 0 (or UNKNOWN_LABEL in a folder CSV)
    partitions: torch.Tensor  # (N,) int64 in {0, 1, 2} (-1: not assigned yet)
    source: Path | None = None  # the annotation file
    skipped_rows: int = 0  # bad rows left out (data.skip_corrupt=true)

    def columns_of(self, names: Sequence[str], setting: str) -> list[int]:
        """The label columns of ``names`` (in that order); a one-line UserError naming the file's columns for a name
        it does not have (``setting`` says where the name was given)."""
        unknown = [name for name in names if name not in self.attribute_names]
        if unknown:
            raise UserError(
                f"unknown attribute(s) {', '.join(unknown)} in {setting}; valid names: "
                + ", ".join(self.attribute_names)
            )
        return [self.attribute_names.index(name) for name in names]


def _resolve_layout(root: Path) -> tuple[Path, str]:
    if not root.exists():
        raise UserError(f"data.root {root} does not exist: {GET_CELEBA}")
    for candidate in (root, root / "celeba"):
        if (candidate / "list_attr_celeba.txt").is_file():
            return candidate, "original"
        if (candidate / "list_attr_celeba.csv").is_file():
            return candidate, "kaggle"
    raise UserError(
        f"no CelebA annotations in {root}: expected {root / 'list_attr_celeba.txt'} (original layout) or "
        f"{root / 'list_attr_celeba.csv'} (Kaggle layout); {GET_CELEBA}"
    )


def _require(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"missing {path}: {GET_CELEBA}")
    return path


SAVE_AS_UTF8 = "save it as UTF-8 (plain text, as CelebA ships it) or re-download it"


def read_annotation_text(path: Path) -> str:
    """The text of an annotation file, which must be UTF-8 (a UTF-8 byte-order mark is allowed); a one-line UserError
    naming the file otherwise."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise UserError(f"{path} is saved as UTF-16, not UTF-8 text: {SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}: Latin-1 or another legacy "
            f"encoding?): {SAVE_AS_UTF8}"
        ) from None


def _read_original_attributes(path: Path) -> tuple[tuple[str, ...], list[str], list[list[str]], int]:
    """Return (attribute names, filenames, value rows, line number of the first row)."""
    lines = read_annotation_text(path).splitlines()
    if len(lines) < 2:
        raise UserError(f"{path} is truncated: expected a count line, a header line and one row per image")
    names = tuple(lines[1].split())
    filenames, rows = [], []
    for line in lines[2:]:
        parts = line.split()
        if parts:
            filenames.append(parts[0])
            rows.append(parts[1:])
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise UserError(f"{path} line 1: expected the number of images, found {lines[0][:40]!r}") from None
    if declared != len(filenames):
        raise UserError(f"{path} line 1 says {declared} images but the file has {len(filenames)} rows")
    return names, filenames, rows, 3


def _read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(read_annotation_text(path), newline=""))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path} is empty: expected a header line and one row per image")
    return header, [row for row in reader if row]


def _read_kaggle_attributes(path: Path) -> tuple[tuple[str, ...], list[str], list[list[str]], int]:
    header, rows = _read_csv_rows(path)
    return tuple(header[1:]), [row[0] for row in rows], [row[1:] for row in rows], 2


def _labels_from_rows(path: Path, rows: list[list[str]], num_attributes: int, first_line: int) -> torch.Tensor:
    for i, row in enumerate(rows):
        if len(row) != num_attributes:
            raise UserError(
                f"{path} line {first_line + i}: expected {num_attributes} attribute values, found {len(row)}"
            )
    try:
        values = np.asarray(rows, dtype=np.str_).astype(np.int8) if rows else np.zeros((0, num_attributes), np.int8)
    except ValueError:
        values = None
    bad = None if values is None else np.argwhere((values != 1) & (values != -1))
    if values is None or len(bad):
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if value.strip() not in ("1", "-1"):
                    raise UserError(
                        f"{path} line {first_line + i}, column {j + 2}: attribute values must be -1 or 1, "
                        f"found {value!r}"
                    )
    return torch.from_numpy((values == 1).astype(np.uint8))


def _read_partitions(path: Path, layout: str) -> dict[str, int]:
    if layout == "original":
        rows = [line.split() for line in read_annotation_text(path).splitlines() if line.strip()]
        first_line = 1
    else:
        _, rows = _read_csv_rows(path)
        first_line = 2
    partitions = {}
    for i, row in enumerate(rows):
        if len(row) != 2 or row[1].strip() not in ("0", "1", "2"):
            raise UserError(f"{path} line {first_line + i}: expected '<image> <0|1|2>', found {' '.join(row)!r}")
        partitions[row[0]] = int(row[1])
    return partitions


def read_celeba(root: str | Path) -> CelebAIndex:
    """Parse the attribute and partition files under ``root`` (either layout)."""
    base, layout = _resolve_layout(Path(root).expanduser())
    if layout == "original":
        attr_path = base / "list_attr_celeba.txt"
        names, filenames, rows, first_line = _read_original_attributes(attr_path)
        partition_path = _require(base / "list_eval_partition.txt")
        image_dir = _require(base / "img_align_celeba")
    else:
        attr_path = base / "list_attr_celeba.csv"
        names, filenames, rows, first_line = _read_kaggle_attributes(attr_path)
        partition_path = _require(base / "list_eval_partition.csv")
        image_dir = _require(base / "img_align_celeba" / "img_align_celeba")
    labels = _labels_from_rows(attr_path, rows, len(names), first_line)
    partition_of = _read_partitions(partition_path, layout)
    missing = [name for name in filenames if name not in partition_of]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) of {attr_path.name} have no row in {partition_path} (first: {missing[0]}): "
            "the annotation files disagree; re-download them together"
        )
    return CelebAIndex(
        image_dir=image_dir,
        layout=layout,
        filenames=np.asarray(filenames, dtype=np.bytes_),
        attribute_names=names,
        labels=labels,
        partitions=torch.tensor([partition_of[name] for name in filenames], dtype=torch.int64),
        source=attr_path,
    )


class CelebAImages(Dataset):
    """Images of one split, read by ``loader`` (:class:`faceattr.data.transforms.ImageLoader`: decoded, cropped and
    resized to the uint8 model input by the project's image rule) and passed through ``transform`` (augmentation).

    Items are ``(image uint8 (3, h, w), labels uint8 (A,))``. With ``skip_corrupt`` an unreadable image yields
    ``None``, which :func:`collate_skipping_corrupt` drops and counts.
    """

    def __init__(
        self,
        image_dir: Path,
        filenames: np.ndarray,
        labels: torch.Tensor,
        transform,
        skip_corrupt: bool,
        loader: ImageLoader,
    ) -> None:
        self.image_dir = str(image_dir)
        self.filenames = filenames
        self.labels = labels
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.loader = loader

    def __len__(self) -> int:
        return len(self.filenames)

    def path(self, index: int) -> str:
        return f"{self.image_dir}/{self.filenames[index].decode()}"

    def __getitem__(self, index: int):
        path = self.path(index)
        try:
            image = self.loader(path)
        except (RuntimeError, OSError, ValueError) as exc:
            if self.skip_corrupt:
                return None
            reason = "missing" if not Path(path).exists() else f"unreadable ({str(exc).splitlines()[0][:80]})"
            raise UserError(
                f"image {path} is {reason}; fix or remove it, or set data.skip_corrupt=true to skip such files"
            ) from None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def collate_skipping_corrupt(items):
    """Stack a batch, dropping the ``None`` items of corrupt images; returns ``(images, labels, num_skipped)``."""
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return None, None, skipped
    images = torch.stack([image for image, _ in kept])
    labels = torch.stack([label for _, label in kept])
    return images, labels, skipped
