"""Uploads: what the service (and export's calibration, and ``predict.py``) accept as an image, and how it is read.

The image rule itself (decode scale, crop of the aligned frame, resize) is :mod:`faceattr.preprocess`, the one
training uses; this module adds what is about uploads: the limits (:class:`ImageLimits`: bytes, pixels, formats,
and the :class:`PixelBudget` of pixels decoded at once), the refusals (:class:`ImageError`, with its HTTP status),
and what a photo may be that a dataset image is not:

1. decode (JPEG, PNG, WebP by default), apply the EXIF orientation, convert grayscale/palette/CMYK/16-bit to RGB and
   composite transparency onto white. A JPEG that simplejpeg decodes (RGB or grayscale) is decoded by
   :func:`faceattr.preprocess.decode_jpeg` at the scale :func:`faceattr.preprocess.decode_scale` picks for the model
   (from the upright photo's size) and then turned upright; any other image by Pillow;
2. :func:`faceattr.preprocess.preprocess`: the training crop of the photo's aligned frame, resized to the input size.

So an aligned 178x218 CelebA JPEG uploaded to the service gets exactly the pixels training computed for that file
(``tests/test_images.py``). :func:`load_and_preprocess` does not detect or align faces: a photo should show one
face, roughly centred and filling most of the frame (a portrait or a selfie), as in CelebA.

:func:`load_faces` with a :class:`faceattr.faces.FaceDetector` does what CelebA did instead of the centred frame: it
finds the faces, maps each one's five landmarks onto the aligned frame's template (a similarity transform) to make a
178x218 aligned image, and preprocesses that, so an aligned face gets exactly the pixels of an aligned upload.

Decoded photos are uint8 RGB ``(H, W, 3)`` numpy arrays; the model inputs (:func:`load_and_preprocess`,
:attr:`PreparedFace.pixels`) are uint8 ``(3, h, w)`` numpy arrays, the layout the artefacts take. Nothing here
imports torch, bentoml, lightning or timm: the service's API workers serve an ONNX model without torch.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from faceattr.faces import CELEBA_TEMPLATE, Face, FaceDetector, Template, align_face
from faceattr.faces.photo import UPRIGHT
from faceattr.faces.photo import exif_orientation as _orientation
from faceattr.faces.photo import to_rgb as _to_rgb
from faceattr.preprocess import decode_jpeg, decode_scale, jpeg_size, preprocess, scaled_size

#: Pillow format names accepted by default (JPEG includes MPO, the multi-picture JPEG that many phones write).
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")


class ImageError(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer with (400, 413, or 503)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


#: Bytes of memory per pixel at the peak of decoding an upload (WebP, the costliest accepted format): see PixelBudget.
DECODE_BYTES_PER_PIXEL = 22


class PixelBudget:
    """At most ``capacity`` pixels being decoded at once, over all threads of a process.

    Decoding takes up to about 22 bytes of memory per pixel at its peak (WebP: libwebp's frame and Pillow's image,
    then the RGB array and its copy; PNG about 12), and a decompression bomb just under ``max_pixels`` is a few
    dozen bytes to send (a 38-byte lossless WebP decodes to 7000x7000): without a budget, N concurrent ones take N
    times that memory. With it, decoding waits for room, so the decoding memory of the process stays below about
    ``22 * capacity`` bytes whatever the concurrency. An image larger than the whole budget waits until it has the
    budget to itself. A wait longer than ``timeout_s`` is answered 503.
    """

    def __init__(self, capacity: int, timeout_s: float = 30.0) -> None:
        self.capacity = int(capacity)
        self.timeout_s = float(timeout_s)
        self.in_use = 0
        self._condition = threading.Condition()
        #: Called with the pixels of each finished decode, after its memory is released (e.g. to trim the heap).
        self.on_release: Callable[[int], None] | None = None

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        weight = max(1, min(int(pixels), self.capacity))
        with self._condition:
            if not self._condition.wait_for(lambda: self.in_use + weight <= self.capacity, timeout=self.timeout_s):
                raise ImageError(
                    f"the server is busy decoding other large images (more than {self.capacity} pixels in flight); "
                    "retry shortly",
                    status=503,
                )
            self.in_use += weight
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= weight
                self._condition.notify_all()
            if self.on_release is not None:
                self.on_release(int(pixels))


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may be: its size in bytes and pixels, and its format (Pillow names); ``budget``, if any,
    bounds the pixels decoded at once by all threads (see :class:`PixelBudget`)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 50_000_000
    formats: tuple[str, ...] = DEFAULT_FORMATS
    budget: PixelBudget | None = field(default=None, compare=False, repr=False)


def readable_formats() -> set[str]:
    """Format names Pillow can open here (``JPEG``, ``PNG``, ``WEBP``, ``GIF``, ...)."""
    Image.init()
    return set(Image.OPEN)


def format_names(limits: ImageLimits) -> str:
    """``JPEG, PNG or WEBP``: the accepted formats, for messages."""
    names = sorted(limits.formats)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    image_size: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
    hold: contextlib.ExitStack | None = None,
    jpeg_scaling: bool = False,
) -> np.ndarray:
    """Encoded bytes -> uint8 RGB ``(H, W, 3)``, upright, checked against ``limits``.

    Raises :class:`ImageError` (status 400: empty, not an image, unsupported format, truncated or corrupt; 413: too
    many bytes or pixels; 503: ``limits.budget`` had no room in time). The pixel limit is checked from the header,
    before anything is decompressed, which is what stops decompression bombs. With ``image_size`` (and ``crop``,
    ``jpeg_scaling``: the model's) a JPEG is decoded at the scale :func:`faceattr.preprocess.decode_scale` picks;
    without, at full size. The pixels to decode are reserved in ``limits.budget`` until the function returns, or
    until ``hold`` is closed when given (to cover what the caller does next with the image).
    """
    with contextlib.ExitStack() as own:
        return _decode(data, limits, image_size, crop, hold if hold is not None else own, jpeg_scaling)


def _decode(
    data: bytes,
    limits: ImageLimits,
    image_size: Sequence[int] | None,
    crop: Sequence[int] | None,
    hold: contextlib.ExitStack,
    jpeg_scaling: bool,
) -> np.ndarray:
    if not data:
        raise ImageError("the uploaded file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes", status=413)
    try:
        # Only the allowed formats' parsers ever see the bytes.
        image = Image.open(io.BytesIO(data), formats=[f for f in limits.formats if f in readable_formats()])
    except Image.DecompressionBombError:
        raise ImageError(f"the image has too many pixels (limit {limits.max_pixels})", status=413) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError(f"the upload is not an image of a supported format ({format_names(limits)})") from None
    with image:
        fmt = (image.format or "").upper()
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageError(f"the image has an invalid size {width}x{height}")
        if width * height > limits.max_pixels:
            raise ImageError(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
                status=413,
            )
        try:
            scale, orientation = 1, 1
            if fmt in ("JPEG", "MPO"):
                orientation = _orientation(image)
                if image_size is not None:
                    upright = (width, height) if orientation >= 5 else (height, width)  # 5-8 swap the sides
                    scale = decode_scale(*upright, image_size, crop, jpeg_scaling)
                if jpeg_size(data) is not None:  # what simplejpeg decodes: the training decoder
                    decoded_h, decoded_w = scaled_size(height, width, scale)
                    if limits.budget is not None:
                        hold.enter_context(limits.budget.reserve(decoded_h * decoded_w))
                    try:
                        array = decode_jpeg(data, scale, (height, width))
                    except ValueError as exc:
                        raise ImageError(
                            f"the image is truncated or corrupt ({str(exc)[:120] or 'libjpeg error'})"
                        ) from None
                    return UPRIGHT[orientation](array) if orientation != 1 else array
                if scale > 1:  # CMYK and other JPEGs simplejpeg leaves to Pillow: libjpeg's scale there (Pillow
                    # picks the largest scale that keeps at least the size asked: the rounded-down size is 1/scale's)
                    image.draft("RGB", (width // scale, height // scale))
            if limits.budget is not None:  # the size to decode (after the JPEG draft scale)
                hold.enter_context(limits.budget.reserve(image.size[0] * image.size[1]))
            image.load()
            try:
                upright_image = ImageOps.exif_transpose(image)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the stored orientation
                upright_image = image
            rgb = _to_rgb(upright_image)
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(f"the image has too many pixels (limit {limits.max_pixels})", status=413) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise ImageError(f"the image is truncated or corrupt ({reason})") from None
    return np.asarray(rgb, dtype=np.uint8)


def model_input(image: np.ndarray, image_size: Sequence[int], crop: Sequence[int] | None) -> np.ndarray:
    """A decoded photo (or aligned face) -> the uint8 ``(3, h, w)`` model input: :func:`faceattr.preprocess.preprocess`,
    in the artefacts' channel-first layout (a transposed view of the ``(h, w, 3)`` result)."""
    return preprocess(image, image_size, crop).transpose(2, 0, 1)


def load_and_preprocess(
    data: bytes,
    image_size: Sequence[int],
    crop: Sequence[int] | None,
    limits: ImageLimits = ImageLimits(),
    jpeg_scaling: bool = False,
) -> np.ndarray:
    """Encoded bytes -> uint8 ``(3, h, w)`` model input: :func:`decode_image` then the crop and resize (within the
    decoding budget of ``limits``, if any). ``jpeg_scaling``: the model's (its contract)."""
    with contextlib.ExitStack() as hold:
        image = decode_image(data, limits, image_size, crop, hold, jpeg_scaling)
        return model_input(image, image_size, crop)


@dataclass(frozen=True)
class PreparedFace:
    """One model input made from an upload, and the face it shows."""

    pixels: np.ndarray  # uint8 (3, h, w): the model input, exactly as load_and_preprocess makes it
    face: Face | None  # None: a centre crop of the whole photo (no detection)


def load_faces(
    data: bytes,
    image_size: Sequence[int],
    crop: Sequence[int] | None,
    limits: ImageLimits = ImageLimits(),
    detector: FaceDetector | None = None,
    template: Template | Sequence[Sequence[float]] = CELEBA_TEMPLATE,
    all_faces: bool = False,
    center_when_no_face: bool = False,
    jpeg_scaling: bool = False,
) -> list[PreparedFace]:
    """Encoded bytes -> one model input per face, largest face first.

    Without ``detector``: one centre crop of the whole photo (``face`` None), the pixels of
    :func:`load_and_preprocess`. With one: the photo is decoded at full size (no reduced scale: a small face needs
    every pixel), the detector finds its faces, each is aligned onto ``template`` in CelebA's 178x218 frame
    (:func:`faceattr.faces.align_face`) and given the training crop and resize (:func:`model_input`); only the
    largest face unless ``all_faces``. No face: ``[]``, or one centre crop of the photo (``face`` None) with
    ``center_when_no_face`` (exactly the pixels of :func:`load_and_preprocess`: the photo is decoded again, as the
    centre crop decodes it). ``jpeg_scaling`` (the model's) applies to the centre crops; a face is always aligned
    from the full-size photo. Decoding and detection hold the photo's pixels in ``limits.budget``. Raises
    :class:`ImageError` as :func:`decode_image` does.
    """
    if detector is None:
        return [PreparedFace(load_and_preprocess(data, image_size, crop, limits, jpeg_scaling), None)]
    with contextlib.ExitStack() as hold:
        image = decode_image(data, limits, hold=hold)
        photo = Image.fromarray(np.ascontiguousarray(image))
        faces = detector(photo)
        prepared = []
        for face in faces if all_faces else faces[:1]:
            aligned = np.asarray(align_face(photo, face.landmarks, template), dtype=np.uint8)
            prepared.append(PreparedFace(model_input(aligned, image_size, crop), face))
        del image, photo  # the full-size copies go before the budget is released
    if not prepared and center_when_no_face:  # after the budget is released: the centre crop reserves its own
        return [PreparedFace(load_and_preprocess(data, image_size, crop, limits, jpeg_scaling), None)]
    return prepared
