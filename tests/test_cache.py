"""The pre-decoded image cache (data.cache) on the generated folder: built once and reused, rebuilt when the data or
the preprocessing change, the same items as the uncached path, augmentation per read, bad images as without it,
and a clear refusal when the disk cannot hold it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from faceattr.data import CelebADataModule
from faceattr.data import cache as cache_module
from faceattr.data.celeba import collate_skipping_corrupt
from faceattr.errors import UserError


def datamodule(root: Path, cache: Path | None, **kwargs) -> CelebADataModule:
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("image_size", 32)
    return CelebADataModule(root=str(root), batch_size=8, cache=None if cache is None else str(cache), **kwargs)


def ready(dm: CelebADataModule) -> CelebADataModule:
    dm.setup()
    return dm


def stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_cache_is_built_once_then_reused(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    dm = ready(datamodule(synthetic_root, cache))
    for split in ("train", "valid", "test"):
        header = json.loads((cache / f"{split}.json").read_text())
        array = np.load(cache / f"{split}.npy", mmap_mode="r")
        assert array.shape == (len(dm.splits[split]), 3, 32, 32) and array.dtype == np.uint8
        assert header["shape"] == list(array.shape) and header["skipped"] == [] and header["no_face"] == []
        assert header["num_images"] == len(dm.splits[split]) and header["image_size"] == [32, 32]
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]  # nothing half-written left
    before = {p.name: stamp(p) for p in cache.glob("*.*")}
    again = ready(datamodule(synthetic_root, cache))
    assert {p.name: stamp(p) for p in cache.glob("*.*")} == before  # reused, not rewritten
    assert torch.equal(again.splits["valid"][3][0], dm.splits["valid"][3][0])


def test_a_change_of_size_crop_or_file_list_rebuilds(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    ready(datamodule(synthetic_root, cache))
    keys = {s: json.loads((cache / f"{s}.json").read_text())["key"] for s in ("train", "valid", "test")}
    ready(datamodule(synthetic_root, cache, image_size=[24, 16]))
    assert np.load(cache / "train.npy", mmap_mode="r").shape[1:] == (3, 24, 16)
    ready(datamodule(synthetic_root, cache, image_size=[24, 16], crop=150))
    crop_keys = {s: json.loads((cache / f"{s}.json").read_text())["key"] for s in ("train", "valid", "test")}
    assert all(crop_keys[s] != keys[s] for s in keys)
    ready(datamodule(synthetic_root, cache, image_size=[24, 16], crop=150, limit=20))
    assert np.load(cache / "train.npy", mmap_mode="r").shape[0] == 20
    assert json.loads((cache / "valid.json").read_text())["key"] == crop_keys["valid"]  # untouched splits stay


def test_cached_items_equal_the_uncached_ones_exactly(synthetic_root, tmp_path):
    cached = ready(datamodule(synthetic_root, tmp_path / "cache", image_size=[40, 30], crop=[170, 150]))
    plain = ready(datamodule(synthetic_root, None, image_size=[40, 30], crop=[170, 150]))
    for split in ("train", "valid", "test"):
        assert len(cached.splits[split]) == len(plain.splits[split])
        for index in range(len(plain.splits[split])):
            (a, la), (b, lb) = cached.splits[split][index], plain.splits[split][index]
            assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(la, lb)
        batch = cached.splits[split].__getitems__([2, 0, 1])  # what a DataLoader reads: a batch at once
        for (a, la), index in zip(batch, [2, 0, 1]):
            assert torch.equal(a, plain.splits[split][index][0]) and torch.equal(la, plain.splits[split][index][1])


def test_flip_still_runs_per_read_on_cached_training_images(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    always = ready(datamodule(synthetic_root, cache, train_augment=[v2.RandomHorizontalFlip(p=1.0)]))
    plain = ready(datamodule(synthetic_root, None))
    assert torch.equal(always.splits["train"][0][0], plain.splits["train"][0][0].flip(-1))
    assert torch.equal(always.splits["valid"][0][0], plain.splits["valid"][0][0])  # training only
    half = ready(datamodule(synthetic_root, cache, train_augment=[v2.RandomHorizontalFlip(p=0.5)]))
    image = plain.splits["train"][0][0]
    torch.manual_seed(0)
    seen = {bool(torch.equal(half.splits["train"][0][0], image)) for _ in range(20)}
    assert seen == {True, False}  # both orientations over epochs
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(half.splits["train"], batch_size=8, collate_fn=collate_skipping_corrupt)
    batch = next(iter(loader))
    assert batch[0].shape == (8, 3, 32, 32) and batch[2] == 0


def test_dataloader_workers_read_the_cache(synthetic_root, tmp_path):
    dm = ready(datamodule(synthetic_root, tmp_path / "cache", num_workers=1, persistent_workers=False))
    images, labels, skipped = next(iter(dm.val_dataloader()))
    assert torch.equal(images[0], dm.splits["valid"][0][0]) and skipped == 0


@pytest.fixture
def broken(synthetic_root, tmp_path) -> tuple[Path, str]:
    """A copy of the generated folder with one validation image truncated; returns (root, its name)."""
    root = Path(shutil.copytree(synthetic_root, tmp_path / "celeba"))
    name = next(
        line.split()[0]
        for line in (root / "list_eval_partition.txt").read_text().splitlines()
        if line.split()[1] == "1"
    )
    path = root / "img_align_celeba" / name
    path.write_bytes(path.read_bytes()[:200])
    return root, name


def test_corrupt_image_stops_the_build_with_the_uncached_error(broken, tmp_path):
    root, name = broken
    plain = ready(datamodule(root, None)).splits["valid"]
    with pytest.raises(UserError) as uncached:
        plain[[n.decode() for n in plain.filenames].index(name)]
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as with_cache:
        datamodule(root, cache).setup()
    assert str(with_cache.value) == str(uncached.value) and name in str(with_cache.value)
    assert not (cache / "valid.json").exists() and not (cache / "valid.npy").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]


def test_corrupt_image_is_recorded_and_skipped_with_skip_corrupt(broken, tmp_path):
    root, name = broken
    cache = tmp_path / "cache"
    dm = ready(datamodule(root, cache, skip_corrupt=True))
    valid = dm.splits["valid"]
    position = [n.decode() for n in valid.filenames].index(name)
    assert json.loads((cache / "valid.json").read_text())["skipped"] == [position]
    assert valid[position] is None
    batches = list(dm.val_dataloader())
    assert sum(skipped for _, _, skipped in batches) == 1
    assert sum(len(images) for images, _, _ in batches) == len(valid) - 1
    # The same cache, read by a run that does not skip: the image's own error, as without the cache.
    with pytest.raises(UserError, match=f"{name} is unreadable.*skip_corrupt=true"):
        datamodule(root, cache).setup()


def test_refuses_when_the_disk_cannot_hold_it(synthetic_root, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(UserError) as refused:
        datamodule(synthetic_root, tmp_path / "cache").setup()
    message = str(refused.value)
    assert message.startswith("data.cache needs ~") and "images at 32x32 but" in message
    assert "has 1.0 kB free" in message and "data.cache=null" in message and "\n" not in message
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_cache_size_formula():
    # The figures of conf/data/celeba.yaml: all 202,599 CelebA images.
    assert cache_module.cache_bytes(202_599, (64, 64)) == 2_489_536_512
    assert cache_module.cache_bytes(202_599, (128, 128)) == 9_958_146_048
    assert cache_module.cache_bytes(202_599, (218, 178)) == 23_584_954_788
