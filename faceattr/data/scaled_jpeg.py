"""``data.jpeg_scaling``: training images read the way the service reads an upload, JPEGs at a reduced scale.

:class:`ScaledJpegLoader` turns a file into the model-size uint8 image in one step: a JPEG is decoded at the
largest reduction that keeps the crop at least the input size (:mod:`faceattr.jpeg_scaling`), then cropped and
resized by the service's own :func:`faceattr.serve.images.preprocess`; any other file is decoded whole by
torchvision and goes through the same crop and resize. The service, for a model trained this way, does the same to
an upload, so training and serving compute the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_image

from faceattr.jpeg_scaling import decode_scaled, jpeg_size, reduction
from faceattr.serve.images import crop_box, preprocess, size_pair


class ScaledJpegLoader:
    """``path -> uint8 (3, h, w)`` at ``image_size``, cropped by ``crop`` (aligned-frame pixels, None = no crop)."""

    def __init__(self, image_size: int | Sequence[int], crop: Sequence[int] | None) -> None:
        self.image_size = size_pair(image_size)
        self.crop = None if crop is None else size_pair(crop)

    def __call__(self, path: str) -> torch.Tensor:
        with open(path, "rb") as file:  # (pathlib's parsing costs ~15 us an image here)
            data = file.read()
        size = jpeg_size(data)
        if size is None:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        else:
            image = decode_scaled(data, reduction(crop_box(*size, self.crop), self.image_size), size)
        return preprocess(image, self.image_size, self.crop)

    def __repr__(self) -> str:
        return f"ScaledJpegLoader(image_size={list(self.image_size)}, crop={self.crop and list(self.crop)})"
