"""data.jpeg_scaling: JPEGs decoded at a reduced DCT scale (faceattr.preprocess), in training and in the service,
with the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.data import CelebADataModule
from faceattr.data.transforms import ImageLoader
from faceattr.errors import UserError
from faceattr.preprocess import decode_jpeg, jpeg_size, reduction


def _files(root: Path, count: int = 24) -> list[Path]:
    return sorted((root / "img_align_celeba").glob("*.jpg"))[:count]


def test_reduction_is_the_largest_scale_that_keeps_the_crop_at_least_the_input_size():
    assert reduction((178, 178), (64, 64)) == 2  # 89 >= 64; 44.5 < 64
    assert reduction((178, 178), (89, 89)) == 2
    assert reduction((178, 178), (90, 90)) == 1
    assert reduction((178, 178), (32, 32)) == 4
    assert reduction((178, 178), (22, 22)) == 8
    assert reduction((218, 178), (218, 178)) == 1  # the whole frame at full size: no reduction
    assert reduction((800, 1200), (64, 300)) == 4  # the tighter of the two sides decides


def test_scaled_decode_has_libjpegs_size_and_rejects_what_is_not_a_jpeg(tmp_path):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (101, 77, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    assert jpeg_size(data) == (101, 77)
    for k, size in ((1, (101, 77)), (2, (51, 39)), (4, (26, 20)), (8, (13, 10))):
        assert decode_jpeg(data, k).shape == (*size, 3)
    png = io.BytesIO()
    photo.save(png, "PNG")
    assert jpeg_size(png.getvalue()) is None
    with pytest.raises(ValueError):
        decode_jpeg(data[: len(data) // 2], 2)  # truncated: an error, not a partly grey image
    with pytest.raises(ValueError, match="not a JPEG"):
        decode_jpeg(png.getvalue())


@pytest.mark.parametrize(
    ("size", "crop", "mean_bound", "max_bound"),
    [
        (64, (178, 178), 1.5, 48),  # scale 1/2: measured mean 0.92, max 27
        (32, (178, 178), 4.0, 96),  # scale 1/4: measured mean 2.62, max 63
        (128, (178, 178), 0.0, 0),  # no reduction possible: exactly the full decode's pixels
        ((218, 178), None, 0.0, 0),
    ],
)
def test_scaled_loader_stays_within_the_stated_tolerance_of_the_full_decode(
    synthetic_root, size, crop, mean_bound, max_bound
):
    loader, full = ImageLoader(size, crop, jpeg_scaling=True), ImageLoader(size, crop, jpeg_scaling=False)
    diffs = torch.stack(
        [(loader(str(path)).float() - full(str(path)).float()).abs() for path in _files(synthetic_root)]
    )
    assert float(diffs.mean()) <= mean_bound and float(diffs.max()) <= max_bound
    if max_bound:
        assert float(diffs.max()) > 0  # it did decode at a reduced scale


def _datamodule(root: Path, **kwargs) -> CelebADataModule:
    datamodule = CelebADataModule(root=str(root), image_size=32, crop=178, num_workers=0, **kwargs)
    datamodule.setup()
    return datamodule


def test_datamodule_reads_through_the_scaled_loader_and_augments_after_it(synthetic_root):
    from torchvision.transforms import v2

    flipped = _datamodule(synthetic_root, train_augment=[v2.RandomHorizontalFlip(p=1.0)]).splits["train"]
    plain = _datamodule(synthetic_root, jpeg_scaling=False).splits["train"]
    loader = ImageLoader(32, 178, jpeg_scaling=True)
    for index in range(3):
        image, labels = flipped[index]
        assert torch.equal(image, loader(flipped.path(index)).flip(-1))
        assert torch.equal(labels, plain[index][1])
    # The pre-decoded cache's key holds this, so a change of the rule rebuilds the cache.
    assert (
        repr(loader)
        == "ImageLoader(image_size=[32, 32], crop=[178, 178], jpeg_scaling=True, rule=faceattr.preprocess v2)"
    )


def test_a_corrupt_jpeg_fails_or_is_skipped_as_without_scaling(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "celeba"
    shutil.copytree(synthetic_root, root)
    victim = _datamodule(root).splits["train"].path(0)
    data = Path(victim).read_bytes()
    Path(victim).write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="unreadable"):
        _datamodule(root).splits["train"][0]
    assert _datamodule(root, skip_corrupt=True).splits["train"][0] is None


def test_the_service_decodes_at_the_training_scale_for_a_model_trained_so(synthetic_root):
    from faceattr.serve.images import ImageError, ImageLimits, PixelBudget, decode_image, load_and_preprocess

    path = _files(synthetic_root, 1)[0]
    data = path.read_bytes()
    # What training computed for this file, and what the service computes for an upload of it.
    served = torch.from_numpy(load_and_preprocess(data, (64, 64), (178, 178), jpeg_scaling=True))
    assert torch.equal(served, ImageLoader(64, 178, True)(str(path)))
    assert decode_image(data, image_size=(64, 64), crop=(178, 178), jpeg_scaling=True).shape == (109, 89, 3)
    assert decode_image(data, image_size=(64, 64), crop=(178, 178)).shape == (218, 178, 3)
    # The decoding budget is charged the pixels actually decoded.
    seen = []
    budget = PixelBudget(10**6)
    budget.on_release = seen.append
    decode_image(data, ImageLimits(budget=budget), image_size=(64, 64), crop=(178, 178), jpeg_scaling=True)
    assert seen == [109 * 89]
    # An EXIF-rotated JPEG: the same decoder at the scale of its upright size, turned upright.
    photo = Image.open(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95, exif=exif)
    rotated = decode_image(buffer.getvalue(), image_size=(64, 64), crop=(178, 178), jpeg_scaling=True)
    assert rotated.shape == (89, 109, 3)
    assert np.array_equal(rotated, np.rot90(decode_jpeg(buffer.getvalue(), 2), -1))  # 90 degrees clockwise
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_and_preprocess(data[: len(data) // 2], (64, 64), (178, 178), jpeg_scaling=True)
