"""THE image rule: how a file becomes a model input, for training, export and the service alike.

Training images are CelebA *aligned* crops: 178 wide x 218 high (:data:`ALIGNED_SIZE`), the face centred with the
eyes at a fixed height. Every reader turns an image into the model's uint8 input in the same three steps, here:

1. **decode** (:func:`decode_jpeg`): a JPEG at the reduced DCT scale 1/k that :func:`decode_scale` picks, by
   simplejpeg (libjpeg-turbo). libjpeg then runs a smaller inverse DCT per 8x8 block instead of the full one
   followed by a resize, about half the decoding time. With the model's ``jpeg_scaling`` (``data.jpeg_scaling`` in
   training, recorded in the model's contract), k is the largest of 8, 4, 2 that keeps the crop at least the input
   size: that smaller image still holds every pixel the final resize needs (a CelebA face cropped to 178x178 for a
   64x64 model is decoded at 1/2 scale, 89x109). Without it, only a large photo (:data:`LARGE_PHOTO_PIXELS`) is
   reduced, and only as far as the crop stays :data:`OVERSAMPLING` times the input size: CelebA's images are always
   decoded whole, as the model was trained. Any other file is decoded whole by Pillow (:func:`decode_file`).
2. **crop** (:func:`crop_box`): the largest centred region of the image with the aligned frame's aspect ratio
   (218:178, height:width) is "the aligned frame", and the training crop (``crop``, aligned-frame pixels, None = the
   whole frame) is mapped into it, centred. For a 178x218 image that is exactly a centre crop of ``crop``.
3. **resize** to the model's input size: Pillow's antialiased bilinear filter (``Image.BILINEAR``) on uint8.

The arrays are uint8 RGB ``(H, W, 3)`` numpy arrays; this module needs numpy, Pillow and simplejpeg, not torch, so a
CPU service can run without it. Upload handling (limits, formats, EXIF orientation, transparency) is the service's
(``faceattr/serve/images.py``); reading a dataset is ``faceattr/data``. Both call :func:`preprocess`, so a training
image and the same file uploaded to the service give the same pixels (``tests/test_images.py``). A change to any of
these steps changes what every trained model was fed: it is a new :data:`RULE_VERSION`, and a new format version of
the model's contract (``faceattr/contract.py``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import simplejpeg
from PIL import Image

#: The version of the rule above; part of the pre-decoded cache's key (``faceattr/data/cache.py``).
RULE_VERSION = 2
#: CelebA's aligned frame (height, width): the frame every crop is given in.
ALIGNED_SIZE: tuple[int, int] = (218, 178)
#: Reductions libjpeg decodes directly (scale 1/k), largest first.
REDUCTIONS: tuple[int, ...] = (8, 4, 2)
#: Without ``jpeg_scaling``: photos of at least this many pixels may be reduced (CelebA's 178x218 never are) ...
LARGE_PHOTO_PIXELS = 1_000_000
#: ... as far as the crop stays this many times the input size (the resize then averages a few reduced pixels per
#: output pixel, as it averaged many full-size ones).
OVERSAMPLING = 4


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``[h, w]`` -> ``(h, w)``; ValueError for anything else (a size must be positive)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if (
        isinstance(size, Sequence)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        return int(size[0]), int(size[1])
    raise ValueError(f"a size must be a positive int or [height, width], got {size!r}")


def crop_box(height: int, width: int, crop: Sequence[int] | None) -> tuple[int, int]:
    """Size (h, w) in image pixels of the training crop, for an image of ``height`` x ``width``.

    The aligned frame is the largest centred 218:178 region of the image; ``crop`` (in aligned pixels, None = the
    whole frame) is scaled by the frame's width / 178. Integer arithmetic keeps 178x218 inputs exact.
    """
    frame_h, frame_w = ALIGNED_SIZE
    crop_h, crop_w = (frame_h, frame_w) if crop is None else size_pair(crop)
    if height * frame_w >= width * frame_h:  # taller than the aligned frame: the frame spans the full width
        num, den = width, frame_w
    else:  # wider: the frame spans the full height
        num, den = height, frame_h
    return max(1, round(crop_h * num / den)), max(1, round(crop_w * num / den))


def reduction(box: Sequence[int], out: Sequence[int]) -> int:
    """The largest ``k`` of :data:`REDUCTIONS` for which the ``box`` (h, w: image pixels that will be resized to
    ``out``) stays at least ``out`` at scale 1/k; 1 when there is none."""
    for k in REDUCTIONS:
        if box[0] / k >= out[0] and box[1] / k >= out[1]:
            return k
    return 1


def decode_scale(
    height: int, width: int, image_size: Sequence[int], crop: Sequence[int] | None, jpeg_scaling: bool
) -> int:
    """The scale 1/k to decode a ``height`` x ``width`` JPEG at, for a model of ``image_size``, ``crop`` and
    ``jpeg_scaling`` (the rule of the module doc, step 1)."""
    box = crop_box(height, width, crop)
    out_h, out_w = size_pair(image_size)
    if jpeg_scaling:
        return reduction(box, (out_h, out_w))
    if height * width < LARGE_PHOTO_PIXELS:
        return 1
    return reduction(box, (OVERSAMPLING * out_h, OVERSAMPLING * out_w))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's header (a few microseconds), or None when ``data`` is not a JPEG that
    simplejpeg decodes to RGB (e.g. a PNG, or a CMYK JPEG: those take Pillow)."""
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


def decode_jpeg(data: bytes, k: int = 1, size: tuple[int, int] | None = None) -> np.ndarray:
    """A JPEG decoded at scale 1/k -> uint8 RGB ``(ceil(H/k), ceil(W/k), 3)``; ``size``: its (H, W) if known.

    Raises ``ValueError`` for a file that is not a JPEG simplejpeg decodes to RGB, truncated or corrupt (simplejpeg's
    strict mode turns libjpeg's warnings into errors).
    """
    height, width = size if size is not None else (jpeg_size(data) or (0, 0))
    if not height:
        raise ValueError("not a JPEG that decodes to RGB")
    want_h, want_w = scaled_size(height, width, k)
    # simplejpeg picks the smallest of libjpeg's M/8 scales that is at least this size: exactly 1/k.
    array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want_h, min_width=want_w)
    if array.shape[:2] != (want_h, want_w):
        raise ValueError(f"decoded at {array.shape[1]}x{array.shape[0]}, expected {want_w}x{want_h}")
    return array


def decode_file(data: bytes, image_size: Sequence[int], crop: Sequence[int] | None, jpeg_scaling: bool) -> np.ndarray:
    """A dataset file's bytes -> uint8 RGB ``(H, W, 3)``: a JPEG at :func:`decode_scale`'s scale, any other image
    whole by Pillow (converted to RGB as stored: no EXIF rotation, alpha dropped). ValueError or OSError when
    ``data`` is not a readable image."""
    size = jpeg_size(data)
    if size is not None:
        return decode_jpeg(data, decode_scale(*size, image_size, crop, jpeg_scaling), size)
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def center_crop(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The centred ``size`` (h, w) region of an ``(H, W, C)`` array (a view); a side larger than the image is
    padded with zeros, evenly (as torchvision's ``center_crop``)."""
    crop_h, crop_w = size
    height, width = image.shape[:2]
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        image = np.pad(image, padding[: image.ndim])
        height, width = image.shape[:2]
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return image[top : top + crop_h, left : left + crop_w]


def preprocess(image: np.ndarray, image_size: Sequence[int], crop: Sequence[int] | None) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` of any size -> the model input, uint8 ``(h, w, 3)`` at ``image_size``: the training
    crop of the image's aligned frame (:func:`crop_box`), resized by Pillow's antialiased bilinear filter."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {tuple(image.shape)} {image.dtype}")
    out_h, out_w = size_pair(image_size)
    region = center_crop(image, crop_box(image.shape[0], image.shape[1], crop))
    if region.shape[:2] == (out_h, out_w):
        return np.array(region)
    resized = Image.fromarray(np.ascontiguousarray(region)).resize((out_w, out_h), Image.BILINEAR)
    return np.array(resized)
