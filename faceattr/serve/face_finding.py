"""Which part of a photo the model sees: the centre crop, or the faces a detector finds (``face: center | detect``).

Shared by the service (``service.py``) and batch prediction (``faceattr/prediction.py``), so that both turn a photo
into model inputs the same way: :class:`FaceFinder` holds one process's settings and its face detector, made on
first use (or at once when ``detect`` is the default), and :meth:`FaceFinder.prepare` is
:func:`faceattr.serve.images.load_faces` with them, run in the caller's decoding thread, within its decoding budget.

* ``center``: the photo's centre cropped as CelebA's aligned frame (``faceattr/serve/images.py``); no detector runs.
* ``detect``: the detector (``faceattr.faces``) finds the faces; each is aligned to the model's landmark template
  (``face_template`` of the export's metadata, else CelebA's) and cropped as in training. The largest face, or every
  face (:attr:`FaceOptions.all_faces`). A photo without a face is refused (``no_face: reject``, an
  :class:`~faceattr.serve.images.ImageError` with status 422) or answered from its centre crop
  (``no_face: center``, that answer's ``face`` is None).

Nothing here imports bentoml (the service passes its metrics in as ``observe``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faceattr.serve.config import FACE_MODES, NO_FACE_POLICIES
from faceattr.serve.images import ImageError, ImageLimits, PreparedFace, load_faces

#: ``faces``: answer for the largest face, or for every face found.
FACES_CHOICES = ("largest", "all")
#: The HTTP status of a photo without a face under ``no_face: reject`` (the request was understood; the photo cannot
#: be answered).
NO_FACE_STATUS = 422


@dataclass(frozen=True)
class FaceOptions:
    """What one request (or one batch-prediction run) asks for: ``detect`` faces or not, and ``all_faces``."""

    detect: bool = False
    all_faces: bool = False


def face_options(face: Any, faces: Any = "largest") -> FaceOptions:
    """Check the ``face`` and ``faces`` values of a request; ValueError with one line saying what was wrong."""
    if face not in FACE_MODES:
        raise ValueError(f"face={face!r}: expected {' or '.join(FACE_MODES)}")
    if faces not in FACES_CHOICES:
        raise ValueError(f"faces={faces!r}: expected {' or '.join(FACES_CHOICES)}")
    if faces == "all" and face != "detect":
        raise ValueError("faces=all needs face=detect (the centre crop is one answer per photo)")
    return FaceOptions(detect=face == "detect", all_faces=faces == "all")


def face_json(face: Any) -> dict[str, Any] | None:
    """A found face as the answers show it (``box``, ``landmarks`` in photo pixels, ``score``), or None for the centre
    crop."""
    return None if face is None else face.as_dict()


class _TimedDetector:
    """The detector, noting in the calling thread when detection started and how many faces it found, so that
    :meth:`FaceFinder.prepare` can time detection and alignment together (decoding excluded)."""

    def __init__(self, detector: Callable) -> None:
        self._detector = detector
        self._calls = threading.local()

    def __call__(self, image: Any) -> list:
        self._calls.started = time.perf_counter()
        faces = self._detector(image)
        self._calls.found = len(faces)
        return faces

    def last_call(self) -> tuple[float, int]:
        """(start time, faces found) of this thread's last call."""
        return self._calls.started, self._calls.found


class FaceFinder:
    """One process's way from photo bytes to model inputs: the model's input size, crop, landmark template and JPEG
    decoding (``jpeg_scaling``, as the model was trained), the upload limits (with the process's decoding budget),
    the detector settings and the ``no_face`` policy.

    ``observe(seconds, faces)`` (metrics) is called after each photo searched for faces: the seconds of detection
    and alignment (decoding excluded), and the faces found. The detector is made on the first photo
    that asks for one, once per process (it is thread-safe); :meth:`load_detector` makes it at once.
    """

    def __init__(
        self,
        image_size: Sequence[int],
        crop: Sequence[int] | None,
        limits: ImageLimits,
        *,
        template: Sequence[Sequence[float]] | None = None,
        jpeg_scaling: bool = False,
        no_face: str = "reject",
        max_side: int = 320,
        min_score: float = 0.5,
        observe: Callable[[float, int], None] | None = None,
    ) -> None:
        if no_face not in NO_FACE_POLICIES:
            raise ValueError(f"no_face={no_face!r}: expected {' or '.join(NO_FACE_POLICIES)}")
        self.image_size = tuple(image_size)
        self.crop = None if crop is None else tuple(crop)
        self.limits = limits
        self.template = template
        self.jpeg_scaling = bool(jpeg_scaling)
        self.no_face = no_face
        self.max_side = int(max_side)
        self.min_score = float(min_score)
        self._observe = observe
        self._detector: _TimedDetector | None = None
        self._lock = threading.Lock()

    def load_detector(self) -> _TimedDetector:
        """The process's detector (made on the first call; later calls return the same one)."""
        with self._lock:
            if self._detector is None:
                from faceattr.faces import FaceDetector

                detector = FaceDetector(max_side=self.max_side, min_score=self.min_score, threads=1)
                self._detector = _TimedDetector(detector)
            return self._detector

    def prepare(self, data: bytes, options: FaceOptions) -> list[PreparedFace]:
        """Photo bytes -> the model inputs ``options`` ask for (one, or one per face with ``all_faces``), each with
        the face it shows (None: the centre crop).

        Raises :class:`ImageError`: a bad upload (400, 413, 503, as ``load_faces``), or with ``detect`` and
        ``no_face: reject`` a photo without a face (422).
        """
        if not options.detect:
            return load_faces(data, self.image_size, self.crop, self.limits, jpeg_scaling=self.jpeg_scaling)
        kwargs: dict[str, Any] = {
            "all_faces": options.all_faces,
            "center_when_no_face": self.no_face == "center",
            "jpeg_scaling": self.jpeg_scaling,
        }
        if self.template is not None:
            kwargs["template"] = self.template
        detector = self.load_detector()
        prepared = load_faces(data, self.image_size, self.crop, self.limits, detector=detector, **kwargs)
        if self._observe is not None:
            started, found = detector.last_call()
            self._observe(time.perf_counter() - started, found)
        if not prepared:
            raise ImageError(
                f"no face found in the photo (face=detect, faces scoring at least {self.min_score:g} after scaling "
                f"it to {self.max_side} pixels on its longer side); send a photo with a visible face, or face=center "
                "for an answer about the photo's centre",
                status=NO_FACE_STATUS,
            )
        return prepared
