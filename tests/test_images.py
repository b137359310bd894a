"""faceattr.serve.images, the preprocessing shared by the service and export: training-equal preprocessing, the
crop box, decoding (modes, orientation, bad input), and the JPEG fast path (torchvision's decoder) against Pillow's
path: the same pixels, and the same answers for the cases it leaves to Pillow (EXIF rotation, CMYK) or refuses
(truncated files); the pixel budget that bounds decoding memory."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.serve import images
from faceattr.serve.images import (
    ImageError,
    ImageLimits,
    PixelBudget,
    crop_box,
    decode_image,
    load_and_preprocess,
    preprocess,
)


def jpeg(image: Image.Image, quality: int = 90, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def face(width: int = 178, height: int = 218) -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return Image.fromarray((base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8))


def pillow_only(monkeypatch) -> None:
    monkeypatch.setattr(images, "_plain_jpeg", lambda image, fmt: False)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fast_path_gives_pillows_pixels(mode, monkeypatch):
    data = jpeg(face().convert(mode))
    calls = []
    real = images._decode_jpeg
    monkeypatch.setattr(images, "_decode_jpeg", lambda d: calls.append(1) or real(d))
    fast = load_and_preprocess(data, (64, 64), (178, 178))
    assert calls == [1]  # the fast path decoded it
    pillow_only(monkeypatch)
    slow = load_and_preprocess(data, (64, 64), (178, 178))
    assert fast.shape == slow.shape == (3, 64, 64) and fast.dtype == slow.dtype
    assert np.array_equal(fast.numpy(), slow.numpy())


def test_rotated_and_cmyk_jpegs_take_pillows_path(monkeypatch):
    monkeypatch.setattr(images, "_decode_jpeg", lambda d: pytest.fail("not a plain JPEG"))
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    assert load_and_preprocess(jpeg(face(), exif=exif), (64, 64), (178, 178)).shape == (3, 64, 64)
    assert load_and_preprocess(jpeg(face().convert("CMYK")), (64, 64), (178, 178)).shape == (3, 64, 64)


def test_truncated_jpeg_is_refused_on_the_fast_path():
    data = jpeg(face())
    with pytest.raises(ImageError, match="truncated or corrupt") as refused:
        load_and_preprocess(data[: len(data) // 2], (64, 64), (178, 178))
    assert refused.value.status == 400 and "/" not in str(refused.value)  # no source paths in the message


# --- preprocessing and decoding -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("jpeg_scaling", [True, False])
def test_preprocessing_of_aligned_images_equals_training(synthetic_root, jpeg_scaling):
    from faceattr.data import CelebADataModule

    datamodule = CelebADataModule(
        root=str(synthetic_root), image_size=32, crop=178, num_workers=0, jpeg_scaling=jpeg_scaling
    )
    datamodule.setup()
    split = datamodule.splits["valid"]
    for index in range(4):
        expected, _ = split[index]
        data = Path(split.path(index)).read_bytes()
        assert torch.equal(load_and_preprocess(data, (32, 32), (178, 178), jpeg_scaling=jpeg_scaling), expected)
    # The two decodings differ (scale 1/4 here): the service must follow the model's own setting.
    assert not torch.equal(load_and_preprocess(data, (32, 32), (178, 178), jpeg_scaling=not jpeg_scaling), expected)


def test_crop_box_maps_the_training_crop_into_any_photo():
    assert crop_box(218, 178, (178, 178)) == (178, 178)  # aligned: exactly training's crop
    assert crop_box(436, 356, (178, 178)) == (356, 356)  # same frame at twice the size
    assert crop_box(200, 400, (178, 178)) == (163, 163)  # wide: frame = full height
    assert crop_box(1000, 300, (178, 178)) == (300, 300)  # tall: frame = full width
    assert crop_box(218, 178, None) == (218, 178)
    out = preprocess(torch.zeros(3, 123, 457, dtype=torch.uint8), (32, 32), (178, 178))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_decoding_handles_modes_orientation_and_bad_input():
    photo = Image.new("RGB", (60, 40), (200, 30, 30))
    gray = decode_image(jpeg(photo.convert("L"), quality=95))
    assert gray.shape == (3, 40, 60) and torch.equal(gray[0], gray[1])
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    png = io.BytesIO()
    rgba.save(png, "PNG")
    assert decode_image(png.getvalue()).min() == 255  # transparent -> white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert decode_image(jpeg(photo, quality=95, exif=exif)).shape == (3, 60, 40)
    palette = io.BytesIO()
    photo.convert("P").save(palette, "PNG")
    assert decode_image(palette.getvalue()).shape == (3, 40, 60)
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
    assert decode_image(png.getvalue(), ImageLimits(budget=full)).shape == (3, 30, 40) and full.in_use == 0
