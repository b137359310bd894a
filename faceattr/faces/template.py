"""Where the five landmarks sit in a CelebA aligned image: the template that alignment maps a detected face onto.

CelebA's aligned images (``img_align_celeba``, 178 wide x 218 high) were made by a similarity transform of each
photo that puts the two eyes and the mouth corners near fixed positions; ``list_landmarks_align_celeba.txt`` gives
the five points of every aligned image. The template is their mean: aligning a new photo's landmarks onto it
reproduces CelebA's framing, so the model sees a face where training showed it one.

Coordinates are pixel indices (the centre of the top-left pixel is (0, 0)), x to the right, y down, in CelebA's
order: lefteye, righteye, nose, leftmouth, rightmouth, where "left" is the left of the *image* (the person's right
eye): in every row of the file ``lefteye_x < righteye_x``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceattr.errors import UserError

#: The five landmarks, in the order of CelebA's columns (``<name>_x <name>_y`` each).
LANDMARK_NAMES: tuple[str, ...] = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
#: CelebA's aligned-landmark file in the original layout and in Kaggle's (``jessicali9530/celeba-dataset``).
LANDMARK_FILES: tuple[str, ...] = ("list_landmarks_align_celeba.txt", "list_landmarks_align_celeba.csv")
#: Where ``data.root`` may keep the annotation files: itself, or its ``celeba/`` folder (torchvision's layout).
_ROOT_CANDIDATES: tuple[str, ...] = (".", "celeba")

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Template:
    """Five (x, y) points in the aligned 178x218 frame, and where they come from."""

    points: Points
    source: str

    def __post_init__(self) -> None:
        if len(self.points) != len(LANDMARK_NAMES) or any(len(p) != 2 for p in self.points):
            raise ValueError(f"a face template has {len(LANDMARK_NAMES)} (x, y) points, got {self.points!r}")
        if not all(math.isfinite(float(v)) for p in self.points for v in p):
            raise ValueError(f"a face template's points must be finite numbers, got {self.points!r}")

    def as_dict(self) -> dict[str, Any]:
        """``{"points": [[x, y] x5], "source": ...}``: what export writes as ``face_template`` in faceattr.json."""
        return {"points": [[round(float(x), 4), round(float(y), 4)] for x, y in self.points], "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Template:
        """The inverse of :meth:`as_dict` (a model's ``face_template`` metadata); ValueError if malformed."""
        try:
            points = tuple((float(x), float(y)) for x, y in data["points"])
            return cls(points, str(data.get("source", "model metadata")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a face template: {data!r} ({exc})") from None


#: The approximate mean of CelebA's ``list_landmarks_align_celeba.txt`` over its 202,599 rows, as commonly quoted
#: for CelebA's aligned frame (not measured here: this project's machines hold no real CelebA). Export replaces it
#: with the mean of the training data's own landmark file when that file is there (``estimate_template``); to
#: measure it on a real CelebA folder: ``python -c "from faceattr.faces import estimate_template;
#: print(estimate_template('data/celeba/list_landmarks_align_celeba.txt'))"``.
CELEBA_TEMPLATE = Template(
    points=((69.0, 111.5), (108.0, 111.5), (88.5, 135.0), (72.0, 152.0), (106.0, 152.0)),
    source="built-in CelebA mean",
)


def find_landmark_file(root: str | Path) -> Path | None:
    """The aligned-landmark file of the CelebA folder ``root`` (either layout, or its ``celeba/`` folder), or None."""
    base = Path(root).expanduser()
    for folder in _ROOT_CANDIDATES:
        for name in LANDMARK_FILES:
            path = base / folder / name
            if path.is_file():
                return path
    return None


def _rows(path: Path) -> list[list[str]]:
    """The data rows of a landmark file: ``name x y x y ...`` (original: count line, header line; Kaggle: a CSV
    header ``image_id,lefteye_x,...``)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            rows = [row for row in csv.reader(f) if row]
        return rows[1:]
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return lines[2:]


def estimate_template(path: str | Path) -> Template:
    """The mean landmark position of every row of CelebA's aligned-landmark file (``.txt`` or Kaggle ``.csv``).

    Raises UserError if the file is missing, empty or not in that format.
    """
    path = Path(path).expanduser()
    try:
        rows = _rows(path)
    except OSError as exc:
        raise UserError(f"cannot read the landmark file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error):
        raise UserError(f"{path} is not a CelebA landmark file (not text)") from None
    width = 2 * len(LANDMARK_NAMES)
    sums = [0.0] * width
    for number, row in enumerate(rows, start=3 if path.suffix.lower() != ".csv" else 2):
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            values = []
        if len(values) != width or not all(math.isfinite(v) for v in values):
            raise UserError(
                f"{path}, line {number}: expected an image name and {width} coordinates "
                f"({' '.join(f'{n}_x {n}_y' for n in LANDMARK_NAMES)}), got {' '.join(row)[:120]!r}"
            )
        sums = [s + v for s, v in zip(sums, values)]
    if not rows:
        raise UserError(f"{path} has no landmark rows")
    means = [s / len(rows) for s in sums]
    points = tuple((means[2 * i], means[2 * i + 1]) for i in range(len(LANDMARK_NAMES)))
    return Template(points, f"{path.name} ({len(rows)} faces)")


def template_points(template: Template | Sequence[Sequence[float]]) -> Points:
    """A :class:`Template`'s points, or five (x, y) pairs given directly, as a tuple of float pairs."""
    points = template.points if isinstance(template, Template) else template
    return Template(tuple((float(x), float(y)) for x, y in points), "given").points
