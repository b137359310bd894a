"""The data path: CelebA annotation parsing, the image dataset, transforms and the LightningDataModule."""

from faceattr.data.celeba import CelebAImages, CelebAIndex, read_celeba
from faceattr.data.datamodule import CelebADataModule

__all__ = ["CelebADataModule", "CelebAImages", "CelebAIndex", "read_celeba"]
