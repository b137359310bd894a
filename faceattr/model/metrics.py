"""Multi-label attribute metrics (torchmetrics), with AUROC left undefined where a split lacks a class."""

from __future__ import annotations

import warnings

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelAccuracy, MultilabelAUROC, MultilabelF1Score
from torchmetrics.utilities.data import dim_zero_cat


class AttributeAUROC(MultilabelAUROC):
    """Per-attribute AUROC; NaN (not torchmetrics' 0) for an attribute whose targets are all one class."""

    def __init__(self, num_labels: int, **kwargs) -> None:
        super().__init__(num_labels=num_labels, average=None, **kwargs)

    def compute(self) -> torch.Tensor:
        with warnings.catch_warnings():  # torchmetrics warns, then returns 0, for a one-class attribute
            warnings.filterwarnings("ignore", message=".*samples in targets.*")
            per_label = super().compute()
        target = dim_zero_cat(self.target)
        positives = (target == 1).sum(dim=0)
        defined = (positives > 0) & (positives < target.shape[0])
        return torch.where(defined, per_label, torch.full_like(per_label, float("nan")))


def build_metrics(num_labels: int) -> MetricCollection:
    """Epoch-level metrics of one stage: per-attribute AUROC, macro accuracy and macro F1 (threshold 0.5)."""
    return MetricCollection(
        {
            "auroc": AttributeAUROC(num_labels),
            "acc": MultilabelAccuracy(num_labels=num_labels, average="macro"),
            "f1": MultilabelF1Score(num_labels=num_labels, average="macro"),
        }
    )
