"""Faces in real photos, found and aligned the way CelebA's aligned images were made.

* :class:`FaceDetector` (``detector.py``): RetinaFace finds faces (``retinaface.py``), MTCNN's O-Net refines their
  five landmarks (``onet.py``); both ONNX models come from PyPI packages, read as files (``model_files.py``).
* :class:`Face` (``face.py``): a box, five landmarks in CelebA's order, a score.
* :func:`align_face` (``alignment.py``): the similarity transform that puts the landmarks on a
  :class:`Template` (``template.py``: ``CELEBA_TEMPLATE``, or :func:`estimate_template` of a landmark file) and
  the 178x218 aligned image it gives.

Nothing here imports bentoml, lightning, timm or OpenCV; onnxruntime is imported when a detector is made.
"""

from faceattr.faces.alignment import align_face, apply_transform, invert_transform, similarity_transform, warp
from faceattr.faces.detector import FaceDetector
from faceattr.faces.face import Face
from faceattr.faces.model_files import FaceModelError
from faceattr.faces.template import (
    CELEBA_TEMPLATE,
    LANDMARK_FILES,
    LANDMARK_NAMES,
    Template,
    estimate_template,
    find_landmark_file,
)

__all__ = [
    "CELEBA_TEMPLATE",
    "LANDMARK_FILES",
    "LANDMARK_NAMES",
    "Face",
    "FaceDetector",
    "FaceModelError",
    "Template",
    "align_face",
    "apply_transform",
    "estimate_template",
    "find_landmark_file",
    "invert_transform",
    "similarity_transform",
    "warp",
]
