"""Stage 1 of face detection: RetinaFace (MobileNet-0.25) on a small copy of the photo -> boxes, rough landmarks.

The network's outputs are offsets from fixed anchors (biubug6/Pytorch_Retinaface's ``cfg_mnet``): at strides 8, 16
and 32, two square anchors per cell (16/32, 64/128, 256/512 pixels), decoded with variances 0.1 (centre) and 0.2
(size); its input is BGR minus the mean (104, 117, 123), as in training.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

STRIDES: tuple[int, ...] = (8, 16, 32)
ANCHOR_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
#: The network's smallest useful input side (its coarsest stride); smaller photos are padded up to it.
MIN_SIDE = 32


@dataclass(frozen=True)
class Candidate:
    """A RetinaFace detection in photo pixels: box (x0, y0, x1, y1), five landmarks (5, 2), score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float


@functools.lru_cache(maxsize=32)
def anchors(height: int, width: int) -> np.ndarray:
    """(N, 4) anchors (centre x, centre y, width, height) for an input of ``height`` x ``width``, in the network's
    output order; read-only, shared by all threads."""
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride], axis=1)
        wh = np.repeat(np.asarray(sizes, dtype=np.float64), 2).reshape(len(sizes), 2)
        parts.append(np.concatenate([np.repeat(centres, len(sizes), axis=0), np.tile(wh, (nx * ny, 1))], axis=1))
    result = np.concatenate(parts).astype(np.float32)
    result.flags.writeable = False
    return result


def shrink(image: Image.Image, max_side: int) -> tuple[Image.Image, float, float]:
    """``image`` with its longer side at most ``max_side`` (an integer box reduction, then bilinear), and the
    (x, y) scale factors from photo to copy."""
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    if scale >= 1.0:
        return image, 1.0, 1.0
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    factor = int(1.0 / scale)
    reduced = image.reduce(factor) if factor >= 2 else image
    # reduce() covers a partial last block too: the reduced image spans factor * its size photo pixels.
    span_w, span_h = reduced.size[0] * factor, reduced.size[1] * factor
    small = reduced.resize(target, Image.Resampling.BILINEAR)
    return small, target[0] / span_w, target[1] / span_h


def network_input(image: Image.Image) -> np.ndarray:
    """RGB photo -> (1, 3, H, W) float32 BGR minus the mean, padded with the mean to at least ``MIN_SIDE``."""
    array = np.asarray(image, dtype=np.float32)[..., ::-1] - MEAN_BGR
    height, width = array.shape[:2]
    if height < MIN_SIDE or width < MIN_SIDE:
        array = np.pad(array, ((0, max(0, MIN_SIDE - height)), (0, max(0, MIN_SIDE - width)), (0, 0)))
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression (IoU above ``threshold`` with a better one:
    dropped), best first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        w = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        order = rest[inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9) <= threshold]
    return keep


def detect(session, image: Image.Image, max_side: int, min_score: float, nms_threshold: float) -> list[Candidate]:
    """RetinaFace's faces in the RGB ``image`` (score above ``min_score``, after NMS), in photo pixels."""
    small, sx, sy = shrink(image, max_side)
    x = network_input(small)
    loc, conf, marks = session.run(None, {"input": x})
    scores = conf[0, :, 1]
    keep = np.flatnonzero(scores > min_score)
    if keep.size == 0:
        return []
    prior = anchors(int(x.shape[2]), int(x.shape[3]))[keep]
    offsets, scores = loc[0, keep].astype(np.float64), scores[keep].astype(np.float64)
    centres = prior[:, :2] + offsets[:, :2] * CENTRE_VARIANCE * prior[:, 2:]
    sizes = prior[:, 2:] * np.exp(offsets[:, 2:] * SIZE_VARIANCE)
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    points = prior[:, None, :2] + marks[0, keep].reshape(-1, 5, 2) * CENTRE_VARIANCE * prior[:, None, 2:]
    # Small-copy pixels -> photo pixels: box edges scale as they are; point indices through pixel centres.
    edge_scale = np.array([sx, sy, sx, sy])
    candidates = []
    for i in nms(boxes, scores, nms_threshold):
        photo_points = (points[i] + 0.5) / np.array([sx, sy]) - 0.5
        candidates.append(Candidate(boxes[i] / edge_scale, photo_points, float(scores[i])))
    return candidates
