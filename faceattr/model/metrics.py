"""Multi-label attribute metrics (torchmetrics): the figures papers report, per attribute and macro-averaged.

One stage's metrics are two torchmetrics states, so DDP ranks are reduced by torchmetrics itself:

* AUROC per attribute, from the probabilities (NaN, not torchmetrics' 0, where a split lacks a class);
* the confusion counts per attribute (``MultilabelStatScores``) of the decisions ``probability >= threshold``, from
  which accuracy, balanced accuracy, F1 and the positive rate follow.

Macro figures average over attributes: ``acc`` is the literature's "mean accuracy" (mean per-attribute accuracy),
``bacc`` the mean balanced accuracy, ``f1`` the macro F1, ``auroc`` the macro AUROC over attributes with both classes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torchmetrics.classification import MultilabelAUROC, MultilabelStatScores
from torchmetrics.utilities.data import dim_zero_cat

# Per-attribute columns, in the order of eval's CSV.
PER_ATTRIBUTE = ("positive_rate", "acc", "bacc", "auroc", "f1", "threshold")
# Macro figures logged per stage as ``<stage>/<name>``.
MACRO = ("auroc", "acc", "bacc", "f1")


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


def rates_from_counts(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-attribute accuracy, balanced accuracy, F1 and positive rate from ``(A, 5)`` counts [tp, fp, tn, fn, sup].

    Balanced accuracy is the mean of the true-positive and true-negative rates; for an attribute with one class only
    it is the rate that is defined. F1 is 0 where an attribute has no positive and none was predicted (torchmetrics'
    ``zero_division=0``), so the macro F1 equals ``MultilabelF1Score(average="macro")``.
    """
    tp, fp, tn, fn = (stats[:, i].double() for i in range(4))
    total = tp + fp + tn + fn
    nan = torch.full_like(tp, float("nan"))
    tpr = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), nan)
    tnr = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), nan)
    f1_denominator = 2 * tp + fp + fn
    return {
        "positive_rate": (tp + fn) / total.clamp(min=1),
        "acc": (tp + tn) / total.clamp(min=1),
        "bacc": torch.nanmean(torch.stack([tpr, tnr]), dim=0),
        "f1": torch.where(f1_denominator > 0, 2 * tp / f1_denominator.clamp(min=1), torch.zeros_like(tp)),
    }


def macro(values: torch.Tensor) -> torch.Tensor:
    """Mean over the attributes where ``values`` is defined (NaN when none is)."""
    return torch.nanmean(values) if not torch.isnan(values).all() else values.new_tensor(float("nan"))


class AttributeMetrics(nn.Module):
    """Epoch-level metrics of one stage; ``update(probs, labels)`` per batch, ``compute()`` per epoch.

    ``thresholds`` (one per attribute, 0.5 by default) turn probabilities into decisions; evaluation sets them to
    calibrated values with :meth:`set_thresholds`.
    """

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.auroc = AttributeAUROC(num_labels)
        self.counts = MultilabelStatScores(num_labels=num_labels, average=None, threshold=0.5)
        self.register_buffer("thresholds", torch.full((num_labels,), 0.5), persistent=False)

    def set_thresholds(self, thresholds: torch.Tensor) -> None:
        self.thresholds.copy_(thresholds.to(self.thresholds))

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """``probs`` float ``(N, A)`` in [0, 1] (computed in float32), ``labels`` int ``(N, A)`` in {0, 1}."""
        probs = probs.float()
        self.auroc.update(probs, labels)
        self.counts.update((probs >= self.thresholds.view(1, -1)).float(), labels)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-attribute tensors ``(A,)`` for each name of :data:`PER_ATTRIBUTE`, and ``num_images`` (0-d)."""
        stats = self.counts.compute()
        per_attribute = rates_from_counts(stats)
        per_attribute["auroc"] = self.auroc.compute().double()
        per_attribute["threshold"] = self.thresholds.double().clone()
        per_attribute["num_images"] = stats[0, :4].sum()
        return per_attribute

    def reset(self) -> None:
        self.auroc.reset()
        self.counts.reset()


def build_metrics(num_labels: int) -> AttributeMetrics:
    """Epoch-level metrics of one stage (see :class:`AttributeMetrics`)."""
    return AttributeMetrics(num_labels)


def attribute_table(values: dict[str, torch.Tensor], attributes: list[str]) -> dict[str, dict[str, float | None]]:
    """``{attribute: {column: value}}`` from :meth:`AttributeMetrics.compute` (NaN -> None), for JSON and CSV."""
    table = {}
    for i, name in enumerate(attributes):
        row = {}
        for column in PER_ATTRIBUTE:
            value = float(values[column][i])
            row[column] = round(value, 6) if value == value else None
        table[name] = row
    return table


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
