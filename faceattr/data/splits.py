"""Seeded, stratified splits of a labelled image list: train/valid/test by ratios, and k folds of the training pool.

Why: a plain folder (``data=folder``) without a ``split`` column needs a split made for it, and k-fold
cross-validation (``data.folds``) needs the training pool (train + valid, never the test split) cut into folds.
With small datasets a purely random cut can leave a rare attribute's positives all in one place, so both are
stratified.

How (one rule for both): the images are ordered by their labels for the **two rarest attributes** (fewest images
in the minority class among the known labels; ties in file order; attributes with one class only are no use and
skipped), then, within equal labels, by a seeded random rank; the ordered list is dealt out to the parts: k folds
in turn, or splits by smooth weighted round-robin (each split takes its share of every run of equal labels). So
the rarest attribute's positives (and its negatives, and its unknowns) differ by at most one between folds, the
second rarest's by at most two, and every split gets its share of both. The order of the rest is random: another
seed gives other folds. An unknown label (:data:`~faceattr.attributes.UNKNOWN_LABEL`) is a value of its own here.

The split record (``data.split_record``, ``split.csv`` in the run dir, :data:`faceattr.layout.SPLIT_RECORD`): the
``path,split[,fold]`` of each image of a made split, written once and read back by every later build of the run's
data (eval, export, resume), so they see the images the run trained, validated and tested on.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch

from faceattr.atomic import write_text
from faceattr.attributes import UNKNOWN_LABEL
from faceattr.errors import UserError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
#: How many of the rarest attributes the order is stratified on.
STRATA_ATTRIBUTES = 2


def rarest_attributes(labels: torch.Tensor, count: int = STRATA_ATTRIBUTES) -> list[int]:
    """The columns of the ``count`` rarest attributes of ``labels`` (uint8 (N, A)) with both classes present."""
    positive = (labels == 1).sum(dim=0)
    negative = (labels == 0).sum(dim=0)
    minority = torch.minimum(positive, negative)
    usable = [int(i) for i in torch.argsort(minority, stable=True) if minority[i] > 0]
    return usable[:count]


def stratified_order(labels: torch.Tensor, seed: int, stream: int) -> np.ndarray:
    """The rows of ``labels`` ordered by the rarest attributes' labels, then a random rank seeded by
    ``(seed, stream)``."""
    rank = np.random.default_rng([int(seed), int(stream)]).permutation(len(labels))
    keys = [rank] + [labels[:, column].numpy() for column in reversed(rarest_attributes(labels))]
    return np.lexsort(keys)  # the last key sorts first


def deal(count: int, weights: list[float]) -> np.ndarray:
    """Part numbers for ``count`` ordered items: part ``j`` gets about ``weights[j] / sum(weights)`` of every stretch
    of the order (smooth weighted round-robin)."""
    shares = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    credit = np.zeros(len(shares))
    parts = np.empty(count, dtype=np.int64)
    for position in range(count):
        credit += shares
        part = int(np.argmax(credit))
        parts[position] = part
        credit[part] -= 1.0
    return parts


def make_split(labels: torch.Tensor, ratios: list[float], seed: int) -> torch.Tensor:
    """Partition codes (0 train, 1 valid, 2 test) for every row: stratified, by ``ratios`` (train, valid, test)."""
    order = stratified_order(labels, seed, stream=1)
    partitions = np.empty(len(labels), dtype=np.int64)
    partitions[order] = deal(len(labels), list(ratios))
    counts = np.bincount(partitions, minlength=3)
    if (counts == 0).any():
        empty = SPLIT_NAMES[int(np.argmin(counts))]
        raise UserError(
            f"{len(labels)} images are too few for data.split_ratios={list(ratios)}: the {empty} split would be "
            "empty; add images, change the ratios or give the CSV a split column"
        )
    return torch.from_numpy(partitions)


def make_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Fold numbers (0 .. folds-1) for every row: stratified, sizes within one of each other."""
    if len(labels) < folds:
        raise UserError(f"data.folds={folds}: the training pool has only {len(labels)} images, fewer than the folds")
    order = stratified_order(labels, seed, stream=2)
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[order] = np.arange(len(labels)) % folds
    return torch.from_numpy(fold_of)


def check_ratios(ratios) -> list[float]:
    """``data.split_ratios`` as three positive numbers summing to 1 (train, valid, test); a one-line error else."""
    values = list(ratios or [])
    if (
        len(values) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise UserError(
            f"data.split_ratios={values}: expected three positive fractions of the images for train, valid and "
            "test that sum to 1, e.g. [0.8,0.1,0.1]"
        )
    return [float(v) for v in values]


def write_record(path: Path, filenames: np.ndarray, partitions: torch.Tensor, fold_of: torch.Tensor | None) -> None:
    """``path,split[,fold]`` per image (fold empty for the test split), complete or absent."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "split", *(["fold"] if fold_of is not None else [])])
    for i, name in enumerate(filenames):
        split = SPLIT_NAMES[int(partitions[i])]
        fold = [] if fold_of is None else [str(int(fold_of[i])) if split != "test" else ""]
        writer.writerow([name.decode(), split, *fold])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, buffer.getvalue())


def read_record(path: Path, filenames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The partitions (and folds, if recorded) of ``filenames`` from the record at ``path``.

    An image the record does not hold (added to the CSV since) is left out of every split (code -1, logged); an image
    of the record that the CSV no longer has is a one-line error: the run's split cannot be rebuilt."""
    from faceattr.data.celeba import read_annotation_text

    rows = list(csv.reader(io.StringIO(read_annotation_text(path), newline="")))
    header = rows[0] if rows else []
    if header[:2] != ["path", "split"]:
        raise UserError(f"{path} is not a split record (expected the header path,split): delete it to make a new split")
    has_fold = "fold" in header
    recorded: dict[str, tuple[int, int]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or row[1] not in SPLIT_NAMES:
            raise UserError(f"{path} line {number}: expected '<path>,<train|valid|test>', found {','.join(row)!r}")
        fold = row[2] if has_fold and len(row) > 2 else ""
        recorded[row[0]] = (SPLIT_NAMES.index(row[1]), int(fold) if fold.isdigit() else -1)
    names = [name.decode() for name in filenames]
    gone = sorted(set(recorded) - set(names))
    if gone:
        raise UserError(
            f"{len(gone)} image(s) of the split record {path} are no longer in the labels file (first: {gone[0]}): "
            "the run's split cannot be rebuilt; restore the rows, or delete the record to make a new split"
        )
    new = [name for name in names if name not in recorded]
    if new:
        log.warning(f"{len(new)} image(s) of the labels file are not in the split record {path} and are left out")
    found = [recorded.get(name, (-1, -1)) for name in names]
    partitions = torch.tensor([split for split, _ in found], dtype=torch.int64)
    folds = torch.tensor([fold for _, fold in found], dtype=torch.int64)
    return partitions, (folds if has_fold else None)


def known_fraction(labels: torch.Tensor) -> torch.Tensor:
    """Per attribute: the fraction of positive labels among the known ones (0.5 where none is known)."""
    known = labels != UNKNOWN_LABEL
    positive = (labels == 1).sum(dim=0).double()
    count = known.sum(dim=0).double()
    return torch.where(count > 0, positive / count.clamp(min=1), torch.full_like(count, 0.5)).float()
