"""One face found in a photo: where it is, its five landmarks, how sure the detector is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Face:
    """A detected face, in the photo's pixels (x to the right, y down; landmark coordinates are pixel indices).

    ``box`` is (x0, y0, x1, y1); ``landmarks`` the five points in CelebA's order (lefteye, righteye, nose, leftmouth,
    rightmouth; "left" is the image's left, see :mod:`faceattr.faces.template`); ``score`` the detector's
    confidence in (0, 1].
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    score: float

    @property
    def area(self) -> float:
        """The box's area in pixels (faces are listed largest first)."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"box": [x0, y0, x1, y1], "landmarks": [[x, y] x5], "score": s}`` (pixels to 0.1)."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }
