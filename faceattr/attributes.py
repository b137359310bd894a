"""Attribute labels: CelebA's 40 names in official order, the stored value of a label nobody gave, and which names
an attribute may have.

Labels are stored as uint8: 1 present, 0 absent, :data:`UNKNOWN_LABEL` unknown (an empty cell of a ``data=folder``
CSV). Unknown labels are masked out of the loss and the metrics, never counted as negatives.

Attribute names come from the data (the annotation file's columns) and travel everywhere: TensorBoard tags
(``val/acc/<name>``), CSV headers (eval's tables, predict.py's columns), group names (``Male=1,Young=0``), the model
card's tables, the model's contract and the service's JSON. A name that one of them cannot carry as it is, is refused
with one line saying a safe spelling (:func:`check_attribute_names`), rather than renamed silently: the model's names
stay the user's column names, so a CSV written by predict.py lines up with the labels file. Spaces, quotes and any
script are fine ("Big Nose", "Lächeln"); refused are ``/`` (it nests TensorBoard tags), ``\\``, ``,`` and ``=``
(the separators of group names), ``|`` (it splits the card's Markdown tables), control characters such as a line
break (they break log lines and CSV rows), a name with spaces around it, an empty or repeated name, and the names
of the CSVs' own columns (:data:`RESERVED_NAMES`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from faceattr.errors import UserError

#: The stored value of an unknown label (uint8).
UNKNOWN_LABEL = 255

#: Characters an attribute name may not hold (see the module doc): slashes, commas, "=", "|" and control characters.
FORBIDDEN = re.compile(r"[/\\,=|\x00-\x1f\x7f-\x9f]+")
#: Column names that are not attributes: the folder CSV's ``path`` and ``split``, predict.py's fixed columns.
RESERVED_NAMES = ("path", "split", "face", "face_x0", "face_y0", "face_x1", "face_y1", "face_score", "present")


def safe_spelling(name: str) -> str:
    """``name`` with every run of characters an attribute name cannot hold replaced by ``_``."""
    return FORBIDDEN.sub("_", name).strip().strip("_") or "attribute"


def check_attribute_names(names: Sequence[str], source: str) -> None:
    """A one-line UserError for the first name (of ``source``: a file, a setting) that is empty, repeated, reserved,
    has spaces around it or a :data:`FORBIDDEN` character; nothing when every name can be carried as it is."""
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        where = f"attribute {position} of {source}"
        if not name.strip():
            raise UserError(f"{where} has no name: give every attribute column a name")
        if FORBIDDEN.search(name) or name != name.strip():
            raise UserError(
                f"attribute name {name!r} ({where}) cannot be a TensorBoard tag, a CSV column and a group name as it "
                f"is (no / \\ , = | or control characters, no spaces around it): rename the column, e.g. "
                f"{safe_spelling(name)!r}"
            )
        if name in RESERVED_NAMES:
            raise UserError(
                f"attribute name {name!r} ({where}) is reserved for a column of its own "
                f"({', '.join(RESERVED_NAMES)}): rename the column, e.g. {name + '_attribute'!r}"
            )
        if name in seen:
            raise UserError(f"attribute name {name!r} ({where}) appears twice: every attribute needs its own name")
        seen.add(name)


CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
