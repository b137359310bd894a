"""Decoding a JPEG at a reduced scale (libjpeg-turbo's DCT scaling), for training and serving alike.

A JPEG can be decoded directly at 1/2, 1/4 or 1/8 of its size: libjpeg-turbo then runs a smaller inverse DCT per
8x8 block instead of the full one followed by a resize, about half the decoding time. When the region the model
sees (the crop, in photo pixels) is at least twice the model's input size, that smaller image still holds every
pixel the final resize needs. A CelebA face cropped to 178x178 for a 64x64 model is decoded at 1/2 scale (89x109).

The pixels are not those of a full decode followed by the resize: on the generated CelebA images at 64 px they differ
by 0.9 levels (of 255) on average, 32 at most (``tests/test_jpeg_scaling.py`` bounds both). So the choice is a
property of the model: ``data.jpeg_scaling`` in training, recorded in the checkpoint and in the exported model's
``faceattr.json``, and the service decodes uploads the same way for that model (``faceattr.serve.images``).

Decoding goes through simplejpeg (libjpeg-turbo bundled in its wheel); torchvision's decoder has no scaled mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import simplejpeg
import torch

#: Reductions libjpeg decodes directly (scale 1/k), largest first.
REDUCTIONS: tuple[int, ...] = (8, 4, 2)


def reduction(box: Sequence[int], out: Sequence[int]) -> int:
    """The largest ``k`` of :data:`REDUCTIONS` for which the ``box`` (h, w: photo pixels that will be resized to
    ``out``) stays at least ``out`` at scale 1/k; 1 when there is none."""
    for k in REDUCTIONS:
        if box[0] / k >= out[0] and box[1] / k >= out[1]:
            return k
    return 1


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's header (a few microseconds), or None when ``data`` is not a JPEG that
    simplejpeg decodes to RGB (e.g. a PNG, or a CMYK JPEG: those take the caller's normal decoder)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray", "RGB"):
        return None
    return int(height), int(width)


def scaled_size(height: int, width: int, k: int) -> tuple[int, int]:
    """The size libjpeg gives ``height`` x ``width`` at scale 1/k (it rounds up)."""
    return math.ceil(height / k), math.ceil(width / k)


def decode_scaled(data: bytes, k: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A JPEG decoded at scale 1/k -> uint8 RGB ``(3, ceil(H/k), ceil(W/k))`` (a view of an HWC array).

    Raises ``ValueError`` for a file that is not a decodable JPEG, truncated or corrupt (simplejpeg's strict mode
    turns libjpeg's warnings into errors, as torchvision does).
    """
    height, width = size if size is not None else (jpeg_size(data) or (0, 0))
    if not height:
        raise ValueError("not a JPEG that decodes to RGB")
    want_h, want_w = scaled_size(height, width, k)
    # simplejpeg picks the smallest of libjpeg's M/8 scales that is at least this size: exactly 1/k.
    array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want_h, min_width=want_w)
    if array.shape[:2] != (want_h, want_w):
        raise ValueError(f"decoded at {array.shape[1]}x{array.shape[0]}, expected {want_w}x{want_h}")
    return torch.from_numpy(np.asarray(array)).permute(2, 0, 1)
