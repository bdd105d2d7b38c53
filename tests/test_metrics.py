"""Accuracy and ranking metrics against hand-computed values and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from amortval.tasks.metrics import (
    auprc,
    mislabeled_auprc,
    mse,
    nmse,
    sign_agreement,
    spearman,
    truth_metrics,
)


def test_auprc_of_a_small_ranking_by_hand():
    # Ranked: + - + -  -> precision 1/1 at the first hit, 2/3 at the second.
    assert auprc(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3)
    # Every positive first: 1; every positive last (2 of 5): (1/4 + 2/5) / 2.
    assert auprc(np.array([5.0, 4, 3, 2, 1]), np.array([1, 1, 0, 0, 0])) == 1.0
    assert auprc(np.array([5.0, 4, 3, 2, 1]), np.array([0, 0, 0, 1, 1])) == pytest.approx((1 / 4 + 2 / 5) / 2)


def test_auprc_ties_are_one_threshold_whatever_the_order():
    # 0.5 is shared by a positive and a negative: flagged together (precision 1/3 at
    # recall 1/2), then the last positive at precision 2/4.
    scores, positives = np.array([0.9, 0.5, 0.5, 0.1]), np.array([0, 1, 0, 1])
    assert auprc(scores, positives) == pytest.approx(1 / 2 * 1 / 3 + 1 / 2 * 2 / 4)
    swapped = [0, 2, 1, 3]
    assert auprc(scores[swapped], positives[swapped]) == auprc(scores, positives)
    # All tied: one threshold flagging everything -> precision = share of positives.
    assert auprc(np.zeros(5), np.array([1, 0, 0, 1, 0])) == pytest.approx(2 / 5)


def test_auprc_matches_scikit_learn_on_random_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.integers(0, 6, 40).astype(float)  # many ties
        positives = rng.random(40) < 0.3
        if positives.any():
            assert auprc(scores, positives) == pytest.approx(metrics.average_precision_score(positives, scores))


def test_auprc_without_positive_is_nan_and_shapes_must_match():
    assert math.isnan(auprc(np.arange(3.0), np.zeros(3, dtype=bool)))
    with pytest.raises(ValueError, match="shape"):
        auprc(np.arange(3.0), np.zeros(4, dtype=bool))


def test_mislabeled_auprc_ranks_low_values_first():
    values = np.array([-0.3, 0.2, -0.1, 0.4])
    flipped = np.array([True, False, True, False])
    assert mislabeled_auprc(values, flipped) == 1.0
    assert mislabeled_auprc(-values, flipped) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_mse_and_nmse_closed_forms():
    truth = np.array([1.0, 2.0, 3.0, 4.0])  # population variance 1.25
    assert mse(truth + 0.5, truth) == pytest.approx(0.25)
    assert nmse(truth + 0.5, truth) == pytest.approx(0.25 / 1.25)
    assert nmse(np.full(4, truth.mean()), truth) == pytest.approx(1.0)  # mean predictor
    assert math.isnan(nmse(truth, np.ones(4)))
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(4,\)"):
        mse(np.ones(3), truth)


def test_spearman_matches_scipy_and_is_nan_when_undefined():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    b = a**3 + rng.normal(scale=0.5, size=50)
    b[:10] = b[10]  # ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # monotone -> 1
    assert math.isnan(spearman(a, np.ones(50)))
    assert math.isnan(spearman(np.ones(1), np.ones(1)))


def test_sign_agreement_counts_zero_as_its_own_sign():
    est = np.array([0.1, -0.2, 0.0, 0.3, 0.0])
    truth = np.array([0.5, 0.1, 0.0, -0.1, 0.2])
    # agree: point 0 (+,+), point 2 (0,0); disagree: 1, 3, and 4 (0 vs +)
    assert sign_agreement(est, truth) == pytest.approx(2 / 5)


def test_truth_metrics_has_every_figure():
    truth = np.array([-0.05, 0.1, 0.4, 0.3])
    est = truth + 0.1
    figures = truth_metrics(est, truth)
    assert set(figures) == {"mse", "nmse", "pearson", "spearman", "sign_agreement"}
    assert figures["mse"] == pytest.approx(0.01)
    assert figures["nmse"] == pytest.approx(0.01 / truth.var())
    assert figures["pearson"] == pytest.approx(1.0)
    assert figures["spearman"] == pytest.approx(1.0)
    assert figures["sign_agreement"] == pytest.approx(3 / 4)  # -0.05 + 0.1 changes sign
