"""The image rule (faceattr.preprocess) and the service's upload reading around it (faceattr.serve.images): the same
pixels as training for an aligned CelebA JPEG, the crop box and centre crop, the resize, the decode scale; decoding
(the training decoder for JPEGs, Pillow for the rest: modes, every EXIF orientation, CMYK, bad input); the pixel
budget that bounds decoding memory."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from faceattr import preprocess as rule
from faceattr.faces.photo import EXIF_ORIENTATION
from faceattr.preprocess import center_crop, crop_box, decode_scale, preprocess, size_pair
from faceattr.serve.images import (
    ImageError,
    ImageLimits,
    PixelBudget,
    decode_image,
    load_and_preprocess,
)


def jpeg(image: Image.Image, quality: int = 90, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def face(width: int = 178, height: int = 218) -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return Image.fromarray((base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8))


def pillows(data: bytes) -> np.ndarray:
    """What Pillow decodes, upright: the reference for the service's JPEG decoding."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


# --- the rule: the same pixels as training -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("jpeg_scaling", [True, False])
def test_the_service_gives_an_aligned_celeba_jpeg_the_pixels_training_computed(synthetic_root, jpeg_scaling):
    from faceattr.data import CelebADataModule

    datamodule = CelebADataModule(
        root=str(synthetic_root), image_size=32, crop=178, num_workers=0, jpeg_scaling=jpeg_scaling
    )
    datamodule.setup()
    split = datamodule.splits["valid"]
    for index in range(4):
        expected, _ = split[index]
        data = Path(split.path(index)).read_bytes()
        served = load_and_preprocess(data, (32, 32), (178, 178), jpeg_scaling=jpeg_scaling)
        assert torch.equal(torch.from_numpy(served), expected)
    # The two decodings differ (scale 1/4 here): the service must follow the model's own setting.
    other = load_and_preprocess(data, (32, 32), (178, 178), jpeg_scaling=not jpeg_scaling)
    assert not torch.equal(torch.from_numpy(other), expected)


def test_crop_box_maps_the_training_crop_into_any_photo():
    assert crop_box(218, 178, (178, 178)) == (178, 178)  # aligned: exactly training's crop
    assert crop_box(436, 356, (178, 178)) == (356, 356)  # same frame at twice the size
    assert crop_box(200, 400, (178, 178)) == (163, 163)  # wide: frame = full height
    assert crop_box(1000, 300, (178, 178)) == (300, 300)  # tall: frame = full width
    assert crop_box(218, 178, None) == (218, 178)
    out = preprocess(np.zeros((123, 457, 3), dtype=np.uint8), (32, 32), (178, 178))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        preprocess(np.zeros((3, 32, 32), dtype=np.uint8), (32, 32), None)


@pytest.mark.parametrize(("height", "width", "size"), [(218, 178, (178, 178)), (9, 8, (4, 5)), (7, 6, (10, 9))])
def test_center_crop_takes_torchvisions_region_and_padding(height, width, size):
    from torchvision.transforms.v2 import functional as F

    image = np.random.default_rng(1).integers(1, 255, (height, width, 3), dtype=np.uint8)
    expected = F.center_crop_image(torch.from_numpy(image).permute(2, 0, 1), list(size)).permute(1, 2, 0).numpy()
    assert np.array_equal(center_crop(image, size), expected)


def test_the_resize_is_pillows_antialiased_bilinear_within_one_level_of_torchvisions():
    """The resize of the image rule (the model contract's preprocessing): Pillow's BILINEAR, which reduces with
    an antialiasing support like torchvision's ``antialias=True``; the two differ by at most one level."""
    from torchvision.transforms.v2 import functional as F

    image = np.array(face())
    ours = preprocess(image, (64, 64), (178, 178))
    pillow = np.asarray(Image.fromarray(image[20:198]).resize((64, 64), Image.BILINEAR))
    assert np.array_equal(ours, pillow)
    tensor = F.center_crop_image(torch.from_numpy(image).permute(2, 0, 1), [178, 178])
    torchvision = F.resize_image(tensor, [64, 64], antialias=True).permute(1, 2, 0).numpy()
    difference = np.abs(ours.astype(int) - torchvision)
    assert difference.max() <= 1 and difference.mean() < 0.05
    assert np.array_equal(preprocess(image, (218, 178), None), image)  # the whole frame at its size: untouched


def test_size_pair_has_one_validation():
    assert size_pair(64) == (64, 64) and size_pair([218, 178]) == (218, 178) and size_pair((3, 4)) == (3, 4)
    for bad in (0, -1, True, [64], [64, 0], "64", [1.5, 2], None):
        with pytest.raises(ValueError, match="positive int or"):
            size_pair(bad)


def test_decode_scale_is_one_rule_for_both_kinds_of_model():
    # jpeg_scaling: the largest reduction that keeps the crop at least the input size.
    assert decode_scale(218, 178, (64, 64), (178, 178), True) == 2
    assert decode_scale(218, 178, (32, 32), (178, 178), True) == 4
    # Without: CelebA's images are decoded whole, whatever the size...
    assert decode_scale(218, 178, (16, 16), (178, 178), False) == 1
    assert decode_scale(900, 1000, (16, 16), (178, 178), False) == 1  # below LARGE_PHOTO_PIXELS
    # ... and a large photo only as far as the crop stays OVERSAMPLING times the input size.
    assert decode_scale(3000, 4000, (64, 64), (178, 178), False) == 8  # crop 2450 / 8 = 306 >= 256
    assert decode_scale(3000, 4000, (128, 128), (178, 178), False) == 4
    assert decode_scale(3000, 4000, (64, 64), (178, 178), True) == 8


def test_a_large_photo_decoded_reduced_stays_close_to_the_full_decode(monkeypatch):
    photo = face(1200, 1000)  # 1.2 MP: a crop of 1000 photo pixels for a 64 px model decodes at 1/2 (500 >= 256)
    data = jpeg(photo, 95)
    assert decode_image(data, image_size=(64, 64), crop=(178, 178)).shape == (500, 600, 3)
    reduced = load_and_preprocess(data, (64, 64), (178, 178)).astype(int)
    monkeypatch.setattr(rule, "LARGE_PHOTO_PIXELS", 10**9)
    full = load_and_preprocess(data, (64, 64), (178, 178)).astype(int)
    assert 0 < np.abs(reduced - full).max() <= 8 and np.abs(reduced - full).mean() < 1.0


# --- decoding ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpegs_decode_to_pillows_pixels(mode):
    data = jpeg(face().convert(mode))
    decoded = decode_image(data)
    assert decoded.shape == (218, 178, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, pillows(data))


#: How Pillow turns an upright image into the one stored under each EXIF orientation (the inverse of what
#: ``ImageOps.exif_transpose`` does to view it).
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
#: The reference model inputs of an aligned 178x218 photo with crop 178, worked out by hand: (input size, JPEG
#: scale 1/k with jpeg_scaling, the centred 178x178 crop in the image decoded at that scale: left, top, right, bottom).
ALIGNED_CASES = {
    "64, whole decode": ((64, 64), 1, (0, 20, 178, 198)),  # 218 - 178 = 40 rows: 20 above, 20 below
    "64, 1/2 decode": ((64, 64), 2, (0, 10, 89, 99)),  # 89x109 decoded: 89x89, 10 rows above
    "32, 1/4 decode": ((32, 32), 4, (0, 5, 45, 50)),  # 45x55 decoded (libjpeg rounds up): 45x45, 5 rows above
}


def marked_face() -> Image.Image:
    """The aligned test face with a white square near its upper left corner, inside the crop: which way is up."""
    image = np.array(face())
    image[20:60, 0:40] = 255
    return Image.fromarray(image)


def pillow_model_input(data: bytes, size: tuple[int, int], k: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The reference model input, by Pillow alone: decoded at scale 1/k (Pillow's JPEG draft mode), turned upright
    by ``ImageOps.exif_transpose``, cropped to ``box`` and resized with Pillow's antialiased bilinear filter."""
    with Image.open(io.BytesIO(data)) as image:
        if k > 1:
            image.draft("RGB", (image.width // k, image.height // k))
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(upright.crop(box).resize(size[::-1], Image.BILINEAR))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_upright_as_pillow_turns_it(orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = jpeg(face(60, 40), 95, exif=exif)
    assert np.array_equal(decode_image(data), pillows(data))


@pytest.mark.parametrize("case", ALIGNED_CASES)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_stored_turned_gets_the_model_input_of_the_upright_one(orientation, case):
    """The same answers whatever the EXIF orientation: the model input of a turned photo is Pillow's decode of it,
    turned upright, cropped and resized; and its marked corner is at the top left, where the upright photo has it."""
    size, k, box = ALIGNED_CASES[case]
    upright = marked_face()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = jpeg(upright if orientation == 1 else upright.transpose(STORED_AS[orientation]), 95, exif=exif)
    ours = load_and_preprocess(data, size, (178, 178), jpeg_scaling=k > 1).transpose(1, 2, 0)
    assert np.array_equal(ours, pillow_model_input(data, size, k, box))
    corner = size[0] // 8  # the white square covers the crop's first 40/178 rows and columns
    assert ours[1 : corner + 1, 1 : corner + 1].min() > 230 and ours[-corner:, -corner:].min() < 230


@pytest.mark.parametrize("case", ALIGNED_CASES)
def test_cmyk_jpegs_take_pillows_path_and_get_the_answers_of_the_rgb_jpeg(case):
    size, k, box = ALIGNED_CASES[case]
    photo = marked_face()
    cmyk, rgb = jpeg(photo.convert("CMYK")), jpeg(photo)
    assert np.array_equal(decode_image(cmyk), pillows(cmyk))
    at_scale = {"image_size": size, "crop": (178, 178), "jpeg_scaling": k > 1}
    assert decode_image(cmyk, **at_scale).shape == decode_image(rgb, **at_scale).shape  # the same decode scale
    ours = load_and_preprocess(cmyk, size, (178, 178), jpeg_scaling=k > 1).transpose(1, 2, 0)
    assert np.array_equal(ours, pillow_model_input(cmyk, size, k, box))
    # The same picture saved as an RGB JPEG (simplejpeg's path) gives the model nearly the same input: only the
    # two JPEG encodings differ.
    plain = load_and_preprocess(rgb, size, (178, 178), jpeg_scaling=k > 1).transpose(1, 2, 0)
    assert np.abs(ours.astype(int) - plain).mean() < 3


def test_truncated_jpeg_is_refused_in_one_line():
    data = jpeg(face())
    with pytest.raises(ImageError, match="truncated or corrupt") as refused:
        load_and_preprocess(data[: len(data) // 2], (64, 64), (178, 178))
    assert refused.value.status == 400 and "/" not in str(refused.value)  # no source paths in the message


def test_decoding_handles_modes_orientation_and_bad_input():
    photo = Image.new("RGB", (60, 40), (200, 30, 30))
    gray = decode_image(jpeg(photo.convert("L"), quality=95))
    assert gray.shape == (40, 60, 3) and np.array_equal(gray[..., 0], gray[..., 1])
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    png = io.BytesIO()
    rgba.save(png, "PNG")
    assert decode_image(png.getvalue()).min() == 255  # transparent -> white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90 degrees on display
    assert decode_image(jpeg(photo, quality=95, exif=exif)).shape == (60, 40, 3)
    palette = io.BytesIO()
    photo.convert("P").save(palette, "PNG")
    assert decode_image(palette.getvalue()).shape == (40, 60, 3)
    deep = io.BytesIO()
    Image.fromarray(np.full((5, 5), 65535, dtype=np.uint16)).save(deep, "PNG")
    assert decode_image(deep.getvalue()).max() == 255
    gif = io.BytesIO()
    photo.save(gif, "GIF")
    with pytest.raises(ImageError, match="not an image of a supported format"):
        decode_image(gif.getvalue())
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    noisy = jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), 95)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(noisy[: len(noisy) * 2 // 3])
    with pytest.raises(ImageError) as too_big:
        decode_image(jpeg(photo, 95), ImageLimits(max_pixels=1000))
    assert too_big.value.status == 413


# --- the decoding budget --------------------------------------------------------------------------------------------


def test_pixel_budget_bounds_the_pixels_decoded_at_once():
    budget = PixelBudget(10, timeout_s=5)
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first():
        with budget.reserve(6):
            order.append("first in")
            first_in.set()
            release_first.wait(5)
            order.append("first out")

    def second():
        first_in.wait(5)
        with budget.reserve(6):  # 6 + 6 > 10: waits for the first
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert order == ["first in"] and budget.in_use == 6
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"] and budget.in_use == 0
    with budget.reserve(10**9):  # larger than the whole budget: runs alone
        assert budget.in_use == 10
        impatient = PixelBudget(10, timeout_s=0.1)
        with impatient.reserve(10), pytest.raises(ImageError) as busy:
            with impatient.reserve(1):
                pass
        assert busy.value.status == 503 and "busy decoding" in str(busy.value)
    # In decode_image: the reservation covers the decode, and a 503 is not mistaken for a corrupt image.
    png = io.BytesIO()
    Image.new("RGB", (40, 30)).save(png, "PNG")
    full = PixelBudget(1200, timeout_s=0.1)
    with full.reserve(1200), pytest.raises(ImageError) as busy:
        decode_image(png.getvalue(), ImageLimits(budget=full))
    assert busy.value.status == 503
    assert decode_image(png.getvalue(), ImageLimits(budget=full)).shape == (30, 40, 3) and full.in_use == 0
