"""Reading a plain labelled folder (``data=folder``): a CSV of image paths and attribute columns beside the photos.

Most users' own faces are a spreadsheet beside a folder of ordinary photos, not CelebA's text files. The CSV
(``labels.csv`` in ``data.root``, or ``data.labels``) has a header line and one row per image:

* ``path``: the image file, relative to ``data.root`` (sub-folders allowed);
* ``split`` (optional): ``train``, ``valid`` or ``test``; without it the datamodule makes a seeded split
  (:mod:`faceattr.data.splits`) and records it in the run dir;
* every other column is an attribute, in file order: ``1``/``0``, ``1``/``-1`` or ``true``/``false`` (any case);
  an empty cell is an unknown label (:data:`~faceattr.attributes.UNKNOWN_LABEL`), masked out of the loss and the
  metrics.

A bad row (a missing image file, a value that is not a label, a repeated path, a wrong number of cells, a bad
split name) stops with one line naming its line, path and problem; with ``data.skip_corrupt=true`` such rows are
left out and counted in one warning. The file must be UTF-8 (:func:`faceattr.data.celeba.read_annotation_text`).
The result is the same :class:`~faceattr.data.celeba.CelebAIndex` that CelebA's files give, so one datamodule and
one image dataset serve both.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.data.celeba import CelebAIndex, read_annotation_text
from faceattr.data.splits import SPLIT_NAMES
from faceattr.errors import UserError

log = logging.getLogger(__name__)

PATH_COLUMN = "path"
SPLIT_COLUMN = "split"
#: Cell text (stripped, lower-cased) -> stored label.
LABEL_VALUES = {"1": 1, "true": 1, "0": 0, "-1": 0, "false": 0, "": UNKNOWN_LABEL}
EXPECTED_VALUES = "1/0, 1/-1, true/false or empty (unknown)"


class BadRow(Exception):
    """One row's problem: ``kind`` counts it, ``text`` says it."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def _header(path: Path, header: list[str] | None) -> tuple[int, int | None, list[int], list[str]]:
    """(path column, split column or None, attribute columns, attribute names) of the header line."""
    if header is None:
        raise UserError(f"{path} is empty: expected a header line (path,<attribute>,...) and one row per image")
    names = [name.strip() for name in header]
    if PATH_COLUMN not in names:
        raise UserError(
            f"{path} has no '{PATH_COLUMN}' column (its header: {','.join(names)[:120]}): the first line must name "
            f"the image column '{PATH_COLUMN}' and the attribute columns"
        )
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise UserError(f"{path}: column {repeated[0]!r} appears {names.count(repeated[0])} times in the header")
    split = names.index(SPLIT_COLUMN) if SPLIT_COLUMN in names else None
    columns = [i for i, name in enumerate(names) if name not in (PATH_COLUMN, SPLIT_COLUMN)]
    if not columns:
        raise UserError(f"{path} has no attribute column: add one column per attribute beside '{PATH_COLUMN}'")
    return names.index(PATH_COLUMN), split, columns, [names[i] for i in columns]


def _parse_row(
    row: list[str], width: int, path_at: int, split_at: int | None, columns: list[int], names: list[str]
) -> tuple[str, list[int], int]:
    """(relative path, labels, partition code or -1) of one row; BadRow for a row that does not parse."""
    if len(row) != width:
        raise BadRow("wrong number of cells", f"expected {width} cells, found {len(row)}")
    given = row[path_at].strip()
    if not given:
        raise BadRow("empty path", "the path cell is empty")
    image = os.path.normpath(given)
    if os.path.isabs(given) or given.startswith("~") or image == ".." or image.startswith(".." + os.sep):
        raise BadRow("path outside data.root", f"path {given!r} must be relative to data.root, inside it")
    labels = []
    for column, name in zip(columns, names):
        cell = row[column].strip().lower()
        if cell not in LABEL_VALUES:
            raise BadRow("bad label", f"value {row[column]!r} of column {name} is not a label ({EXPECTED_VALUES})")
        labels.append(LABEL_VALUES[cell])
    partition = -1
    if split_at is not None:
        split = row[split_at].strip().lower()
        if split not in SPLIT_NAMES:
            raise BadRow("bad split", f"split {row[split_at]!r} is not one of {', '.join(SPLIT_NAMES)}")
        partition = SPLIT_NAMES.index(split)
    return image, labels, partition


def read_folder(root: str | Path, labels: str | Path, skip_corrupt: bool = False) -> CelebAIndex:
    """Parse the CSV ``labels`` (relative to ``root``, or absolute) of the folder ``root``.

    Partitions are the ``split`` column's codes (0 train, 1 valid, 2 test), or -1 for every row without one.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"data.root {base} is not a folder: point it at the folder holding the images and the CSV")
    path = base / Path(labels).expanduser()
    if not path.is_file():
        raise UserError(
            f"no labels file {path}: data=folder reads a CSV with a '{PATH_COLUMN}' column and one column per "
            "attribute (data.labels=<file> names another)"
        )
    reader = csv.reader(io.StringIO(read_annotation_text(path), newline=""))
    path_at, split_at, columns, names = _header(path, next(reader, None))
    width = len(columns) + 1 + (split_at is not None)
    filenames: list[str] = []
    rows: list[list[int]] = []
    partitions: list[int] = []
    first_line: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    first_bad = ""
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        shown = row[path_at].strip() if len(row) > path_at else ""
        try:
            image, values, partition = _parse_row(row, width, path_at, split_at, columns, names)
            if image in first_line:
                raise BadRow("repeated path", f"the same image as line {first_line[image]}")
            if not (base / image).is_file():
                raise BadRow("missing file", f"no such file {base / image}")
        except BadRow as bad:
            where = f"{path} line {number} ({shown or 'no path'})"
            if not skip_corrupt:
                raise UserError(
                    f"{where}: {bad.text}; fix the row, or set data.skip_corrupt=true to skip such rows"
                ) from None
            skipped[bad.kind] += 1
            first_bad = first_bad or f"{where}: {bad.text}"
            continue
        first_line[image] = number
        filenames.append(image)
        rows.append(values)
        partitions.append(partition)
    if skipped:
        counts = ", ".join(f"{count} {kind}" for kind, count in skipped.most_common())
        log.warning(
            f"skipped {sum(skipped.values())} bad row(s) of {path} (data.skip_corrupt=true): {counts}; "
            f"first: {first_bad}"
        )
    if not filenames:
        raise UserError(f"{path} lists no usable image: add rows '<path>,<labels...>'")
    return CelebAIndex(
        image_dir=base,
        layout="folder",
        filenames=np.array([name.encode() for name in filenames], dtype=np.bytes_),
        attribute_names=tuple(names),
        labels=torch.tensor(rows, dtype=torch.uint8),
        partitions=torch.tensor(partitions, dtype=torch.int64),
        source=path,
        skipped_rows=sum(skipped.values()),
    )
