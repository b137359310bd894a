"""Stage 2 of face detection: MTCNN's O-Net refines the five landmarks of each face and confirms it is one.

Each face is cut out upright (rotated by the angle of its eyes from stage 1), square (the side of its box), and
resized to 48x48; O-Net returns the landmarks as fractions of that square and a face probability. The input is
RGB scaled to [-1, 1] with x and y swapped (the network was converted from Caffe's column-major layout). In MTCNN a
fraction ``p`` of a crop ``w`` pixels wide starting at pixel ``x0`` is the pixel ``x0 + p * w``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from faceattr.faces.alignment import apply_transform, invert_transform, warp

SIZE = 48


def crop_transform(box: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The photo -> 48x48 crop transform of one face (centred on its box, rotated upright by its eyes, scaled so
    the box's longer side spans the crop), and that side in photo pixels."""
    dx, dy = landmarks[1] - landmarks[0]
    angle = math.atan2(float(dy), float(dx))
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - 0.5  # box edges -> pixel indices
    side = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
    k = SIZE / side
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    linear = np.array([[cos, sin], [-sin, cos]])  # rotate by -angle, scale
    matrix = np.concatenate([linear, ((SIZE - 1) / 2 - linear @ centre)[:, None]], axis=1)
    return matrix, side


def refine(session, image: Image.Image, boxes: list[np.ndarray], landmarks: list[np.ndarray]):
    """O-Net on each face: (refined landmarks (5, 2) in photo pixels, face probability) per face."""
    if not boxes:
        return []
    transforms = [crop_transform(box, points) for box, points in zip(boxes, landmarks)]
    crops = np.stack([np.asarray(warp(image, m, (SIZE, SIZE)), dtype=np.float32) for m, _ in transforms])
    x = np.ascontiguousarray(((crops - 127.5) * 0.0078125).transpose(0, 2, 1, 3))
    _, points, probs = session.run(None, {"input_3": x})
    results = []
    for (matrix, side), p, prob in zip(transforms, points, probs):
        # Fractions -> crop pixel indices: crop continuous position 48p + 24 / side, minus half a pixel.
        in_crop = np.stack([p[:5], p[5:]], axis=1).astype(np.float64) * SIZE + SIZE / (2 * side) - 0.5
        results.append((apply_transform(invert_transform(matrix), in_crop), float(prob[1])))
    return results
