"""The face-data LightningDataModule: CelebA's layouts or a plain folder's CSV, splits, folds, subsamples, sampling.

One datamodule for every data source, with one index reader each (they give the same
:class:`~faceattr.data.celeba.CelebAIndex`): CelebA's annotation files (either public layout, and the generated
quickstart data) or a plain folder's CSV (:mod:`faceattr.data.folder`). The attributes are the data's columns in
file order unless ``attributes`` picks some; everything after the index (splits, folds, subsamples, the cache,
loaders) is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from faceattr.attributes import check_attribute_names
from faceattr.data.cache import cached
from faceattr.data.celeba import SPLITS, CelebAImages, CelebAIndex, collate_skipping_corrupt, read_celeba
from faceattr.data.face_align import check_align
from faceattr.data.folder import read_folder
from faceattr.data.splits import check_ratios, known_fraction, make_folds, make_split, read_record, write_record
from faceattr.data.transforms import ImageLoader, build_augmentation
from faceattr.errors import UserError
from faceattr.preprocess import size_pair

log = logging.getLogger(__name__)


class CelebADataModule(L.LightningDataModule):
    """Face images with attribute labels under ``root``; batches are ``(uint8 images, uint8 labels, num_skipped)``.

    After :meth:`setup`: ``attribute_names`` (the predicted attributes), ``column_names`` (every attribute column
    of the data), ``splits`` (``train``/``valid``/``test`` datasets; ``labels`` uint8, 255 = unknown) and
    :meth:`group_labels`.

    Args:
        root: the data folder: CelebA's annotation files (or their parent ``celeba/``), or a plain folder.
        attributes: attribute names to predict, in this order; ``None`` = every column of the annotation file, in
            file order (on CelebA: the official 40).
        labels: a plain folder's CSV (relative to ``root``, or absolute; :mod:`faceattr.data.folder`); ``None`` =
            CelebA's annotation files.
        split_ratios: train/valid/test fractions of a seeded, stratified split (:mod:`faceattr.data.splits`) for a
            folder CSV without a ``split`` column.
        split_record: where that split is recorded (``split.csv`` in the run dir) and, when the file exists, read
            back from (eval, export, resume); ``None`` = made afresh each time (it is deterministic).
        folds: k-fold cross-validation: the training pool (train + valid) cut into ``folds`` stratified, seeded
            folds; fold ``fold`` is the validation split, the others the training split. The test split stays.
            ``None`` = off.
        fold: the validation fold, ``0 .. folds-1``.
        image_size: model input size, an int or ``[height, width]``.
        crop: centre crop of the 178x218 aligned frame, before resizing (:mod:`faceattr.preprocess`); ``None`` = the
            whole frame.
        train_augment: ``transforms.v2`` transforms applied to training images after resizing.
        limit: use at most this many training images, drawn at random (seeded by ``seed``) from the training
            split; ``None`` = all. Never applies to validation or test.
        val_limit: likewise for the validation split (``None`` = all). The test split is always whole, so test
            figures compare with the literature's.
        seed: seed of the subsamples, the made split and the folds (its own, so that a sweep over the training seed
            keeps the same images).
        synthetic: ``{num_images, seed}`` to generate CelebA-format data into ``root`` on first use.
        cache: a folder for the pre-decoded image cache (:mod:`faceattr.data.cache`); ``None`` = decode every image
            every epoch.
        jpeg_scaling: decode JPEGs at a reduced DCT scale where the crop allows (``decode_scale`` of
            :mod:`faceattr.preprocess`); recorded with the model.
        align: ``none`` (the photo's centred frame) or ``detect`` (faces found and aligned as the service's
            ``face=detect`` does; :mod:`faceattr.data.face_align`), with ``detector`` its settings.
        balance_groups: attribute columns whose value combinations the training loader samples equally often
            (:mod:`faceattr.data.sampling`); ``None`` = plain shuffling.
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
        labels: str | None = None,
        split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
        split_record: str | None = None,
        folds: int | None = None,
        fold: int = 0,
        align: str = "none",
        detector: dict | None = None,
        balance_groups: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        #: The predicted attributes: those asked for, else (after setup) every column of the data.
        self.attribute_names: tuple[str, ...] | None = tuple(attributes) if attributes else None
        #: Every attribute column of the data (after setup).
        self.column_names: tuple[str, ...] | None = None
        for key, value in (("limit", limit), ("val_limit", val_limit)):
            if value is not None and value < 1:
                raise UserError(f"data.{key}={value} must be at least 1 (or null for the whole partition)")
        if folds is not None and (folds < 2 or not 0 <= fold < folds):
            raise UserError(f"data.folds={folds} data.fold={fold}: expected folds >= 2 and 0 <= fold < folds")
        check_align(align, cache)
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
        self.labels = labels
        self.split_ratios = check_ratios(split_ratios) if labels is not None else list(split_ratios)
        self.split_record = Path(split_record).expanduser() if split_record else None
        self.folds = folds
        self.fold = fold
        self.align = align
        self.detector = dict(detector) if detector else None
        self.balance_groups = list(balance_groups) if balance_groups else None
        self.splits: dict[str, CelebAImages] = {}
        self._index: CelebAIndex | None = None
        self._rows: dict[str, np.ndarray] = {}  # per split: the index rows of its images, in order

    def prepare_data(self) -> None:
        if self.synthetic:
            from faceattr.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.synthetic)

    def read_index(self) -> CelebAIndex:
        """The data's index (every column, partitions as the files give them), read afresh."""
        if self.labels is None:
            return read_celeba(self.root)
        return read_folder(self.root, self.labels, self.skip_corrupt)

    def _partitions(self, index: CelebAIndex, columns: list[int]) -> torch.Tensor:
        """Each image's split code: the data's own, or the recorded or made split; then the fold, if on."""
        base, recorded_folds, made = index.partitions, None, False
        if (base < 0).all():  # a folder CSV without a split column
            if self.split_record is not None and self.split_record.is_file():
                base, recorded_folds = read_record(self.split_record, index.filenames)
                log.info(f"split: the run's record {self.split_record}")
            else:
                base, made = make_split(index.labels[:, columns], self.split_ratios, self.seed), True
        fold_of = None
        if self.folds:
            pool = torch.nonzero((base == 0) | (base == 1)).flatten()
            fold_of = recorded_folds
            if fold_of is None or not len(pool) or set(fold_of[pool].unique().tolist()) != set(range(self.folds)):
                fold_of = torch.full_like(base, -1)
                fold_of[pool] = make_folds(index.labels[pool][:, columns], self.folds, self.seed)
        if made and self.split_record is not None:
            write_record(self.split_record, index.filenames, base, fold_of)
        if fold_of is None:
            return base
        partitions = base.clone()
        pooled = (base == 0) | (base == 1)
        partitions[pooled] = torch.where(fold_of[pooled] == self.fold, SPLITS["valid"], SPLITS["train"])
        return partitions

    def _indices(self, index: CelebAIndex, partitions: torch.Tensor, split: str) -> torch.Tensor:
        chosen = torch.nonzero(partitions == SPLITS[split]).flatten()
        limit = {"train": self.limit, "valid": self.val_limit}.get(split)  # never the test split
        if limit is not None and limit < len(chosen):
            generator = torch.Generator().manual_seed(self.seed + SPLITS[split])
            chosen = chosen[torch.randperm(len(chosen), generator=generator)[:limit]].sort().values
        if len(chosen) == 0:
            where = (
                f"list_eval_partition has no image marked {SPLITS[split]} ({split})"
                if index.layout != "folder"
                else f"the split column of {index.source} has no row '{split}'"
            )
            raise UserError(f"the {split} partition of {self.root} is empty: {where}; every partition needs images")
        return chosen

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        index = self.read_index()
        names = self.attribute_names or index.attribute_names
        columns = index.columns_of(names, "data.attributes")
        check_attribute_names(names, str(index.source))
        if self.balance_groups:
            index.columns_of(self.balance_groups, "data.balance_groups")
        partitions = self._partitions(index, columns)
        splits: dict[str, CelebAImages] = {}
        rows: dict[str, np.ndarray] = {}
        for split in SPLITS:
            chosen = self._indices(index, partitions, split).numpy()
            augment = self.train_augment if split == "train" else ()
            # The loader decodes (and aligns), crops and resizes; the augmentation runs after it.
            loader = ImageLoader(
                self.image_size, self.crop, self.jpeg_scaling, align=self.align, detector=self.detector
            )
            transform = build_augmentation(augment) if self.cache is None else None
            images = CelebAImages(
                index.image_dir,
                index.filenames[chosen],
                index.labels[chosen][:, columns],
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
            kept = getattr(images, "rows", None)  # the cache leaves out photos without a face (align=detect)
            rows[split] = chosen if kept is None else chosen[kept]
            splits[split] = images
        # All at once: a failed setup is retried whole.
        self._index, self._rows = index, rows
        self.attribute_names, self.column_names = tuple(names), index.attribute_names
        self.splits = splits

    def group_labels(self, split: str, names: Sequence[str], setting: str = "groups") -> torch.Tensor:
        """uint8 (N, G) labels of the attribute columns ``names`` (predicted or not) for the images of
        ``splits[split]``, in the same order; a one-line UserError naming the data's columns for a name it lacks
        (``setting``: where the names were given)."""
        self.setup()
        columns = self._index.columns_of(list(names), setting)
        return self._index.labels[torch.from_numpy(self._rows[split])][:, columns]

    @property
    def train_positive_rate(self) -> torch.Tensor:
        """Per-attribute fraction of positive labels among the known ones of the training split (``pos_weight``)."""
        self.setup()
        return known_fraction(self.splits["train"].labels)

    def _loader(self, split: str, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_skipping_corrupt,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.balance_groups:
            return self._loader("train", shuffle=True)
        from faceattr.data.sampling import group_balanced_sampler

        groups = self.group_labels("train", self.balance_groups, "data.balance_groups")
        # Seeded by the run's seed (seed_everything's), so each epoch's draws are reproducible under it.
        return self._loader("train", shuffle=False, sampler=group_balanced_sampler(groups, torch.initial_seed()))

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
