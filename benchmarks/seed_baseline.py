"""The baseline of the input-pipeline benchmark: CelebA loaded the way the seed article's code does it.

One pandas row per item (``DataFrame.iloc``), ``PIL.Image.open(...).convert("RGB")``, then torchvision's v1
transforms on the PIL image (``CenterCrop`` -> ``Resize`` -> ``RandomHorizontalFlip`` -> ``ToTensor`` ->
``Normalize``), so every item leaves the worker as a normalized float32 tensor. The crop, output size and
augmentation are those of faceattr's training path, so both produce the same batch (up to the resampling
differences of PIL and torch); only the way of getting there differs.

This is the benchmark's reference, not product code: it needs pandas (``pip install -e .[bench]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_attributes(root: str | Path):
    """``list_attr_celeba.txt`` as a DataFrame with an ``image_id`` column and one -1/1 column per attribute."""
    import pandas as pd

    frame = pd.read_csv(Path(root) / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    return frame.reset_index().rename(columns={"index": "image_id"})


def seed_transform(image_size: tuple[int, int], crop: tuple[int, int] | None, flip: float = 0.0) -> T.Compose:
    steps = [T.CenterCrop(crop)] if crop is not None else []
    steps.append(T.Resize(image_size))
    if flip:
        steps.append(T.RandomHorizontalFlip(flip))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


class SeedCelebADataset(Dataset):
    """``(normalized float image (3, h, w), float labels (A,))`` per item, one DataFrame row at a time."""

    def __init__(self, frame, image_dir: str | Path, transform) -> None:
        self.frame = frame
        self.image_dir = str(image_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int):
        row = self.frame.iloc[index]
        image = Image.open(os.path.join(self.image_dir, row["image_id"])).convert("RGB")
        image = self.transform(image)
        labels = torch.tensor((row.iloc[1:].to_numpy() == 1).astype(np.float32))
        return image, labels
