"""Calibration figures (faceattr/reliability.py): ECE and Brier score against scikit-learn on the known labels,
temperature scaling on a miscalibrated synthetic model, and the reliability diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceattr.attributes import UNKNOWN_LABEL
from faceattr.reliability import (
    N_BINS,
    brier_score,
    calibration_error,
    fit_temperatures,
    reliability_bins,
    reliability_figure,
)


def sklearn_ece(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE from scikit-learn's uniform calibration curve, each non-empty bin weighted by its share of the images."""
    from sklearn.calibration import calibration_curve

    rate, confidence = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    counts, _ = np.histogram(p, bins=np.linspace(0, 1, n_bins + 1))
    weights = counts[counts > 0] / len(p)
    return float(np.sum(weights * np.abs(rate - confidence)))


def miscalibrated(n: int = 20000, temperature: float = 3.0, seed: int = 0):
    """Labels drawn from sigmoid(z), and the logits of a model ``temperature`` times too confident: z * T."""
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    labels = (torch.rand(n, 2, generator=g, dtype=torch.float64) < torch.sigmoid(z)).to(torch.uint8)
    return z * temperature, labels, z


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    known = labels != UNKNOWN_LABEL
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, (labels == 1).double(), reduction="none")
    return (losses * known).sum(0) / known.sum(0)


@pytest.fixture()
def scored():
    """Probabilities (N, 3) with a quarter of the labels unknown; the third attribute's known labels all 0."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 2, (2000, 3), generator=g, dtype=torch.uint8)
    probs = (0.3 * labels + 0.7 * torch.rand(2000, 3, generator=g)).double()
    labels[torch.rand(2000, 3, generator=g) < 0.25] = UNKNOWN_LABEL
    labels[:, 2][labels[:, 2] == 1] = 0
    return probs, labels


def test_ece_and_brier_match_scikit_learn_on_the_known_labels(scored):
    from sklearn.metrics import brier_score_loss

    probs, labels = scored
    ece, brier = calibration_error(probs, labels), brier_score(probs, labels)
    assert ece.dtype == brier.dtype == torch.float64 and ece.shape == brier.shape == (3,)
    for a in range(3):
        known = labels[:, a] != UNKNOWN_LABEL
        y, p = labels[known, a].numpy(), probs[known, a].numpy()
        assert float(ece[a]) == pytest.approx(sklearn_ece(y, p), abs=1e-9), a
        assert float(brier[a]) == pytest.approx(brier_score_loss(y, p, pos_label=1), abs=1e-12), a
    # Counting the unknown labels as negatives would give other figures.
    as_negatives = labels.clone()
    as_negatives[as_negatives == UNKNOWN_LABEL] = 0
    assert not torch.allclose(calibration_error(probs, as_negatives)[:2], ece[:2])


def test_torchmetrics_binary_calibration_error_is_the_definition(scored):
    from torchmetrics.classification import BinaryCalibrationError

    probs, labels = scored
    known = labels[:, 0] != UNKNOWN_LABEL
    metric = BinaryCalibrationError(n_bins=15, norm="l1")
    expected = metric(probs[known, 0].float(), labels[known, 0].long())
    assert float(calibration_error(probs, labels)[0]) == pytest.approx(float(expected), abs=1e-6)


def test_an_attribute_without_a_known_label_has_no_figures():
    probs = torch.tensor([[0.2, 0.9], [0.7, 0.4]])
    labels = torch.tensor([[1, UNKNOWN_LABEL], [0, UNKNOWN_LABEL]], dtype=torch.uint8)
    ece, brier = calibration_error(probs, labels), brier_score(probs, labels)
    assert math.isnan(float(ece[1])) and math.isnan(float(brier[1]))
    assert float(brier[0]) == pytest.approx((0.8**2 + 0.7**2) / 2)
    # Two images in bins 3 and 10 of 15: |0.2 - 1| and |0.7 - 0|, each half of the images.
    assert float(ece[0]) == pytest.approx((0.8 + 0.7) / 2)


def test_temperatures_recover_a_known_overconfidence_and_lower_nll_and_ece():
    logits, labels, true_logits = miscalibrated(temperature=3.0)
    labels[torch.rand(labels.shape, generator=torch.Generator().manual_seed(9)) < 0.2] = UNKNOWN_LABEL
    temperatures = fit_temperatures(logits, labels)
    assert temperatures.dtype == torch.float64 and temperatures.shape == (2,)
    assert temperatures.tolist() == pytest.approx([3.0, 3.0], rel=0.05)
    scaled = logits / temperatures
    assert (nll(scaled, labels) < nll(logits, labels) - 0.05).all()
    before = calibration_error(torch.sigmoid(logits), labels)
    after = calibration_error(torch.sigmoid(scaled), labels)
    assert (after < before / 3).all() and (after < 0.02).all()
    # The fitted temperature is the NLL's minimum: 5% either side is worse.
    for factor in (0.95, 1.05):
        assert (nll(logits / (temperatures * factor), labels) > nll(scaled, labels)).all()
    # An underconfident model gets a temperature below 1; a calibrated one keeps about 1.
    assert fit_temperatures(true_logits / 2, labels).tolist() == pytest.approx([0.5, 0.5], rel=0.05)
    assert fit_temperatures(true_logits, labels).tolist() == pytest.approx([1.0, 1.0], abs=0.05)


def test_an_attribute_with_one_known_class_keeps_temperature_one():
    logits, labels, _ = miscalibrated(n=500, temperature=2.0)
    labels[:, 1] = torch.where(torch.arange(500) % 3 == 0, UNKNOWN_LABEL, 0).to(torch.uint8)
    temperatures = fit_temperatures(logits, labels)
    assert float(temperatures[1]) == 1.0 and float(temperatures[0]) == pytest.approx(2.0, rel=0.2)
    assert fit_temperatures(logits[:0], labels[:0]).tolist() == [1.0, 1.0]  # no images at all


def test_a_perfectly_separated_attribute_gets_a_bounded_temperature():
    logits = torch.tensor([[-3.0], [-1.0], [1.0], [4.0]])
    labels = torch.tensor([[0], [0], [1], [1]], dtype=torch.uint8)
    (temperature,) = fit_temperatures(logits, labels).tolist()
    assert 0 < temperature < 1 and math.isfinite(temperature)


def test_reliability_bins_and_figure(scored):
    from matplotlib.figure import Figure

    probs, labels = scored
    bins = reliability_bins(probs[:, 0], labels[:, 0])
    known = labels[:, 0] != UNKNOWN_LABEL
    assert int(bins["count"].sum()) == int(known.sum())
    # The ECE is the count-weighted gap of these bins.
    filled = bins["count"] > 0
    gap = (bins["count"][filled] * (bins["confidence"][filled] - bins["positive_rate"][filled]).abs()).sum()
    assert float(gap / bins["count"].sum()) == pytest.approx(float(calibration_error(probs, labels)[0]), abs=1e-9)
    figure = reliability_figure(probs, labels, ["Smiling", "Male", "Bald"])
    assert isinstance(figure, Figure)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    macro = float(calibration_error(probs, labels).mean())
    assert titles[0] == f"all 3 attributes: macro ECE {macro:.3f}" and len(titles) == 4
    assert {title.split(":")[0] for title in titles[1:]} == {"Smiling", "Male", "Bald"}
    single = reliability_figure(probs[:, :1], labels[:, :1], ["Smiling"])
    assert [axes.get_title() for axes in single.axes if axes.get_title()] == [
        f"Smiling: ECE {float(calibration_error(probs, labels)[0]):.3f}"
    ]
    with pytest.raises(ValueError, match="2 names for 3 attribute columns"):
        reliability_figure(probs, labels, ["Smiling", "Male"])
