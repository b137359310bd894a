"""Results by subgroup: for whom does the model fail?

Mean accuracy hides who the errors fall on. This module disaggregates one split's predictions by *group
attributes* (CelebA's Male and Young, by default in eval) as Model Cards (Mitchell et al., FAT* 2019) do, and
computes the figure of the spurious-correlation benchmarks, the worst-group accuracy (Sagawa et al., ICLR 2020).

:func:`group_report` gives, for every predicted attribute and every cell (each value of each group attribute, each
intersection of them, and ``all``):

- ``n``; ``positive_rate`` (share of images whose *label* is present), ``predicted_positive_rate`` (share predicted
  present, the rate demographic parity compares), ``acc``, ``fpr``, ``fnr``, each with a 95% Wilson score interval
  (``<name>_low`` / ``<name>_high``), which stays inside [0, 1] and is honest for small cells;
- ``auroc`` with a 95% percentile interval from a seeded bootstrap of the cell's images (``bootstrap`` resamples).

Rules:
- Group membership comes from the data's labels (``group_labels``), never from the model's predictions.
- An attribute is never reported against itself (Male's rows have no ``Male=...`` cell).
- Unknown labels (:data:`~faceattr.attributes.UNKNOWN_LABEL`) are left out per cell: an image counts in a cell when
  its label for the attribute and its labels for the cell's group attributes are known.
- Decisions are ``probability >= threshold`` in float32, as the training metrics decide (faceattr/model/metrics.py).

Worst-group accuracy (``.worst``): for attribute ``a`` and a group attribute ``g``, the four groups are
(label of ``a``) x (value of ``g``), as Sagawa et al. define them (Blond_Hair x Male on CelebA). With several group
attributes, each one gives its own four groups and the worst is taken over all of them (4 x G groups, each the
benchmark's own definition for one spurious attribute); intersections of group attributes are not used there, since
their cells get small and noisy fast; they are in the rows. ``avg_acc`` is the attribute's accuracy over every image
with a known label (the benchmarks' "average accuracy"). Groups with no image are skipped.

Gaps (``.gaps``), per attribute and per sensitive feature (each group attribute, and their intersection when there
are several): the *demographic-parity difference* (max - min predicted positive rate over the groups) and the
*equalized-odds difference* (the larger of the TPR range and the FPR range over the groups), fairlearn's definitions
(``demographic_parity_difference``, ``equalized_odds_difference``); tests/test_fairness.py checks them against
fairlearn. They are computed here in numpy rather than with fairlearn's ``MetricFrame`` (which would bring pandas and
scikit-learn into every eval) or torchmetrics' ``BinaryFairness`` (which reports min/max *ratios*, not the
differences asked for). A group without positives (negatives) has no TPR (FPR) and is left out of that range.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faceattr.attributes import UNKNOWN_LABEL

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RATES = ("positive_rate", "predicted_positive_rate", "acc", "fpr", "fnr")
COLUMNS = (
    "attribute",
    "group",
    "n",
    *itertools.chain.from_iterable((r, f"{r}_low", f"{r}_high") for r in RATES),
    "auroc",
    "auroc_low",
    "auroc_high",
)


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of a binomial proportion (``None``, ``None`` for no trials)."""
    if trials == 0:
        return None, None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def weighted_auroc(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC (ties count half) of ``scores`` against binary ``targets``, once per row of ``weights`` (B, n): each
    row weighs the images *in ascending score order* (a bootstrap resample's counts: being exchangeable, they can be
    drawn in that order). ``None`` = one unweighted AUROC. NaN where a row lacks a class."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, y = scores[order], targets[order].astype(bool)
    w = np.ones((1, len(scores)), np.float32) if weights is None else weights.astype(np.float32)
    positives, negatives = np.where(y, w, 0), np.where(y, 0, w)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    if len(starts) < len(scores):  # pool each run of tied scores
        positives = np.add.reduceat(positives, starts, axis=1)
        negatives = np.add.reduceat(negatives, starts, axis=1)
    below = np.cumsum(negatives, axis=1, dtype=np.float64) - negatives  # negative weight strictly below
    numerator = (positives * (below + 0.5 * negatives)).sum(axis=1)
    denominator = positives.sum(axis=1, dtype=np.float64) * negatives.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def bootstrap_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) counts: how often each of n items is drawn in each resample of n draws with replacement."""
    draws = rng.integers(0, n, (resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def _bootstrap_auroc(scores: np.ndarray, targets: np.ndarray, resamples: int, rng: np.random.Generator):
    """The AUROC and its 95% percentile bootstrap interval (``None`` where a class is missing)."""
    point = float(weighted_auroc(scores, targets)[0])
    if point != point:
        return None, None, None
    if resamples <= 0:
        return point, None, None
    values = weighted_auroc(scores, targets, bootstrap_counts(len(scores), resamples, rng))
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return point, None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return point, float(low), float(high)


def _cells(groups: Sequence[str]) -> list[tuple[tuple[int, int], ...]]:
    """Every cell as ((group index, value), ...): each single value, then each intersection, in a stable order."""
    cells = []
    for size in range(1, len(groups) + 1):
        for chosen in itertools.combinations(range(len(groups)), size):
            for values in itertools.product((0, 1), repeat=size):
                cells.append(tuple(zip(chosen, values)))
    return cells


def _cell_name(groups: Sequence[str], cell) -> str:
    return ",".join(f"{groups[g]}={v}" for g, v in cell)


def _row(attribute: str, group: str, y: np.ndarray, pred: np.ndarray, scores: np.ndarray, resamples, rng) -> dict:
    """The figures of one cell (y, pred bool arrays of the cell's images; scores their probabilities)."""
    n = len(y)
    positives, negatives = int(y.sum()), int((~y).sum())
    fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
    counts = {
        "positive_rate": (positives, n),
        "predicted_positive_rate": (int(pred.sum()), n),
        "acc": (n - fp - fn, n),
        "fpr": (fp, negatives),
        "fnr": (fn, positives),
    }
    row: dict[str, Any] = {"attribute": attribute, "group": group, "n": n}
    for name, (k, total) in counts.items():
        low, high = wilson_interval(k, total)
        row[name] = k / total if total else None
        row[f"{name}_low"], row[f"{name}_high"] = low, high
    auroc, low, high = _bootstrap_auroc(scores, y, resamples, rng) if n else (None, None, None)
    row.update(auroc=auroc, auroc_low=low, auroc_high=high)
    return row


def _gap(y: np.ndarray, pred: np.ndarray, keys: np.ndarray) -> dict[str, float | None]:
    """fairlearn's demographic-parity and equalized-odds differences over the groups named by ``keys``."""
    selection, tpr, fpr = [], [], []
    for key in np.unique(keys):
        inside = keys == key
        yk, pk = y[inside], pred[inside]
        selection.append(pk.mean())
        if yk.any():
            tpr.append(pk[yk].mean())
        if (~yk).any():
            fpr.append(pk[~yk].mean())

    def spread(values):
        return float(max(values) - min(values)) if values else None

    tpr_gap, fpr_gap = spread(tpr), spread(fpr)
    known = [g for g in (tpr_gap, fpr_gap) if g is not None]
    return {
        "demographic_parity_difference": spread(selection),
        "equalized_odds_difference": max(known) if known else None,
    }


@dataclass
class GroupReport:
    """What :func:`group_report` found: ``rows`` (one per attribute and cell), ``worst``, ``gaps``."""

    groups: tuple[str, ...]
    rows: list[dict[str, Any]]
    worst: dict[str, dict[str, Any]]
    gaps: dict[str, dict[str, dict[str, float | None]]]
    bootstrap: int = 0

    def worst_rows(self, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` cells (``all`` excluded) with the lowest accuracy; among equal accuracies, the larger first."""
        cells = [row for row in self.rows if row["group"] != "all" and row["acc"] is not None]
        return sorted(cells, key=lambda row: (row["acc"], -row["n"]))[:k]

    def to_json(self) -> dict[str, Any]:
        """The summary that goes into ``eval/<split>.json``: groups, worst groups, gaps and how intervals are made."""
        return {
            "groups": list(self.groups),
            "intervals": f"95%: Wilson score for rates; percentile bootstrap ({self.bootstrap} resamples) for AUROC",
            "worst": self.worst,
            "gaps": self.gaps,
        }

    def to_csv(self) -> str:
        """Every row, one line each (empty cell = undefined, e.g. an FPR in a cell without negatives)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(
                ["" if row[c] is None else (f"{row[c]:.6f}" if isinstance(row[c], float) else row[c]) for c in COLUMNS]
            )
        return buffer.getvalue()

    def format_worst(self, k: int = 10) -> str:
        """The ``k`` worst cells as a text table (what eval prints)."""
        rows = self.worst_rows(k)
        if not rows:
            return "no group cell has an image"
        width = max(len("attribute"), *(len(r["attribute"]) for r in rows)) + 2
        gwidth = max(len("group"), *(len(r["group"]) for r in rows)) + 2
        lines = [f"{'attribute':<{width}}{'group':<{gwidth}}{'n':>7}{'acc':>9}  95% interval      fpr     fnr"]
        for r in rows:
            fpr = "    n/a" if r["fpr"] is None else f"{r['fpr']:7.4f}"
            fnr = "    n/a" if r["fnr"] is None else f"{r['fnr']:7.4f}"
            interval = f"[{r['acc_low']:.4f}, {r['acc_high']:.4f}]"
            lines.append(
                f"{r['attribute']:<{width}}{r['group']:<{gwidth}}{r['n']:>7}{r['acc']:9.4f}  {interval} {fpr} {fnr}"
            )
        return "\n".join(lines)


def _array(values, dtype) -> np.ndarray:
    return (
        values.detach().cpu().numpy().astype(dtype) if isinstance(values, torch.Tensor) else np.asarray(values, dtype)
    )


def group_report(
    probs,
    labels,
    attributes: Sequence[str],
    group_labels,
    groups: Sequence[str],
    thresholds,
    bootstrap: int = 200,
    seed: int = 0,
) -> GroupReport:
    """Disaggregate one split's predictions by ``groups`` (the rules are in the module doc).

    Args:
        probs: (N, A) probabilities of the predicted ``attributes``.
        labels: (N, A) uint8 labels (1, 0, 255 = unknown).
        attributes: the A predicted attribute names.
        group_labels: (N, G) uint8 labels of the ``groups`` attributes, from the data, for the same N images.
        groups: the G group attribute names.
        thresholds: (A,) decision thresholds.
        bootstrap: resamples of each cell's AUROC interval (0 = no interval).
        seed: seed of the bootstrap (each cell draws from its own stream, so the order of work does not matter).
    """
    probs = _array(probs, np.float32)
    labels, group_labels = _array(labels, np.uint8), _array(group_labels, np.uint8)
    thresholds = _array(thresholds, np.float32).reshape(-1)
    groups, attributes = tuple(groups), tuple(attributes)
    if probs.shape != labels.shape or probs.shape[1] != len(attributes) or len(thresholds) != len(attributes):
        raise ValueError(
            f"probs {probs.shape}, labels {labels.shape}, {len(attributes)} names, {len(thresholds)} thresholds"
        )
    if group_labels.shape != (len(probs), len(groups)):
        raise ValueError(f"group_labels {group_labels.shape} for {len(probs)} images and {len(groups)} groups")
    group_known = group_labels != UNKNOWN_LABEL
    cells = _cells(groups)
    rows, worst, gaps = [], {}, {}
    for a, attribute in enumerate(attributes):
        known = labels[:, a] != UNKNOWN_LABEL
        y_all = labels[:, a] == 1
        pred_all = probs[:, a] >= thresholds[a]
        others = [g for g, name in enumerate(groups) if name != attribute]  # never against itself

        def rng(index: int, a=a) -> np.random.Generator:
            return np.random.default_rng([seed, a, index])

        rows.append(_row(attribute, "all", y_all[known], pred_all[known], probs[known, a], bootstrap, rng(0)))
        for index, cell in enumerate(cells, start=1):
            if any(g not in others for g, _ in cell):
                continue
            inside = known.copy()
            for g, value in cell:
                inside &= group_known[:, g] & (group_labels[:, g] == value)
            name = _cell_name(groups, cell)
            rows.append(_row(attribute, name, y_all[inside], pred_all[inside], probs[inside, a], bootstrap, rng(index)))
        if not others:
            continue
        correct = pred_all == y_all
        by_group: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for g in others:
            for label_value, value in itertools.product((0, 1), repeat=2):
                inside = known & group_known[:, g] & (y_all == label_value) & (group_labels[:, g] == value)
                if inside.any():
                    key = f"{attribute}={label_value},{groups[g]}={value}"
                    by_group[key], sizes[key] = float(correct[inside].mean()), int(inside.sum())
        if by_group:
            name = min(by_group, key=by_group.get)
            worst[attribute] = {
                "worst_group": name,
                "worst_group_acc": by_group[name],
                "worst_group_n": sizes[name],
                "avg_acc": float(correct[known].mean()) if known.any() else None,
                "groups": by_group,
            }
        features = [[g] for g in others] + ([others] if len(others) > 1 else [])
        gaps[attribute] = {}
        for feature in features:
            inside = known & group_known[:, feature].all(axis=1)
            if not inside.any():
                continue
            keys = np.zeros(int(inside.sum()), dtype=np.int64)
            for g in feature:
                keys = keys * 2 + group_labels[inside, g]
            gaps[attribute][",".join(groups[g] for g in feature)] = _gap(y_all[inside], pred_all[inside], keys)
    return GroupReport(groups=groups, rows=rows, worst=worst, gaps=gaps, bootstrap=bootstrap)
