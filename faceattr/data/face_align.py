"""``data.align=detect``: training photos found and aligned by the detector and alignment the service runs.

A model trained on ordinary photos (unaligned, any size) with ``data.align=none`` sees each photo's centred frame,
while the service's ``face=detect`` shows it the detected face aligned onto CelebA's frame: different crops in
training and serving. With ``data.align=detect`` every training, validation and test photo goes the service's way
instead (:class:`FaceAligner`): decoded whole and upright (:func:`faceattr.faces.photo.decode_photo`), faces found
by :class:`faceattr.faces.FaceDetector` (with the same settings: :class:`DetectorSettings`), the largest one aligned
onto :data:`faceattr.faces.CELEBA_TEMPLATE` in the 178x218 frame (:func:`faceattr.faces.align_face`); the image
rule's crop and resize (:func:`faceattr.preprocess.preprocess`) follow in :class:`faceattr.data.transforms.ImageLoader`.
The service aligns onto the model's ``face_template`` when its metadata has one, else onto the same template.

Detection costs ~10-20 ms a photo on one core, so it runs once: align=detect needs the pre-decoded cache
(``data.cache``, :func:`check_align`), which keeps the aligned crops keyed on the detector settings
(``faceattr/data/cache.py``). A photo without a face raises :class:`NoFaceError`, which is not a corrupt file: the
cache lists it in its header and leaves it out of the split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from faceattr.errors import UserError
from faceattr.faces import CELEBA_TEMPLATE, FaceDetector, align_face
from faceattr.faces.detector import check_settings
from faceattr.faces.model_files import ONET, RETINAFACE
from faceattr.faces.photo import decode_photo

#: ``data.align``: ``none`` (the photo's centred frame, as CelebA's aligned files need) or ``detect``.
ALIGN_MODES: tuple[str, ...] = ("none", "detect")


class NoFaceError(Exception):
    """The detector finds no face in a photo (not a ValueError/OSError: a no-face photo is not a corrupt file)."""


@dataclass(frozen=True)
class DetectorSettings:
    """The :class:`faceattr.faces.FaceDetector` settings of ``data.detector``; the defaults are the service's
    (``face_max_side: 320``, ``face_min_score: 0.5`` in ``conf/serve/default.yaml``, O-Net's 0.9)."""

    max_side: int = 320
    min_score: float = 0.5
    min_landmark_prob: float = 0.9

    @classmethod
    def of(cls, value: DetectorSettings | Mapping[str, Any] | None) -> DetectorSettings:
        """``data.detector`` (a mapping with any of the three keys, None for the defaults) as settings; a one-line
        UserError for an unknown key or a value out of range."""
        if value is None or isinstance(value, DetectorSettings):
            return value or cls()
        if not isinstance(value, Mapping):
            raise UserError(f"data.detector={value!r}: expected a mapping of {', '.join(cls.names())} (or null)")
        unknown = sorted(set(value) - set(cls.names()))
        if unknown:
            raise UserError(
                f"data.detector has unknown key(s) {', '.join(map(str, unknown))}: expected {', '.join(cls.names())}"
            )
        try:
            settings = cls(
                **{name: (int if name == "max_side" else float)(v) for name, v in value.items() if v is not None}
            )
            check_settings(settings.max_side, settings.min_score, settings.min_landmark_prob)
        except (TypeError, ValueError) as exc:
            raise UserError(f"data.detector: {exc}") from None
        return settings

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def check_align(align: str, cache: object | None) -> None:
    """A one-line UserError unless ``data.align`` is a known mode, and ``detect`` comes with ``data.cache``."""
    if align not in ALIGN_MODES:
        raise UserError(f"data.align={align!r}: expected {' or '.join(ALIGN_MODES)}")
    if align == "detect" and cache is None:
        raise UserError(
            "data.align=detect needs data.cache (faces are detected once and the aligned crops kept there, not "
            "detected again every epoch): set data.cache=${paths.cache_dir}/<name> or another folder"
        )


class FaceAligner:
    """``aligner(photo bytes) -> uint8 RGB (218, 178, 3)``: the largest face of the photo aligned onto CelebA's
    frame, as the service's ``face=detect`` aligns it; :class:`NoFaceError` when there is none, ValueError or
    OSError for a file that is not a readable image.

    The detector is made on first use in each process (DataLoader workers included) and never pickled.
    """

    def __init__(self, settings: DetectorSettings = DetectorSettings()) -> None:
        self.settings = settings
        self._detector: FaceDetector | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}

    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(**asdict(self.settings), threads=1)  # one thread, as the service's
        return self._detector

    def __call__(self, data: bytes) -> np.ndarray:
        photo = Image.fromarray(np.ascontiguousarray(decode_photo(data)))
        faces = self.detector()(photo)
        if not faces:
            raise NoFaceError("no face found")
        return np.asarray(align_face(photo, faces[0].landmarks, CELEBA_TEMPLATE), dtype=np.uint8)

    def __repr__(self) -> str:
        """What the aligned pixels depend on (part of the cache key through the loader's repr)."""
        models = "+".join(f"{name} {version}" for name, version, _ in (RETINAFACE, ONET))
        points = [list(p) for p in CELEBA_TEMPLATE.points]
        return f"FaceAligner({self.settings!r}, models={models}, template={points}, largest face)"
