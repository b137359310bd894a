"""Whether the probabilities mean what they say: calibration error, Brier score, reliability diagrams, temperatures.

The service returns probabilities and users threshold them, so a model whose "0.8" is right 60% of the time misleads
even at a good AUROC (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017). Each attribute is a binary
problem, so every figure here is per attribute, over the images whose label is known (:data:`UNKNOWN_LABEL` entries
are masked out, never counted as negatives):

* :func:`calibration_error`: the expected calibration error (ECE), torchmetrics' ``BinaryCalibrationError``
  definition: 15 equal-width bins of the predicted probability, the L1 gap between each bin's mean probability and
  its fraction of positives, weighted by the bin's share of the images;
* :func:`brier_score`: the mean squared difference between probability and label;
* :func:`reliability_figure`: the reliability diagram of all attributes together and of the worst-calibrated few;
* :func:`fit_temperatures`: temperature scaling, one temperature per attribute, fitted on validation logits.

The training module logs ``test/ece`` and ``test/brier`` from these; eval draws the diagram into ``eval/``; export
fits the temperatures. matplotlib is imported when a figure is drawn, not when this module is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import binary_calibration_error

from faceattr.attributes import UNKNOWN_LABEL

log = logging.getLogger(__name__)

#: Equal-width probability bins of the ECE and the reliability diagram (Guo et al. use 15).
N_BINS = 15
#: Attribute panels of the reliability diagram beside the one of all attributes: the worst-calibrated ones.
FIGURE_ATTRIBUTES = 5
#: Fitted temperatures are kept within these bounds (a split the model separates perfectly pulls T towards 0).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _known(labels: torch.Tensor) -> torch.Tensor:
    return labels != UNKNOWN_LABEL


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    """Per-attribute ECE ``(A,)`` float64 of ``probs`` ``(N, A)`` against uint8 ``labels`` ``(N, A)`` (1, 0, or
    :data:`UNKNOWN_LABEL`, masked out); NaN for an attribute without a known label."""
    probs, labels = probs.detach().to(torch.float64), labels.detach().long()
    known = _known(labels)
    values = []
    for a in range(probs.shape[1]):
        if not bool(known[:, a].any()):
            values.append(probs.new_tensor(float("nan")))
            continue
        values.append(
            binary_calibration_error(
                probs[:, a], labels[:, a], n_bins=n_bins, norm="l1", ignore_index=UNKNOWN_LABEL, validate_args=False
            )
        )
    return torch.stack(values).to(torch.float64) if values else probs.new_zeros(0)


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute Brier score ``(A,)`` float64: the mean of ``(p - y)^2`` over the known labels (NaN without one)."""
    probs, labels = probs.detach().to(torch.float64), labels.detach()
    known = _known(labels)
    squared = (probs - (labels == 1).to(torch.float64)).square() * known
    count = known.sum(dim=0)
    return torch.where(count > 0, squared.sum(dim=0) / count.clamp(min=1), torch.full_like(squared[0], float("nan")))


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, torch.Tensor]:
    """One column's reliability diagram: per equal-width bin, its ``count``, mean probability (``confidence``) and
    fraction of positives (``positive_rate``, NaN for an empty bin), over the known labels; ``probs`` and ``labels``
    may be any shape (all entries pooled)."""
    probs, labels = probs.detach().reshape(-1).to(torch.float64), labels.detach().reshape(-1)
    keep = _known(labels)
    probs, positive = probs[keep], (labels[keep] == 1).to(torch.float64)
    index = (probs * n_bins).floor().long().clamp(0, n_bins - 1)  # [k/n, (k+1)/n); 1.0 in the last bin
    count = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, index, torch.ones_like(probs))
    total_p = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, index, probs)
    total_y = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, index, positive)
    nan = torch.full_like(count, float("nan"))
    return {
        "count": count,
        "confidence": torch.where(count > 0, total_p / count.clamp(min=1), nan),
        "positive_rate": torch.where(count > 0, total_y / count.clamp(min=1), nan),
    }


def reliability_figure(probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str], n_bins: int = N_BINS):
    """A matplotlib ``Figure``: the reliability diagram of all attributes' known labels pooled (titled with the macro
    ECE, the mean of the per-attribute ECEs), then one per attribute for the :data:`FIGURE_ATTRIBUTES` worst ECEs.

    Each panel, as in Guo et al.: each bin's fraction of positives (blue bars) against the diagonal of perfect
    calibration, the gap to the bin's mean predicted probability (red), and below, each bin's share of the images.
    """
    from matplotlib.figure import Figure

    names = [str(name) for name in names]
    if probs.shape[1] != len(names):
        raise ValueError(f"{len(names)} names for {probs.shape[1]} attribute columns")
    ece = calibration_error(probs, labels, n_bins)
    defined = [a for a in range(len(names)) if ece[a] == ece[a]]
    worst = sorted(defined, key=lambda a: (-float(ece[a]), names[a]))[:FIGURE_ATTRIBUTES]
    macro_ece = float(ece[defined].mean()) if defined else float("nan")
    panels = [(f"all {len(names)} attributes: macro ECE {macro_ece:.3f}", probs, labels)] if len(names) > 1 else []
    panels += [(f"{names[a]}: ECE {float(ece[a]):.3f}", probs[:, a], labels[:, a]) for a in worst]
    if not panels:  # no attribute has a known label: one empty panel that says so
        panels = [("no known labels", probs[:0], labels[:0])]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    figure = Figure(figsize=(3.3 * cols, 3.6 * rows), dpi=100, facecolor="white")
    grid = figure.add_gridspec(rows, cols)
    width = 1.0 / n_bins
    left = (torch.arange(n_bins, dtype=torch.float64) * width).numpy()
    for number, (title, p, y) in enumerate(panels):
        cell = grid[number // cols, number % cols].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
        axes, share_axes = figure.add_subplot(cell[0]), figure.add_subplot(cell[1])
        bins = reliability_bins(p, y, n_bins)
        filled = (bins["count"] > 0).numpy()
        rate, confidence = bins["positive_rate"].numpy(), bins["confidence"].numpy()
        axes.bar(left[filled], rate[filled], width=width, align="edge", color="#4c72b0", edgecolor="white")
        axes.bar(
            left[filled],
            (confidence - rate)[filled],
            bottom=rate[filled],
            width=width,
            align="edge",
            color="#d1242f",
            alpha=0.3,
            edgecolor="#d1242f",
            linewidth=0.5,
        )
        axes.plot([0, 1], [0, 1], "--", color="#57606a", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1), xticklabels=[])
        axes.set_title(title, fontsize=8)
        axes.set_ylabel("fraction positive", fontsize=7)
        axes.tick_params(labelsize=6)
        if number == 0:
            axes.legend(["calibrated", "fraction positive", "gap to mean probability"], loc="upper left", fontsize=6)
        share = (bins["count"] / bins["count"].sum().clamp(min=1)).numpy()
        share_axes.bar(left, share, width=width, align="edge", color="#8c959f", edgecolor="white")
        share_axes.set(xlim=(0, 1), ylim=(0, max(float(share.max(initial=0.0)), 1e-3) * 1.1))
        share_axes.set_xlabel("predicted probability", fontsize=7)
        share_axes.set_ylabel("share", fontsize=7)
        share_axes.tick_params(labelsize=6)
    figure.tight_layout()
    return figure


def _nll(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    """Per-attribute mean binary NLL of sigmoid(logit / T) over the known labels (``(A,)``)."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        logits / log_t.exp(), targets, weight=known, reduction="none"
    )
    return losses.sum(dim=0) / known.sum(dim=0).clamp(min=1)


def fit_temperatures(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> torch.Tensor:
    """One temperature per attribute ``(A,)`` float64 minimizing the NLL of ``sigmoid(logit / T)`` on ``logits``
    ``(N, A)`` and uint8 ``labels`` ``(N, A)`` (unknown labels masked out).

    LBFGS (strong Wolfe line search) on ``log T``, all attributes at once (their NLLs are independent, so the sum is
    minimized by each attribute's own optimum). An attribute whose known labels are all one class (or absent) keeps
    1.0: no temperature is identifiable from it. Temperatures are clipped to :data:`TEMPERATURE_BOUNDS`.
    """
    logits = logits.detach().to(torch.float64).cpu()
    labels = labels.detach().cpu()
    known = _known(labels)
    targets = (labels == 1).to(torch.float64)
    positives, count = (targets * known).sum(dim=0), known.sum(dim=0)
    fittable = (positives > 0) & (positives < count)
    known = known.to(torch.float64)
    log_t = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    if bool(fittable.any()):
        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
        low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = _nll(logits, targets, known, log_t.clamp(low - 1, high + 1))[fittable].sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
    temperatures = log_t.detach().exp().clamp(*TEMPERATURE_BOUNDS)
    temperatures = torch.where(fittable, temperatures, torch.ones_like(temperatures))
    log.debug("fitted temperatures %s", [round(float(t), 4) for t in temperatures])
    return temperatures
