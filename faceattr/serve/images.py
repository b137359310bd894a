"""Image decoding and preprocessing shared by the service and by export (parity check, threshold calibration).

Training images are CelebA *aligned* crops: 178 wide x 218 high, the face centred with the eyes at a fixed height.
Training then centre-crops them (``crop``, default 178x178: the square face region) and resizes to the model's
input size (``faceattr.data.transforms.build_transform``). A photo sent to the service is treated the same way:

1. decode (JPEG, PNG, WebP by default), apply the EXIF orientation, convert grayscale/palette/CMYK/16-bit to RGB
   and composite transparency onto white;
2. take the largest centred region with the aligned frame's aspect ratio (218:178, height:width) as "the aligned
   frame", and map the training crop into it: the crop is ``crop * frame_width / 178`` photo pixels, centred;
3. resize that crop to the model's input size (bilinear, antialiased, on uint8, as in training).

Steps 2-3 are one centre crop and one resize, so for an aligned 178x218 image they are exactly training's
CenterCrop(crop) + Resize(image_size). :func:`load_and_preprocess` does not detect or align faces: a photo should
show one face, roughly centred and filling most of the frame (a portrait or a selfie), as in CelebA.

:func:`load_faces` with a :class:`faceattr.faces.FaceDetector` does what CelebA did instead of step 2: it finds the
faces, maps each one's five landmarks onto the aligned frame's template (a similarity transform) to make a 178x218
aligned image, and gives that image steps 2-3, so an aligned face gets exactly the pixels of an aligned upload.

Nothing here imports bentoml, lightning or timm: the service process and a built Bento only need torch,
torchvision, numpy and Pillow (and onnxruntime with the face models' packages for face detection).
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from faceattr.faces import ALIGNED_SIZE, CELEBA_TEMPLATE, Face, FaceDetector, Template, align_face
from faceattr.jpeg_scaling import decode_scaled, reduction, scaled_size

#: Pillow format names accepted by default (JPEG includes MPO, the multi-picture JPEG that many phones write).
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
#: Large JPEGs are decoded at a reduced DCT scale when the face crop stays at least this many times the input
#: size; images below ``DRAFT_MIN_PIXELS`` (CelebA's 178x218 among them) are always decoded at full size.
DRAFT_OVERSAMPLING = 4
DRAFT_MIN_PIXELS = 1_000_000
#: EXIF tag of the stored orientation (1 = upright).
EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer with (400, 413, or 503)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``[h, w]`` -> ``(h, w)`` (as ``faceattr.data.transforms.size_pair``)."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def crop_box(height: int, width: int, crop: Sequence[int] | None) -> tuple[int, int]:
    """Size (h, w) in photo pixels of the training crop, for a photo of ``height`` x ``width``.

    The aligned frame is the largest centred 218:178 region of the photo; ``crop`` (in aligned pixels, None = the
    whole frame) is scaled by the frame's width / 178. Integer arithmetic keeps 178x218 inputs exact.
    """
    frame_h, frame_w = ALIGNED_SIZE
    crop_h, crop_w = (frame_h, frame_w) if crop is None else size_pair(crop)
    if height * frame_w >= width * frame_h:  # taller than the aligned frame: the frame spans the full width
        num, den = width, frame_w
    else:  # wider: the frame spans the full height
        num, den = height, frame_h
    return max(1, round(crop_h * num / den)), max(1, round(crop_w * num / den))


def preprocess(image: torch.Tensor, image_size: Sequence[int], crop: Sequence[int] | None) -> torch.Tensor:
    """uint8 RGB ``(3, H, W)`` of any size -> uint8 ``(3, h, w)`` at the model's input size (see module doc)."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) image, got {tuple(image.shape)} {image.dtype}")
    box = crop_box(int(image.shape[1]), int(image.shape[2]), crop)
    # torchvision's image kernels, the ones F.center_crop / F.resize dispatch to for a plain tensor (and training's
    # CenterCropResize calls): the same pixels, without the dispatch (~20 us an image).
    image = F.center_crop_image(image, list(box))
    return F.resize_image(image, list(size_pair(image_size)), antialias=True)


def _draft_size(width: int, height: int, image_size: Sequence[int], crop: Sequence[int] | None):
    """The size to ask Pillow's JPEG draft mode for, or None to decode at full size."""
    if width * height < DRAFT_MIN_PIXELS:
        return None
    box_h, box_w = crop_box(height, width, crop)
    out_h, out_w = size_pair(image_size)
    factor = min(box_h / (DRAFT_OVERSAMPLING * out_h), box_w / (DRAFT_OVERSAMPLING * out_w))
    if factor < 2:
        return None
    return math.ceil(width / factor), math.ceil(height / factor)


def _to_rgb(image: Image.Image) -> Image.Image:
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


def _plain_jpeg(image: Image.Image, fmt: str) -> bool:
    """A baseline RGB or grayscale JPEG decoded at full size, upright as stored: what torchvision decodes alone."""
    if fmt not in ("JPEG", "MPO") or image.mode not in ("RGB", "L"):
        return False
    try:
        return image.getexif().get(EXIF_ORIENTATION, 1) == 1
    except Exception:  # noqa: BLE001 - a malformed EXIF block: Pillow's path keeps the stored orientation
        return False


def _decode_scaled_jpeg(data: bytes, scale: int, size: tuple[int, int]) -> torch.Tensor:
    """A JPEG at scale 1/``scale`` by the decoder of ``data.jpeg_scaling`` (faceattr.jpeg_scaling): the pixels
    training saw, for a model trained so (tests/test_jpeg_scaling.py)."""
    try:
        return decode_scaled(data, scale, size)
    except ValueError as exc:
        raise ImageError(f"the image is truncated or corrupt ({str(exc)[:120] or 'libjpeg error'})") from None


def _decode_jpeg(data: bytes) -> torch.Tensor:
    """torchvision's libjpeg-turbo decoder, the one training uses (faceattr.data): half Pillow's time for a 178x218
    face (0.36 against 0.76 ms with Pillow's open/convert/copy) and the same pixels (tests/test_images.py)."""
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        reason = str(exc).rsplit(", ", 1)[-1].strip()[:120] or "libjpeg error"
        raise ImageError(f"the image is truncated or corrupt ({reason})") from None


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    image_size: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
    hold: contextlib.ExitStack | None = None,
    jpeg_scaling: bool = False,
) -> torch.Tensor:
    """Encoded bytes -> uint8 RGB tensor ``(3, H, W)``, upright, checked against ``limits``.

    Raises :class:`ImageError` (status 400: empty, not an image, unsupported format, truncated or corrupt; 413: too
    many bytes or pixels; 503: ``limits.budget`` had no room in time). The pixel limit is checked from the header,
    before anything is decompressed, which is what stops decompression bombs. With ``image_size`` (and ``crop``) a
    large JPEG may be decoded at a reduced scale (see ``DRAFT_*``); with ``jpeg_scaling`` as well (the model was
    trained with ``data.jpeg_scaling``), any JPEG is, by the training's rule (:func:`faceattr.jpeg_scaling.reduction`)
    and with the training's decoder. The pixels to decode are reserved in ``limits.budget`` until the function
    returns, or until ``hold`` is closed when given (to cover what the caller does next with the image).
    """
    with contextlib.ExitStack() as own:
        return _decode(data, limits, image_size, crop, hold if hold is not None else own, jpeg_scaling)


def _decode(
    data: bytes,
    limits: ImageLimits,
    image_size: Sequence[int] | None,
    crop: Sequence[int] | None,
    hold: contextlib.ExitStack,
    jpeg_scaling: bool = False,
) -> torch.Tensor:
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
            draft, scale = None, 1
            if fmt in ("JPEG", "MPO") and image_size is not None:
                if jpeg_scaling:
                    scale = reduction(crop_box(height, width, crop), size_pair(image_size))
                    draft = None if scale == 1 else scaled_size(height, width, scale)[::-1]
                else:
                    draft = _draft_size(width, height, image_size, crop)
                if draft is not None:
                    image.draft("RGB", draft)
            if limits.budget is not None:  # the size to decode (after the JPEG draft scale)
                hold.enter_context(limits.budget.reserve(image.size[0] * image.size[1]))
            if (draft is None or scale > 1) and _plain_jpeg(image, fmt):
                return _decode_jpeg(data) if scale == 1 else _decode_scaled_jpeg(data, scale, (height, width))
            image.load()
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the stored orientation
                upright = image
            rgb = _to_rgb(upright)
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(f"the image has too many pixels (limit {limits.max_pixels})", status=413) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise ImageError(f"the image is truncated or corrupt ({reason})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_and_preprocess(
    data: bytes,
    image_size: Sequence[int],
    crop: Sequence[int] | None,
    limits: ImageLimits = ImageLimits(),
    jpeg_scaling: bool = False,
) -> torch.Tensor:
    """Encoded bytes -> uint8 ``(3, h, w)`` model input: :func:`decode_image` then :func:`preprocess` (within the
    decoding budget of ``limits``, if any). ``jpeg_scaling``: the model's ``data.jpeg_scaling`` (its metadata)."""
    with contextlib.ExitStack() as hold:
        image = decode_image(data, limits, image_size, crop, hold, jpeg_scaling)
        return preprocess(image, image_size, crop).clone()


@dataclass(frozen=True)
class PreparedFace:
    """One model input made from an upload, and the face it shows."""

    pixels: torch.Tensor  # uint8 (3, h, w): the model input, exactly as load_and_preprocess makes it
    face: Face | None  # None: a centre crop of the whole photo (no detection)


def _aligned_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


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
    :func:`load_and_preprocess`. With one: the photo is decoded at full size (no JPEG draft: a small face needs
    every pixel), the detector finds its faces, each is aligned onto ``template`` in CelebA's 178x218 frame
    (:func:`faceattr.faces.align_face`) and given the training crop and resize (:func:`preprocess`); only the
    largest face unless ``all_faces``. No face: ``[]``, or one centre crop of the photo (``face`` None) with
    ``center_when_no_face`` (exactly the pixels of :func:`load_and_preprocess`: the photo is decoded again, as the
    centre crop decodes it). ``jpeg_scaling`` (the model's ``data.jpeg_scaling``) applies to the centre crops; a
    face is always aligned from the full-size photo. Decoding and detection hold the photo's pixels in
    ``limits.budget``. Raises :class:`ImageError` as :func:`decode_image` does.
    """
    if detector is None:
        return [PreparedFace(load_and_preprocess(data, image_size, crop, limits, jpeg_scaling), None)]
    with contextlib.ExitStack() as hold:
        image = decode_image(data, limits, hold=hold)
        photo = Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), "RGB")
        faces = detector(photo)
        prepared = []
        for face in faces if all_faces else faces[:1]:
            aligned = _aligned_tensor(align_face(photo, face.landmarks, template))
            prepared.append(PreparedFace(preprocess(aligned, image_size, crop).clone(), face))
        del image, photo  # the full-size copies go before the budget is released
    if not prepared and center_when_no_face:  # after the budget is released: the centre crop reserves its own
        return [PreparedFace(load_and_preprocess(data, image_size, crop, limits, jpeg_scaling), None)]
    return prepared
