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

from faceattr.config_checks import build
from faceattr.data.face_align import NoFaceError
from faceattr.data.transforms import ImageLoader
from faceattr.errors import UserError


@dataclass
class ImageSet:
    """Paths and labels of one split's images, and where they came from."""

    root: Path
    paths: list[str]
    labels: torch.Tensor  # (N, A) uint8
    datamodule: Any = None  # the set-up data module they come from (column_names, group_labels)


class PreprocessedImages(Dataset):
    """Items ``(uint8 (3, h, w) model input, index)`` through the image rule (training's and the service's)."""

    def __init__(
        self, paths: list[str], image_size, crop, jpeg_scaling: bool = False, align: str = "none", detector=None
    ) -> None:
        self.paths = paths
        self.loader = ImageLoader(image_size, crop, jpeg_scaling, align=align, detector=detector)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            return self.loader(path), index
        except (OSError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise UserError(f"validation image {path} is unreadable ({reason}); fix or remove it") from None
        except NoFaceError:
            raise UserError(
                f"the detector finds no face in {path} (data.align=detect), which the run's cache had one in: "
                "the photo or data.detector changed since training; train again"
            ) from None


def split_set(
    hparams: dict[str, Any],
    run_config: dict[str, Any],
    data_root: str | None,
    split: str = "valid",
    run_dir: Path | None = None,
) -> tuple[ImageSet | None, str]:
    """The ``split`` (valid or test) the run was evaluated on, or None and why: the run's own datamodule
    (:func:`faceattr.data.run_data.run_datamodule`: the same data source, split, folds, subsample and seed; any
    data target: CelebA, the generated data, a plain folder), with the checkpoint's attributes.

    ``data_root`` (``data_root=`` on the command line) replaces the run's ``data.root``; it must exist and its
    annotation file must have every attribute of the checkpoint. The run's root may be gone (another machine): then
    there is no validation data and the reason says so. ``run_dir``: where the run is now (its split record).
    """
    from faceattr.contract import ModelContract
    from faceattr.data.run_data import run_data_config

    data = run_config.get("data") or {}
    explicit = data_root is not None
    root = data_root if explicit else data.get("root")
    if not root:
        return None, "no data.root: the checkpoint has no run config (pass data_root=<data folder>)"
    root_path = Path(str(root)).expanduser()
    if not root_path.exists():
        if explicit:
            raise UserError(f"data_root={root}: no such directory")
        return None, f"the run's data.root {root} does not exist here (pass data_root=<data folder>)"
    config = run_data_config(
        run_config,
        ModelContract.from_hparams(hparams),
        {"num_workers": 0},
        root=str(root_path) if explicit else None,
        run_dir=run_dir,
        root_setting="data_root",
    )
    if config.get("align", "none") == "none":
        config.cache = None  # export decodes the files itself: only their paths and labels are needed here
    datamodule = build(config, "data", _convert_="all")
    try:
        datamodule.setup("validate")
    except UserError:
        available = datamodule.read_index().attribute_names  # raises the data's own error if that is the problem
        missing = [name for name in hparams["attributes"] if name not in available]
        if not missing:
            raise
        source = f"data_root={root}" if explicit else f"the run's data.root {root}"
        raise UserError(
            f"{source} does not fit the checkpoint: its annotation file has no column for {len(missing)} of the "
            f"checkpoint's {len(hparams['attributes'])} attributes ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); pass the data folder the model was trained on"
        ) from None
    images = datamodule.splits[split]
    paths = [images.path(i) for i in range(len(images))]
    name = "validation" if split == "valid" else split
    return ImageSet(root_path, paths, images.labels.clone(), datamodule), f"{name} split of {root_path}"


def predict(
    module,
    paths: list[str],
    image_size,
    crop,
    batch_size: int,
    num_workers: int,
    keep: int,
    jpeg_scaling: bool = False,
    align: str = "none",
    detector: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess ``paths`` by the image rule (for a model trained with ``jpeg_scaling`` or not; faces found and
    aligned first for a model trained with ``data.align=detect``: pass its ``align`` and ``detector``, the datamodule
    of :func:`split_set` has them) and run the Lightning model (eager) on them.

    Returns the first ``keep`` uint8 inputs ``(keep, 3, h, w)`` (for the parity check) and the logits of all
    images ``(N, A)`` (export fits temperatures on them, then applies the sigmoid).
    """
    loader = DataLoader(
        PreprocessedImages(paths, image_size, crop, jpeg_scaling, align, detector),
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
            outputs.append(module(images.float().div(255)).float())
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
