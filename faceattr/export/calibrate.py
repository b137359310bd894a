"""Validation images for the parity check, per-attribute decision thresholds and validation metrics.

Images are read from the files and preprocessed by :func:`faceattr.serve.images.load_and_preprocess`, the function
the service runs on uploads, so thresholds are calibrated on exactly what the service feeds the model (for CelebA's
178x218 aligned images it equals training's evaluation transform).

Thresholds: for each attribute, the one that maximizes F1 on the validation images (the midpoint between the two
probabilities that separate the chosen top-k); ``default`` (0.5) for an attribute whose validation labels are all
one class, or when there are no validation images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from faceattr.errors import UserError
from faceattr.serve.images import ImageError, ImageLimits, load_and_preprocess

# Local files are trusted: no byte or pixel limit beyond Pillow's own decompression-bomb guard.
LOCAL_LIMITS = ImageLimits(max_bytes=1 << 40, max_pixels=1 << 40)


@dataclass
class ImageSet:
    """Paths and labels of one split's images, and where they came from."""

    root: Path
    paths: list[str]
    labels: torch.Tensor  # (N, A) uint8


class PreprocessedImages(Dataset):
    """Items ``(uint8 (3, h, w) model input, index)`` through the service's preprocessing."""

    def __init__(self, paths: list[str], image_size, crop, jpeg_scaling: bool = False) -> None:
        self.paths = paths
        self.image_size = list(image_size)
        self.crop = None if crop is None else list(crop)
        self.jpeg_scaling = jpeg_scaling

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
            return load_and_preprocess(data, self.image_size, self.crop, LOCAL_LIMITS, self.jpeg_scaling), index
        except (OSError, ImageError) as exc:
            raise UserError(f"validation image {path} is unreadable ({exc}); fix or remove it") from None


def _size(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]


def _list_difference(config: list[str], checkpoint: list[str]) -> str:
    """How two attribute lists differ, briefly: counts, names only in one of them, or the order."""

    def names(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f", ... ({len(items)})" if len(items) > 4 else "")

    only_config = [a for a in config if a not in checkpoint]
    only_checkpoint = [a for a in checkpoint if a not in config]
    parts = [f"has {len(config)} attributes, the checkpoint {len(checkpoint)}"]
    if only_config:
        parts.append(f"not in the checkpoint: {names(only_config)}")
    if only_checkpoint:
        parts.append(f"only in the checkpoint: {names(only_checkpoint)}")
    if not only_config and not only_checkpoint:
        parts = ["lists the checkpoint's attributes in another order"]
    return ", ".join(parts)


def check_run_config(hparams: dict[str, Any], run_config: dict[str, Any], source: str) -> None:
    """UserError when the run's saved config contradicts the checkpoint (a checkpoint from another run)."""
    data = run_config.get("data") or {}
    model = run_config.get("model") or {}
    problems = []
    if "image_size" in data and _size(data["image_size"]) != list(hparams["image_size"]):
        problems.append(
            f"data.image_size {_size(data['image_size'])} vs the checkpoint's {list(hparams['image_size'])}"
        )
    if "crop" in data and _size(data["crop"]) != (None if hparams.get("crop") is None else list(hparams["crop"])):
        problems.append(f"data.crop {_size(data['crop'])} vs the checkpoint's {hparams.get('crop')}")
    if data.get("attributes") and list(data["attributes"]) != list(hparams["attributes"]):
        problems.append(f"data.attributes {_list_difference(list(data['attributes']), list(hparams['attributes']))}")
    if model.get("backbone") and model["backbone"] != hparams["backbone"]:
        problems.append(f"model.backbone {model['backbone']} vs the checkpoint's {hparams['backbone']}")
    if problems:
        raise UserError(
            f"the checkpoint does not match {source} ({'; '.join(problems)}): it belongs to another run; "
            "pass that run's dir or its .ckpt"
        )


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
    """Preprocess ``paths`` as the service does (for a model trained with ``jpeg_scaling`` or not) and run the
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


def f1_thresholds(probs: torch.Tensor, labels: torch.Tensor, default: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-attribute F1-optimal thresholds and a mask of the attributes that could be calibrated."""
    num, attrs = probs.shape
    thresholds = torch.full((attrs,), float(default), dtype=torch.float64)
    calibrated = torch.zeros(attrs, dtype=torch.bool)
    for a in range(attrs):
        y = labels[:, a].to(torch.float64)
        positives = float(y.sum())
        if num == 0 or positives == 0 or positives == num:
            continue
        p, order = probs[:, a].to(torch.float64).sort(descending=True)
        tp = y[order].cumsum(0)
        k = torch.arange(1, num + 1, dtype=torch.float64)
        f1 = 2 * tp / (k + positives)
        # A cut after position k-1 is only possible where the next probability is strictly lower.
        valid = torch.ones(num, dtype=torch.bool)
        valid[:-1] = p[:-1] > p[1:]
        f1 = torch.where(valid, f1, torch.full_like(f1, -1.0))
        best = int(f1.argmax())
        thresholds[a] = (p[best] + p[best + 1]) / 2 if best + 1 < num else p[best]
        calibrated[a] = True
    return thresholds.float(), calibrated


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
