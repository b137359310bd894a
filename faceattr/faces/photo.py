"""A photo as face detection sees it: decoded whole, turned upright by its EXIF orientation, in RGB.

Face detection works on ordinary photos (a phone's JPEG stored sideways with an orientation tag, a PNG with
transparency), not on CelebA's aligned files, so a photo is read the way a viewer shows it. The service reads its
uploads with these pieces (``faceattr/serve/images.py``, within its upload limits), and training with
``data.align=detect`` reads its files with :func:`decode_photo` (``faceattr/data/face_align.py``): the same
pixels reach the same detector and alignment in both, so a model sees in serving the crops it was trained on.

A JPEG that simplejpeg decodes (RGB or grayscale) is decoded by :func:`faceattr.preprocess.decode_jpeg` at full
size and turned upright with :data:`UPRIGHT`; any other image by Pillow, with ``ImageOps.exif_transpose`` and
:func:`to_rgb`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from faceattr.preprocess import decode_jpeg, jpeg_size

#: EXIF tag of the stored orientation (1 = upright).
EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> how the stored pixels (rows, columns, channels) are turned upright, as Pillow's
#: ``ImageOps.exif_transpose`` turns them (2: mirrored, 3: upside down, 6: rotated 90 degrees clockwise to view, ...).
UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
#: Pillow's names of the JPEG formats (MPO: the multi-picture JPEG that many phones write).
JPEG_FORMATS = ("JPEG", "MPO")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto white, 16-bit and float images are scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        if image.mode != "F":
            array = array / 257.0  # 16-bit range -> 8-bit
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image (1: upright as stored, also for a malformed EXIF block)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: Pillow's exif_transpose keeps it as stored too
        return 1
    return orientation if orientation in UPRIGHT else 1


def decode_photo(data: bytes) -> np.ndarray:
    """A photo file's bytes -> uint8 RGB ``(H, W, 3)`` at full size, upright: what the service's ``face=detect``
    decodes an upload to (without its upload limits). ValueError or OSError when ``data`` is not a readable image."""
    with Image.open(io.BytesIO(data)) as image:
        if (image.format or "").upper() in JPEG_FORMATS:
            size = jpeg_size(data)
            if size is not None:
                orientation = exif_orientation(image)
                array = decode_jpeg(data, 1, size)
                return UPRIGHT[orientation](array) if orientation != 1 else array
        image.load()
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the stored orientation
            upright = image
        return np.asarray(to_rgb(upright), dtype=np.uint8)
