"""Input pipeline: JPEG files on disk -> the normalized float batch the model consumes.

* ``per_worker``: one process (``num_workers=0``, one intra-op thread, as in a worker) running the whole path,
  faceattr's against the seed article's (:mod:`benchmarks.seed_baseline`), interleaved batch by batch.
  faceattr's path is ``CelebAImages`` (uint8 decode, crop, resize, flip in the worker) +
  ``collate_skipping_corrupt`` + the conversion the model does on the device (``float() / 255``, normalize), counted
  here so that both sides end at the same normalized batch.
* ``per_worker`` also runs faceattr's pipeline reading the pre-decoded cache (``data.cache``, built beforehand into
  a temporary folder; the build is timed once, ``cache_build_s``): the same items (flip still per read), in the
  same interleaved repetitions.
* ``loader``: the end-to-end ``DataLoader`` with ``num_workers`` worker processes (2), both pipelines, images/s
  in steady state (after the first batch, i.e. without worker start-up, which is reported separately).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import Settings
from benchmarks.seed_baseline import IMAGENET_MEAN, IMAGENET_STD, SeedCelebADataset, read_attributes, seed_transform
from benchmarks.timing import interleaved, median

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def finish_ours(batch) -> torch.Tensor:
    """What ``FaceAttrModule`` does to a loader batch before the backbone: uint8 -> [0, 1] float -> normalized."""
    images, labels, _ = batch
    images = images.float().div_(255)
    labels.float()
    return (images - MEAN) / STD


def finish_seed(batch) -> torch.Tensor:
    images, _ = batch  # already normalized float32 in the worker
    return images


def _train_augment(data_cfg, augment: bool) -> list:
    from hydra.utils import instantiate

    return list(instantiate(data_cfg.train_augment)) if augment and data_cfg.get("train_augment") else []


def _datamodule(root: Path, data_cfg, train_augment: list, cache: Path | None = None, jpeg_scaling: bool | None = None):
    from faceattr.data import CelebADataModule

    return CelebADataModule(
        root=str(root),
        image_size=data_cfg.image_size,
        crop=data_cfg.crop,
        train_augment=train_augment,
        batch_size=int(data_cfg.batch_size),
        num_workers=0,
        persistent_workers=False,
        cache=None if cache is None else str(cache),
        jpeg_scaling=bool(data_cfg.get("jpeg_scaling", True)) if jpeg_scaling is None else jpeg_scaling,
    )


def _datasets(root: Path, data_cfg, augment: bool):
    """faceattr's train split and the seed article's dataset over the same files, same crop, size and flip."""
    train_augment = _train_augment(data_cfg, augment)
    datamodule = _datamodule(root, data_cfg, train_augment)
    datamodule.setup("fit")
    ours = datamodule.splits["train"]
    flips = [t.p for t in train_augment if type(t).__name__ == "RandomHorizontalFlip"]
    frame = read_attributes(root)
    names = [name.decode() for name in ours.filenames]
    frame = frame.set_index("image_id").loc[names].reset_index()
    seed = SeedCelebADataset(
        frame, ours.image_dir, seed_transform(datamodule.image_size, datamodule.crop, flips[0] if flips else 0.0)
    )
    if len(train_augment) > len(flips):
        raise ValueError("the seed baseline mirrors RandomHorizontalFlip only; set data.train_augment accordingly")
    return datamodule, ours, seed


def lockstep(pipelines: dict[str, tuple], repetitions: int, warmup: int = 1) -> dict[str, list[float]]:
    """img/s per repetition of in-process loaders, interleaved batch by batch (A B, B A, ...).

    Each repetition runs every loader once through its images, alternating one batch of each, so that background
    load changes within a fraction of a second hit every pipeline alike; a repetition's figure is its images
    divided by the summed time of its batches.
    """
    names = list(pipelines)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + repetitions):
        iterators = {name: iter(loader) for name, (loader, _) in pipelines.items()}
        seconds = dict.fromkeys(names, 0.0)
        images = dict.fromkeys(names, 0)
        live = list(names)
        turn = 0
        while live:
            order = live if turn % 2 == 0 else live[::-1]
            turn += 1
            for name in order:
                started = time.perf_counter()
                try:
                    batch = next(iterators[name])
                except StopIteration:
                    live.remove(name)
                    continue
                count = len(pipelines[name][1](batch))
                seconds[name] += time.perf_counter() - started
                images[name] += count
        if rep >= warmup:
            for name in names:
                rates[name].append(images[name] / seconds[name])
    return rates


def _steady_rate(loader, finish, batches: int) -> tuple[float, float]:
    """(img/s from the first batch on, seconds to the first batch) over ``batches`` batches of a fresh iterator."""
    started = time.perf_counter()
    iterator = iter(loader)
    finish(next(iterator))
    first = time.perf_counter()
    images = 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        images += len(finish(batch))
    return images / (time.perf_counter() - first), first - started


def equivalence(ours, seed, count: int = 8) -> dict[str, float]:
    """How far the two pipelines' outputs are apart, in 0-255 pixel units (flip off): resampling differences only."""
    diffs = []
    ours_transform, seed_transform_ = ours.transform, seed.transform
    try:
        if ours_transform is not None:
            kept = [t for t in ours_transform.transforms if type(t).__name__ != "RandomHorizontalFlip"]
            ours.transform = type(ours_transform)(kept) if kept else None
        seed.transform = type(seed_transform_)(
            [t for t in seed_transform_.transforms if type(t).__name__ != "RandomHorizontalFlip"]
        )
        for index in range(min(count, len(ours))):
            image, labels = ours[index]
            a = finish_ours((image[None], labels[None], 0))[0]
            b, seed_labels = seed[index]
            if not torch.equal(labels.float(), seed_labels):
                raise AssertionError(f"labels of item {index} differ between the pipelines")
            diffs.append(((a - b) * STD[0] * 255).abs())
    finally:
        ours.transform, seed.transform = ours_transform, seed_transform_
    stacked = torch.stack(diffs)
    return {
        "max_abs_diff_pixels": round(float(stacked.max()), 2),
        "mean_abs_diff_pixels": round(float(stacked.mean()), 3),
    }


def run(settings: Settings, root: Path, data_cfg, log=print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="faceattr-bench-cache-") as cache_dir:
        return _run(settings, root, data_cfg, Path(cache_dir), log)


def _run(settings: Settings, root: Path, data_cfg, cache_dir: Path, log) -> dict[str, Any]:
    datamodule, ours, seed = _datasets(root, data_cfg, augment=True)
    batch_size = datamodule.batch_size
    count = min(settings.data_images_per_rep, len(ours))
    subset = list(range(count))
    ours_loader = DataLoader(
        Subset(ours, subset),
        batch_size=batch_size,
        num_workers=0,
        collate_fn=datamodule._loader("train", False).collate_fn,
    )
    seed_loader = DataLoader(Subset(seed, subset), batch_size=batch_size, num_workers=0)
    # The same pipeline with every JPEG decoded at full size (data.jpeg_scaling=false), for comparison.
    full = _datamodule(root, data_cfg, _train_augment(data_cfg, True), jpeg_scaling=False)
    full.setup("fit")
    full_loader = DataLoader(
        Subset(full.splits["train"], subset),
        batch_size=batch_size,
        num_workers=0,
        collate_fn=datamodule._loader("train", False).collate_fn,
    )
    started = time.perf_counter()
    cached = _datamodule(root, data_cfg, _train_augment(data_cfg, True), cache=cache_dir)
    cached.setup("fit")  # builds the cache of all three splits (one worker: this process)
    cache_build_s = time.perf_counter() - started
    cached_loader = DataLoader(
        Subset(cached.splits["train"], subset),
        batch_size=batch_size,
        num_workers=0,
        collate_fn=datamodule._loader("train", False).collate_fn,
    )
    result: dict[str, Any] = {
        "images": len(ours),
        "image_size": list(datamodule.image_size),
        "crop": list(datamodule.crop) if datamodule.crop else None,
        "jpeg_scaling": datamodule.jpeg_scaling,
        "batch_size": batch_size,
        "images_per_repetition": count,
        "equivalence": equivalence(ours, seed),
    }

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker process = one intra-op thread, as inside DataLoader workers
    try:
        per_worker = lockstep(
            {
                "seed": (seed_loader, finish_seed),
                "ours": (ours_loader, finish_ours),
                "ours_full_decode": (full_loader, finish_ours),
                "cached": (cached_loader, finish_ours),
            },
            settings.repetitions,
        )
    finally:
        torch.set_num_threads(threads)
    result["per_worker"] = {
        "seed_img_s": median(per_worker["seed"]),
        "ours_img_s": median(per_worker["ours"]),
        "seed_reps": [round(v, 2) for v in per_worker["seed"]],
        "ours_reps": [round(v, 2) for v in per_worker["ours"]],
        "ours_full_decode_img_s": median(per_worker["ours_full_decode"]),
        "ours_full_decode_reps": [round(v, 2) for v in per_worker["ours_full_decode"]],
        "cached_img_s": median(per_worker["cached"]),
        "cached_reps": [round(v, 2) for v in per_worker["cached"]],
        "cache_build_s": round(cache_build_s, 2),
        "cache_build_images": sum(len(images) for images in cached.splits.values()),
    }
    log(
        f"  per worker: seed {result['per_worker']['seed_img_s']:.0f} img/s, ours "
        f"{result['per_worker']['ours_img_s']:.0f} img/s (JPEG scaling {datamodule.jpeg_scaling}; full decode "
        f"{result['per_worker']['ours_full_decode_img_s']:.0f}), ours from the cache "
        f"{result['per_worker']['cached_img_s']:.0f} img/s (built in {cache_build_s:.1f} s)"
    )

    workers = settings.loader_workers
    ours_mt = DataLoader(
        ours,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        collate_fn=datamodule._loader("train", False).collate_fn,
    )
    seed_mt = DataLoader(seed, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=True)
    batches = min(settings.loader_batches, len(ours_mt) - 1)
    startups: dict[str, list[float]] = {"seed": [], "ours": []}

    def loader_rep(name, loader, finish):
        def rep() -> float:
            rate, startup = _steady_rate(loader, finish, batches)
            startups[name].append(startup)
            return rate

        return rep

    loader = interleaved(
        {"seed": loader_rep("seed", seed_mt, finish_seed), "ours": loader_rep("ours", ours_mt, finish_ours)},
        max(3, settings.repetitions - 2),
    )
    for dl in (ours_mt, seed_mt):
        iterator = getattr(dl, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
    result["loader"] = {
        "num_workers": workers,
        "batches_per_repetition": batches,
        "seed_img_s": median(loader["seed"]),
        "ours_img_s": median(loader["ours"]),
        "seed_reps": [round(v, 2) for v in loader["seed"]],
        "ours_reps": [round(v, 2) for v in loader["ours"]],
        "ours_first_batch_s": round(startups["ours"][0], 2) if startups["ours"] else None,
        "seed_first_batch_s": round(startups["seed"][0], 2) if startups["seed"] else None,
    }
    log(
        f"  loader ({workers} workers): seed {result['loader']['seed_img_s']:.0f} img/s, ours "
        f"{result['loader']['ours_img_s']:.0f} img/s"
    )
    return result
