"""The service's JPEG fast path (torchvision's decoder) against Pillow's path: the same pixels, and the same
answers for the cases it leaves to Pillow (EXIF rotation, CMYK) or refuses (truncated files)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from faceattr.serve import images
from faceattr.serve.images import ImageError, load_and_preprocess


def jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
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
