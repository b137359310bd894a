"""Faces in a photo: RetinaFace finds them on a small copy, MTCNN's O-Net refines their landmarks at full size.

Both networks run with ONNX Runtime on the CPU (``threads`` threads each). Measured on one core (benchmarks/faces.py,
docs/serving.md "Faces: detection and alignment"): 11 to 20 ms per photo of 0.3 to 1 MP; landmarks move with the
face to within 1.6-1.7% of the inter-ocular distance on average (at most 2.7%) under shifts, scales of 0.5 to 2 and
rotations of +-20 degrees.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from faceattr.faces import onet, retinaface
from faceattr.faces.face import Face
from faceattr.faces.model_files import onet_model, retinaface_model

log = logging.getLogger(__name__)

#: RetinaFace boxes overlapping a better one by more than this IoU are the same face.
NMS_THRESHOLD = 0.4


def _session(model: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def check_settings(max_side: int, min_score: float, min_landmark_prob: float, threads: int = 1) -> None:
    """ValueError with one line when a :class:`FaceDetector` setting is out of range (before any model is read)."""
    if int(max_side) < retinaface.MIN_SIDE:
        raise ValueError(f"max_side={max_side}: expected at least {retinaface.MIN_SIDE} pixels")
    for name, value in (("min_score", min_score), ("min_landmark_prob", min_landmark_prob)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name}={value}: expected a probability in [0, 1)")
    if int(threads) < 1:
        raise ValueError(f"threads={threads}: expected at least 1")


class FaceDetector:
    """``detector(image)``: the faces of an RGB Pillow image, largest box first (empty: no face).

    ``max_side``: RetinaFace runs on a copy whose longer side is at most this many pixels (faces smaller than about
    ``16 * photo side / max_side`` pixels are missed; a larger value finds smaller faces for more time);
    ``min_score``: RetinaFace's confidence threshold; ``min_landmark_prob``: O-Net's face probability threshold
    (drops what RetinaFace mistook for a face); ``threads``: ONNX Runtime threads per network.

    Calls from several threads at once are safe (ONNX Runtime sessions are, and nothing else is shared but a
    read-only anchor cache). Raises :class:`faceattr.faces.model_files.FaceModelError` when a model's package is
    not installed.
    """

    def __init__(
        self, max_side: int = 320, min_score: float = 0.5, min_landmark_prob: float = 0.9, threads: int = 1
    ) -> None:
        check_settings(max_side, min_score, min_landmark_prob, threads)
        self.max_side = int(max_side)
        self.min_score = float(min_score)
        self.min_landmark_prob = float(min_landmark_prob)
        self.threads = int(threads)
        self._retinaface = _session(retinaface_model(), self.threads)
        self._onet = _session(onet_model(), self.threads)

    def __repr__(self) -> str:
        return (
            f"FaceDetector(max_side={self.max_side}, min_score={self.min_score}, "
            f"min_landmark_prob={self.min_landmark_prob}, threads={self.threads})"
        )

    def __call__(self, image: Image.Image) -> list[Face]:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        candidates = retinaface.detect(self._retinaface, rgb, self.max_side, self.min_score, NMS_THRESHOLD)
        refined = onet.refine(self._onet, rgb, [c.box for c in candidates], [c.landmarks for c in candidates])
        faces = [
            Face(
                box=tuple(float(v) for v in candidate.box),
                landmarks=tuple((float(x), float(y)) for x, y in points),
                score=candidate.score,
            )
            for candidate, (points, probability) in zip(candidates, refined)
            if probability > self.min_landmark_prob and np.isfinite(points).all()
        ]
        return sorted(faces, key=lambda face: face.area, reverse=True)
