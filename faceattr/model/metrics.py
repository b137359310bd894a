"""Per-attribute metrics (torchmetrics states): the figures papers report, per attribute and macro-averaged.

One stage's metrics are two torchmetrics states, so DDP ranks are reduced by torchmetrics itself:

* the probabilities and labels of the epoch (:class:`AttributeAUROC`), from which come the AUROC per attribute (NaN,
  not torchmetrics' 0, where a split lacks a class), the expected calibration error and the Brier score
  (faceattr/reliability.py);
* the confusion counts per attribute (:class:`AttributeCounts`) of the decisions ``probability >= threshold``, from
  which accuracy, balanced accuracy, F1 and the positive rate follow.

Every attribute is its own binary problem, so one attribute (``data.attributes=[Smiling]``) is measured like forty
(torchmetrics' ``Multilabel*`` metrics refuse fewer than two labels). A label stored as :data:`UNKNOWN_LABEL` is
masked out of every figure (torchmetrics' ``ignore_index``), never counted as a negative.

Macro figures average over attributes: ``acc`` is the literature's "mean accuracy" (mean per-attribute accuracy),
``bacc`` the mean balanced accuracy, ``f1`` the macro F1, ``auroc`` the macro AUROC over attributes with both classes,
``ece`` and ``brier`` the mean per-attribute calibration error and Brier score.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities.data import dim_zero_cat

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.reliability import brier_score, calibration_error

# Per-attribute columns, in the order of eval's CSV.
PER_ATTRIBUTE = ("positive_rate", "acc", "bacc", "auroc", "f1", "threshold", "ece", "brier")
# Macro figures logged per stage as ``<stage>/<name>``.
MACRO = ("auroc", "acc", "bacc", "f1")
# Calibration figures, logged at test time as ``test/<name>`` (macro) and ``test/ece/<Attribute>``.
CALIBRATION = ("ece", "brier")


def attribute_auroc(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute AUROC ``(A,)`` float64 over the known labels; NaN for an attribute without both classes."""
    known = labels != UNKNOWN_LABEL
    positives, count = ((labels == 1) & known).sum(dim=0).tolist(), known.sum(dim=0).tolist()
    values = []
    for a in range(labels.shape[1]):
        if 0 < positives[a] < count[a]:
            # Labels are 0, 1 or UNKNOWN_LABEL by construction (the data module checks them): no validation pass.
            auroc = binary_auroc(probs[:, a], labels[:, a].long(), ignore_index=UNKNOWN_LABEL, validate_args=False)
            values.append(auroc.double())
        else:
            values.append(torch.tensor(float("nan"), dtype=torch.float64, device=probs.device))
    return torch.stack(values) if values else torch.zeros(0, dtype=torch.float64, device=probs.device)


class AttributeAUROC(Metric):
    """The epoch's probabilities ``preds`` and labels ``target`` (concatenated over batches and ranks);
    ``compute()`` is :func:`attribute_auroc`."""

    full_state_update = False

    def __init__(self, num_labels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_labels = int(num_labels)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.preds.append(probs.float())
        self.target.append(labels.to(torch.uint8))

    def compute(self) -> torch.Tensor:
        return attribute_auroc(*samples(self.preds, self.target, self.num_labels))


def samples(preds, target, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The concatenated ``(probs, labels)`` of :class:`AttributeAUROC`'s states (empty ``(0, A)`` without any)."""
    if isinstance(preds, list) and not preds:
        return torch.zeros(0, num_labels), torch.zeros(0, num_labels, dtype=torch.uint8)
    return dim_zero_cat(preds), dim_zero_cat(target)


class AttributeCounts(Metric):
    """Per-attribute confusion counts of boolean decisions over the known labels; ``compute()`` gives them as
    ``(A, 4)`` [tp, fp, tn, fn] with the number of images (0-d), reduced over DDP ranks."""

    full_state_update = False

    def __init__(self, num_labels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", default=torch.zeros(num_labels, 4, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, decisions: torch.Tensor, labels: torch.Tensor) -> None:
        positive, negative = labels == 1, labels == 0
        self.counts += torch.stack(
            [
                (decisions & positive).sum(dim=0),
                (decisions & negative).sum(dim=0),
                (~decisions & negative).sum(dim=0),
                (~decisions & positive).sum(dim=0),
            ],
            dim=1,
        )
        self.images += labels.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.counts.clone(), self.images.clone()


def rates_from_counts(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-attribute accuracy, balanced accuracy, F1 and positive rate from ``(A, 4+)`` counts [tp, fp, tn, fn, ...].

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
        "positive_rate": torch.where(total > 0, (tp + fn) / total.clamp(min=1), nan),
        "acc": torch.where(total > 0, (tp + tn) / total.clamp(min=1), nan),
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
        self.num_labels = int(num_labels)
        self.auroc = AttributeAUROC(num_labels)
        self.counts = AttributeCounts(num_labels)
        self.register_buffer("thresholds", torch.full((num_labels,), 0.5), persistent=False)

    def set_thresholds(self, thresholds: torch.Tensor) -> None:
        self.thresholds.copy_(thresholds.to(self.thresholds))

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """``probs`` float ``(N, A)`` in [0, 1] (computed in float32), ``labels`` int ``(N, A)``: 1, 0 or
        :data:`UNKNOWN_LABEL` (masked out)."""
        probs = probs.float()
        self.auroc.update(probs, labels)
        self.counts.update(probs >= self.thresholds.view(1, -1), labels)

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's ``(probs, labels)`` so far, gathered from every DDP rank (in rank order)."""
        with self.auroc.sync_context():
            return samples(self.auroc.preds, self.auroc.target, self.num_labels)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-attribute tensors ``(A,)`` for each name of :data:`PER_ATTRIBUTE`, and ``num_images`` (0-d)."""
        stats, images = self.counts.compute()
        per_attribute = rates_from_counts(stats)
        probs, labels = self.samples()
        per_attribute["auroc"] = attribute_auroc(probs, labels)
        per_attribute["ece"] = calibration_error(probs, labels)
        per_attribute["brier"] = brier_score(probs, labels)
        per_attribute["threshold"] = self.thresholds.double().clone()
        per_attribute["num_images"] = images
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
    """Per-attribute F1-optimal thresholds over the known labels, and a mask of the attributes that could be
    calibrated (those whose known labels have both classes)."""
    attrs = probs.shape[1]
    thresholds = torch.full((attrs,), float(default), dtype=torch.float64)
    calibrated = torch.zeros(attrs, dtype=torch.bool)
    for a in range(attrs):
        known = labels[:, a] != UNKNOWN_LABEL
        y = (labels[known, a] == 1).to(torch.float64)
        num, positives = len(y), float(y.sum())
        if num == 0 or positives == 0 or positives == num:
            continue
        p, order = probs[known, a].to(torch.float64).sort(descending=True)
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
