"""Validation images for the parity check, per-attribute decision thresholds and validation metrics.

Images are read from the files by training's loader (:class:`faceattr.data.transforms.ImageLoader`: the image rule
of :mod:`faceattr.preprocess`, which the service runs on uploads too), so thresholds are calibrated on exactly what
the service feeds the model for CelebA's aligned images.

Thresholds: for each attribute, the one that maximizes F1 on the validation images
(:func:`faceattr.model.metrics.f1_thresholds`); ``default`` (0.5) for an attribute whose validation labels are all
one class, or when there are no validation images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from faceattr.data.transforms import ImageLoader
from faceattr.errors import UserError


@dataclass
class ImageSet:
    """Paths and labels of one split's images, and where they came from."""

    root: Path
    paths: list[str]
    labels: torch.Tensor  # (N, A) uint8


class PreprocessedImages(Dataset):
    """Items ``(uint8 (3, h, w) model input, index)`` through the image rule (training's and the service's)."""

    def __init__(self, paths: list[str], image_size, crop, jpeg_scaling: bool = False) -> None:
        self.paths = paths
        self.loader = ImageLoader(image_size, crop, jpeg_scaling)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return self.loader(path), index
        except (OSError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise UserError(f"validation image {path} is unreadable ({reason}); fix or remove it") from None


def split_set(
    hparams: dict[str, Any], run_config: dict[str, Any], data_root: str | None, split: str = "valid"
) -> tuple[ImageSet | None, str]:
    """The ``split`` (valid or test) the run was evaluated on (same root, attributes, subsample and seed), or None
    and why. The test split is always the whole official partition.

    ``data_root`` (``data_root=`` on the command line) replaces the run's ``data.root``; it must exist and its
    annotation file must have every attribute of the checkpoint. The run's root may be gone (another machine): then
    there is no validation data and the reason says so.
    """
    from faceattr.data import CelebADataModule

    data = run_config.get("data") or {}
    explicit = data_root is not None
    root = data_root if explicit else data.get("root")
    if not root:
        return None, "no data.root: the checkpoint has no run config (pass data_root=<CelebA folder>)"
    root_path = Path(str(root)).expanduser()
    if not root_path.exists():
        if explicit:
            raise UserError(f"data_root={root}: no such directory")
        return None, f"the run's data.root {root} does not exist here (pass data_root=<CelebA folder>)"
    seed = data.get("seed", run_config.get("seed", 0))
    datamodule = CelebADataModule(
        root=str(root_path),
        attributes=list(hparams["attributes"]),
        image_size=list(hparams["image_size"]),
        crop=None if hparams.get("crop") is None else list(hparams["crop"]),
        val_limit=data.get("val_limit") if not explicit else None,
        seed=int(seed) if seed is not None else 0,
        num_workers=0,
    )
    try:
        datamodule.setup("validate")
    except UserError:
        from faceattr.data.celeba import read_celeba

        available = read_celeba(root_path).attribute_names  # raises the data's own error if that is the problem
        missing = [name for name in hparams["attributes"] if name not in available]
        if not missing:
            raise
        source = f"data_root={root}" if explicit else f"the run's data.root {root}"
        raise UserError(
            f"{source} does not fit the checkpoint: its annotation file has no column for {len(missing)} of the "
            f"checkpoint's {len(hparams['attributes'])} attributes ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); pass the CelebA folder the model was trained on"
        ) from None
    images = datamodule.splits[split]
    paths = [images.path(i) for i in range(len(images))]
    name = "validation" if split == "valid" else split
    return ImageSet(root_path, paths, images.labels.clone()), f"{name} split of {root_path}"


def predict(
    module,
    paths: list[str],
    image_size,
    crop,
    batch_size: int,
    num_workers: int,
    keep: int,
    jpeg_scaling: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess ``paths`` by the image rule (for a model trained with ``jpeg_scaling`` or not) and run the
    Lightning model (eager) on them.

    Returns the first ``keep`` uint8 inputs ``(keep, 3, h, w)`` (for the parity check) and the probabilities of
    all images ``(N, A)``.
    """
    loader = DataLoader(
        PreprocessedImages(paths, image_size, crop, jpeg_scaling),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    inputs, outputs, kept = [], [], 0
    with torch.inference_mode():
        for images, _ in loader:
            if kept < keep:
                inputs.append(images[: keep - kept])
                kept += len(inputs[-1])
            outputs.append(torch.sigmoid(module(images.float().div(255))).float())
    empty = torch.empty(0, 3, *image_size, dtype=torch.uint8)
    return (torch.cat(inputs) if inputs else empty), (torch.cat(outputs) if outputs else torch.empty(0, 0))


def decision_metrics(probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor) -> dict[str, float]:
    """Macro accuracy, balanced accuracy and F1 of the decisions ``probs >= thresholds`` (the training metrics'
    definitions, :mod:`faceattr.model.metrics`)."""
    from faceattr.model.metrics import AttributeMetrics, macro

    metrics = AttributeMetrics(probs.shape[1])
    metrics.set_thresholds(thresholds)
    metrics.update(probs, labels.int())
    values = metrics.compute()
    return {name: round(float(macro(values[name])), 6) for name in ("acc", "bacc", "f1")}


def split_metrics(probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor) -> dict[str, Any]:
    """Macro AUROC (over attributes with both classes) and the decision metrics at 0.5 and at ``thresholds``."""
    from faceattr.model.metrics import AttributeAUROC, macro

    if len(probs) == 0:
        return {}
    auroc = AttributeAUROC(probs.shape[1])
    auroc.update(probs.float(), labels.int())
    value = float(macro(auroc.compute()))
    metrics: dict[str, Any] = {"num_images": int(len(probs))}
    if math.isfinite(value):
        metrics["auroc"] = round(value, 6)
    metrics["at_0.5"] = decision_metrics(probs, labels, torch.full_like(thresholds, 0.5))
    metrics["at_thresholds"] = decision_metrics(probs, labels, thresholds)
    return metrics
