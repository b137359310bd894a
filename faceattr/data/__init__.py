"""The data path: CelebA's annotation files and plain folders' CSVs, splits and folds, the image dataset, transforms
and the LightningDataModule."""

from faceattr.data.celeba import CelebAImages, CelebAIndex, read_celeba
from faceattr.data.datamodule import CelebADataModule
from faceattr.data.folder import read_folder

__all__ = ["CelebADataModule", "CelebAImages", "CelebAIndex", "read_celeba", "read_folder"]
