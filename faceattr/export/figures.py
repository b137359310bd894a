"""The export's own figures on the test split, from one set of predictions: what the metadata and the model card say.

Export runs the Lightning model once over the run's test split (the logits, through the service's preprocessing);
everything reported about the exported model is computed here from those logits, the contract's temperatures and
thresholds, and the test labels, so the metadata (``faceattr.json``), the BentoML metadata and ``MODEL_CARD.md``
cannot disagree:

* the decision metrics at 0.5 and at the served thresholds (:func:`faceattr.export.calibrate.split_metrics`);
* ``positive_rates`` (the test labels: the share of known labels that are 1) and ``predicted_positive_rates`` (the
  share of test images the served model calls present): a dashboard compares the served rate with the tested one;
* ``calibration``: ECE (15 bins) and Brier score per attribute, before temperature scaling (the plain sigmoid) and
  after (what the artefacts output; equal when ``export.calibration=none``);
* ``groups``: worst-group accuracy and the gaps of :func:`faceattr.fairness.group_report`, whose table goes into the
  card (the groups come from the data's labels, never from the model's predictions).

Unknown labels (:data:`faceattr.attributes.UNKNOWN_LABEL`) are left out of every figure that needs a label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.contract import ModelContract
from faceattr.export.build import scaled_probabilities
from faceattr.export.calibrate import split_metrics
from faceattr.reliability import brier_score, calibration_error

#: The ECE's bins (Guo et al. 2017's 15 equal-width bins; eval.py uses the same).
ECE_BINS = 15
DIGITS = 6


@dataclass
class SplitFigures:
    """The test split's figures: ``metrics`` (JSON, ``metrics.test`` of the metadata) and the group table's rows."""

    metrics: dict[str, Any] = field(default_factory=dict)
    group_rows: list[dict[str, Any]] = field(default_factory=list)


def _number(value: float) -> float | None:
    value = float(value)
    return round(value, DIGITS) if math.isfinite(value) else None


def _per_attribute(values: torch.Tensor, attributes: Sequence[str]) -> dict[str, Any]:
    """``{"macro": mean over the finite values, "per_attribute": {name: value}}``."""
    finite = [float(v) for v in values.tolist() if math.isfinite(float(v))]
    return {
        "macro": _number(sum(finite) / len(finite)) if finite else None,
        "per_attribute": {name: _number(v) for name, v in zip(attributes, values.tolist())},
    }


def positive_rates(labels: torch.Tensor, attributes: Sequence[str]) -> dict[str, float | None]:
    """Per attribute: the share of known labels that are 1 (None: no known label)."""
    known = labels != UNKNOWN_LABEL
    positive = (labels == 1) & known
    counts = known.sum(0)
    return {
        name: _number(p / n) if n else None for name, p, n in zip(attributes, positive.sum(0).tolist(), counts.tolist())
    }


def predicted_positive_rates(probs: torch.Tensor, thresholds: Sequence[float], attributes: Sequence[str]) -> dict:
    """Per attribute: the share of images the served rule (probability >= threshold) calls present."""
    if len(probs) == 0:
        return {name: None for name in attributes}
    decided = probs >= torch.tensor([float(t) for t in thresholds]).view(1, -1)
    return {name: _number(v) for name, v in zip(attributes, decided.float().mean(0).tolist())}


def calibration_figures(
    logits: torch.Tensor, labels: torch.Tensor, contract: ModelContract, method: str
) -> dict[str, Any]:
    """ECE and Brier score per attribute before (plain sigmoid) and after (the artefacts' temperatures) scaling."""
    before = torch.sigmoid(logits.float())
    after = scaled_probabilities(logits, contract.temperatures)
    names = contract.attributes
    return {
        "method": method,
        "n_bins": ECE_BINS,
        "ece_before": _per_attribute(calibration_error(before, labels, n_bins=ECE_BINS), names),
        "ece_after": _per_attribute(calibration_error(after, labels, n_bins=ECE_BINS), names),
        "brier_before": _per_attribute(brier_score(before, labels), names),
        "brier_after": _per_attribute(brier_score(after, labels), names),
    }


def split_figures(
    logits: torch.Tensor,
    labels: torch.Tensor,
    contract: ModelContract,
    calibration_method: str,
    group_labels: torch.Tensor | None = None,
    groups: Sequence[str] = (),
) -> SplitFigures:
    """Every test figure of the exported model (the module doc) from the test split's ``logits`` (N, A) and
    ``labels`` (N, A) uint8; ``group_labels`` (N, G) for ``groups`` (none: no group figures)."""
    if len(logits) == 0:
        return SplitFigures()
    probs = scaled_probabilities(logits, contract.temperatures)
    thresholds = torch.tensor(contract.thresholds)
    names = contract.attributes
    metrics = split_metrics(probs, labels, thresholds)
    metrics["positive_rates"] = positive_rates(labels, names)
    metrics["predicted_positive_rates"] = predicted_positive_rates(probs, contract.thresholds, names)
    metrics["calibration"] = calibration_figures(logits, labels, contract, calibration_method)
    rows: list[dict[str, Any]] = []
    if groups and group_labels is not None:
        from faceattr.fairness import group_report

        report = group_report(probs, labels, list(names), group_labels, list(groups), thresholds)
        # Per attribute its worst group (the accuracy of each of its 4 x G groups is left to eval's report).
        worst = {name: {k: v for k, v in entry.items() if k != "groups"} for name, entry in report.worst.items()}
        metrics["groups"] = {"groups": list(groups), "worst": worst, "gaps": report.gaps}
        rows = list(report.rows)
    return SplitFigures(metrics, rows)
