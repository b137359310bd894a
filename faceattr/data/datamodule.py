"""The CelebA LightningDataModule: official partitions, optional subsampling and attribute subsets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from faceattr.attributes import CELEBA_ATTRIBUTES
from faceattr.data.cache import cached
from faceattr.data.celeba import SPLITS, CelebAImages, CelebAIndex, collate_skipping_corrupt, read_celeba
from faceattr.data.transforms import ImageLoader, build_augmentation
from faceattr.errors import UserError
from faceattr.preprocess import size_pair


class CelebADataModule(L.LightningDataModule):
    """CelebA (either public layout) under ``root``; batches are ``(uint8 images, uint8 labels, num_skipped)``.

    Args:
        root: folder holding the annotation files (or its parent ``celeba/``).
        attributes: attribute names to predict, in this order; ``None`` = all 40 in official order.
        image_size: model input size, an int or ``[height, width]``.
        crop: centre crop of the 178x218 aligned frame, before resizing (:mod:`faceattr.preprocess`); ``None`` = the
            whole frame.
        train_augment: ``transforms.v2`` transforms applied to training images after resizing.
        limit: use at most this many training images, drawn at random (seeded by ``seed``) from the official
            training partition; ``None`` = all. Never applies to validation or test.
        val_limit: likewise for the validation partition (``None`` = all). The test split is always the whole
            official test partition, so test figures compare with the literature's.
        seed: seed of the ``limit``/``val_limit`` subsamples (its own, so that a sweep over the training seed
            keeps the same images).
        synthetic: ``{num_images, seed}`` to generate CelebA-format data into ``root`` on first use.
        cache: a folder for the pre-decoded image cache (:mod:`faceattr.data.cache`): ``setup`` decodes, crops
            and resizes each split once into it (or reuses what is there for the same data and preprocessing) and
            the loaders read from it, augmenting per epoch; ``None`` = decode every image every epoch.
        jpeg_scaling: decode JPEGs at a reduced DCT scale where the crop allows (``decode_scale`` of
            :mod:`faceattr.preprocess`); recorded with the model, so that the service decodes uploads the same way.
            ``False``: CelebA's images are decoded whole.
    """

    def __init__(
        self,
        root: str,
        attributes: Sequence[str] | None = None,
        image_size: int | Sequence[int] = 64,
        crop: int | Sequence[int] | None = 178,
        train_augment: Sequence = (),
        limit: int | None = None,
        val_limit: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
        seed: int = 0,
        synthetic: dict | None = None,
        cache: str | None = None,
        jpeg_scaling: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        self.attribute_names: tuple[str, ...] = tuple(attributes) if attributes else CELEBA_ATTRIBUTES
        for key, value in (("limit", limit), ("val_limit", val_limit)):
            if value is not None and value < 1:
                raise UserError(f"data.{key}={value} must be at least 1 (or null for the whole partition)")
        self.image_size = size_pair(image_size)
        self.crop = None if crop is None else size_pair(crop)
        self.train_augment = list(train_augment or [])
        self.limit = limit
        self.val_limit = val_limit
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.persistent_workers = persistent_workers and num_workers > 0
        self.skip_corrupt = skip_corrupt
        self.seed = seed
        self.synthetic = dict(synthetic) if synthetic else None
        self.cache = Path(cache).expanduser() if cache else None
        self.jpeg_scaling = bool(jpeg_scaling)
        self.splits: dict[str, CelebAImages] = {}

    def prepare_data(self) -> None:
        if self.synthetic:
            from faceattr.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.synthetic)

    def _indices(self, index: CelebAIndex, split: str) -> torch.Tensor:
        chosen = torch.nonzero(index.partitions == SPLITS[split]).flatten()
        limit = {"train": self.limit, "valid": self.val_limit}.get(split)  # never the test split
        if limit is not None and limit < len(chosen):
            generator = torch.Generator().manual_seed(self.seed + SPLITS[split])
            chosen = chosen[torch.randperm(len(chosen), generator=generator)[:limit]].sort().values
        if len(chosen) == 0:
            raise UserError(
                f"the {split} partition of {self.root} is empty: list_eval_partition has no image marked "
                f"{SPLITS[split]} ({split}); every partition needs images"
            )
        return chosen

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        index = read_celeba(self.root).select(self.attribute_names)
        splits: dict[str, CelebAImages] = {}
        for split in SPLITS:
            chosen = self._indices(index, split).numpy()
            augment = self.train_augment if split == "train" else ()
            # The loader decodes, crops and resizes; the augmentation runs after it (on read, with the cache).
            loader = ImageLoader(self.image_size, self.crop, self.jpeg_scaling)
            transform = build_augmentation(augment) if self.cache is None else None
            images = CelebAImages(
                index.image_dir,
                index.filenames[chosen],
                index.labels[chosen],
                transform=transform,
                skip_corrupt=self.skip_corrupt,
                loader=loader,
            )
            if self.cache is not None:
                images = cached(
                    images,
                    self.cache,
                    split,
                    self.image_size,
                    self.crop,
                    augmentation=build_augmentation(augment),
                    num_workers=self.num_workers,
                )
            splits[split] = images
        self.splits = splits  # all three or none: a failed setup is retried whole

    @property
    def train_positive_rate(self) -> torch.Tensor:
        """Per-attribute fraction of positive labels in the training split (for ``pos_weight``)."""
        self.setup()
        return self.splits["train"].labels.float().mean(dim=0)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_skipping_corrupt,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
