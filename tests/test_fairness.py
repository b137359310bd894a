"""faceattr/fairness.py against independent references: scipy's Wilson interval, scikit-learn's AUROC and accuracy,
fairlearn's demographic-parity and equalized-odds differences."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, roc_auc_score

from faceattr.fairness import group_report, weighted_auroc, wilson_interval

NAMES = ("Blond_Hair", "Smiling", "Male")
GROUPS = ("Male", "Young")


def _data(n: int = 600, seed: int = 0):
    """Probabilities, labels (with unknowns) and group labels (with unknowns) where Blond_Hair depends on Male."""
    rng = np.random.default_rng(seed)
    groups = (rng.random((n, 2)) < [0.4, 0.7]).astype(np.uint8)
    blond = rng.random(n) < np.where(groups[:, 0] == 1, 0.05, 0.3)
    smiling = rng.random(n) < 0.5
    labels = np.stack([blond, smiling, groups[:, 0] == 1], axis=1).astype(np.uint8)
    probs = np.clip(0.35 * labels + rng.random((n, 3)) * 0.65 - 0.1 * groups[:, :1], 0, 1).astype(np.float32)
    labels[rng.random((n, 3)) < 0.05] = 255
    groups_seen = groups.copy()
    groups_seen[rng.random((n, 2)) < 0.03] = 255
    return probs, labels, groups, groups_seen


def test_wilson_interval_is_scipys():
    for k, n in ((0, 10), (3, 10), (10, 10), (57, 400)):
        expected = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert wilson_interval(0, 0) == (None, None)


def test_weighted_auroc_is_sklearns_with_ties_and_weights():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(300), 1)  # many ties
    targets = rng.random(300) < 0.4
    assert weighted_auroc(scores, targets)[0] == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    counts = rng.integers(0, 3, (2, 300))
    order = np.argsort(scores, kind="stable")  # weights are given in ascending score order
    for row in range(2):
        repeated = np.repeat(order, counts[row])
        expected = roc_auc_score(targets[repeated], scores[repeated])
        assert weighted_auroc(scores, targets, counts[row : row + 1])[0] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(weighted_auroc(scores, np.zeros(300, bool))[0])


def test_rows_match_numpy_and_sklearn_per_cell():
    probs, labels, _, groups = _data()
    report = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), bootstrap=50)
    rows = {(r["attribute"], r["group"]): r for r in report.rows}
    # Male is never reported against itself; the others by every value and intersection, and "all".
    assert {g for a, g in rows if a == "Male"} == {"all", "Young=0", "Young=1"}
    assert len([1 for a, _ in rows if a == "Smiling"]) == 1 + 4 + 4
    for (attribute, group), row in rows.items():
        a = NAMES.index(attribute)
        inside = labels[:, a] != 255
        for term in group.split(",") if group != "all" else ():
            name, value = term.split("=")
            g = GROUPS.index(name)
            inside &= groups[:, g] == int(value)  # 255 never equals 0 or 1: unknown groups drop out
        y, p = labels[inside, a], probs[inside, a] >= np.float32(0.5)
        assert row["n"] == inside.sum() > 0
        assert row["acc"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert row["positive_rate"] == pytest.approx(y.mean(), abs=1e-12)
        assert row["predicted_positive_rate"] == pytest.approx(p.mean(), abs=1e-12)
        assert row["fpr"] == pytest.approx(p[y == 0].mean(), abs=1e-12)
        assert row["fnr"] == pytest.approx(1 - p[y == 1].mean(), abs=1e-12)
        assert row["auroc"] == pytest.approx(roc_auc_score(y, probs[inside, a]), abs=1e-12)
        assert row["acc_low"] <= row["acc"] <= row["acc_high"] and row["auroc_low"] <= row["auroc_high"]


def test_worst_group_is_the_weakest_label_by_group_cell():
    probs, labels, _, groups = _data()
    report = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), bootstrap=0)
    worst = report.worst["Blond_Hair"]
    known = labels[:, 0] != 255
    accuracies = {}
    for g, name in enumerate(GROUPS):
        for y in (0, 1):
            for v in (0, 1):
                inside = known & (labels[:, 0] == y) & (groups[:, g] == v)
                accuracies[f"Blond_Hair={y},{name}={v}"] = accuracy_score(labels[inside, 0], probs[inside, 0] >= 0.5)
    assert worst["groups"] == pytest.approx(accuracies)
    assert worst["worst_group"] == min(accuracies, key=accuracies.get)
    assert worst["worst_group_acc"] == pytest.approx(min(accuracies.values()))
    assert worst["avg_acc"] == pytest.approx(accuracy_score(labels[known, 0], probs[known, 0] >= 0.5))
    assert set(report.worst["Male"]["groups"]) == {f"Male={y},Young={v}" for y in (0, 1) for v in (0, 1)}


def test_gaps_are_fairlearns():
    probs, labels, _, groups = _data()
    report = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), bootstrap=0)
    for a, attribute in enumerate(NAMES):
        for feature, columns in (("Male", [0]), ("Young", [1]), ("Male,Young", [0, 1])):
            if attribute in feature.split(","):
                assert feature not in report.gaps[attribute]
                continue
            inside = (labels[:, a] != 255) & (groups[:, columns] != 255).all(axis=1)
            y, p = labels[inside, a], (probs[inside, a] >= 0.5).astype(int)
            sensitive = [",".join(map(str, row)) for row in groups[inside][:, columns]]
            gap = report.gaps[attribute][feature]
            expected = demographic_parity_difference(y, p, sensitive_features=sensitive)
            assert gap["demographic_parity_difference"] == pytest.approx(expected, abs=1e-12)
            expected = equalized_odds_difference(y, p, sensitive_features=sensitive)
            assert gap["equalized_odds_difference"] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_is_seeded_and_outputs_round_trip():
    probs, labels, _, groups = _data(n=300)
    first = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), seed=4)
    again = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), seed=4)
    other = group_report(probs, labels, NAMES, groups, GROUPS, np.full(3, 0.5), seed=5)
    assert [r["auroc_low"] for r in first.rows] == [r["auroc_low"] for r in again.rows]
    assert [r["auroc_low"] for r in first.rows] != [r["auroc_low"] for r in other.rows]
    table = list(csv.DictReader(io.StringIO(first.to_csv())))
    assert len(table) == len(first.rows) and float(table[0]["acc"]) == pytest.approx(first.rows[0]["acc"], abs=1e-6)
    summary = json.loads(json.dumps(first.to_json()))  # JSON-ready
    assert summary["groups"] == list(GROUPS) and summary["worst"]["Smiling"] == first.worst["Smiling"]
    worst = first.worst_rows(5)
    assert len(worst) == 5 and all(r["group"] != "all" for r in worst)
    assert [r["acc"] for r in worst] == sorted(r["acc"] for r in worst)
    assert min(r["acc"] for r in first.rows if r["group"] != "all") == worst[0]["acc"]
    assert first.format_worst(5).splitlines()[1].split()[:2] == [worst[0]["attribute"], worst[0]["group"]]
