"""KNN utility and its closed-form Shapley values: against the definition and enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from games import run_sampler

from amortval.data.problem import Problem
from amortval.models.knn_learner import KNNLearner
from amortval.models.utility import EMPTY, ONE_CLASS, OK, make_utility
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.knn_shapley import knn_shapley


def knn_problem(n: int, seed: int, *, classes: int = 2, duplicates: bool = True, n_valid: int = 7) -> Problem:
    """Few distinct feature values so exact distance ties occur, duplicated rows too."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n + n_valid, 2)).astype(np.float32)
    if duplicates:
        x[1] = x[0]
        x[n - 1] = x[2]
    y = rng.integers(0, classes, size=n + n_valid)
    y[:classes] = np.arange(classes)
    return Problem(x[:n], y[:n], x[n:], y[n:], classes)


def brute_force_value(problem: Problem, mask: np.ndarray, k: int) -> float:
    """The definition, one subset and one validation point at a time."""
    members = np.flatnonzero(mask)
    total = 0.0
    for xv, yv in zip(problem.x_valid.astype(np.float64), problem.y_valid):
        dist = [float(np.sum((problem.x_train[i].astype(np.float64) - xv) ** 2)) for i in members]
        nearest = sorted(zip(dist, members))[: min(k, len(members))]  # ties: lower index first
        total += sum(problem.y_train[i] == yv for _, i in nearest) / k
    return total / len(problem.y_valid)


@pytest.mark.parametrize("k", [1, 3, 5, 12])
def test_fit_score_matches_the_definition(k):
    problem = knn_problem(11, seed=k)
    rng = np.random.default_rng(k)
    masks = rng.random((60, problem.n)) < rng.random((60, 1))
    masks[0] = False  # the empty subset scores 0
    masks[1] = np.eye(problem.n, dtype=bool)[4]
    learner = KNNLearner(problem, k)
    got = learner.fit_score(masks)
    want = [brute_force_value(problem, m, k) for m in masks]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] == 0.0


def test_fit_score_scans_past_the_first_block():
    # Large n, tiny subsets: neighbours must be found far down each validation order.
    problem = knn_problem(300, seed=1, duplicates=False)
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 300), dtype=bool)
    for row in masks:
        row[rng.choice(300, size=rng.integers(1, 8), replace=False)] = True
    learner = KNNLearner(problem, 5)
    want = [brute_force_value(problem, m, 5) for m in masks]
    np.testing.assert_allclose(learner.fit_score(masks), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_prefix_scores_equal_the_prefix_masks(k):
    problem = knn_problem(40, seed=3, classes=3)
    learner = KNNLearner(problem, k)
    perm = np.random.default_rng(k).permutation(problem.n)
    position = np.empty(problem.n, dtype=int)
    position[perm] = np.arange(problem.n)
    prefixes = position[None, :] < np.arange(problem.n + 1)[:, None]
    np.testing.assert_allclose(learner.prefix_scores(perm), learner.fit_score(prefixes), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("k", "classes", "seed"), [(1, 2, 0), (3, 2, 1), (5, 3, 2), (15, 2, 3)])
def test_closed_form_equals_enumeration(k, classes, seed):
    problem = knn_problem(10, seed=seed, classes=classes)
    utility = make_utility("knn", problem, seed=0, knn_k=k)
    exact = exact_semivalues(utility, "shapley")
    np.testing.assert_allclose(knn_shapley(problem, k), exact, rtol=0, atol=1e-12)
    # Efficiency: the values share out v(D) - v(empty) = v(D).
    assert knn_shapley(problem, k).sum() == pytest.approx(utility.full_value(), abs=1e-12)


def test_utility_scores_degenerate_subsets_by_the_knn_rule_and_counts_them():
    problem = knn_problem(10, seed=4)
    utility = make_utility("knn", problem, seed=0, knn_k=3)
    one = np.flatnonzero(problem.y_train == problem.y_train[0])[:2]
    masks = np.zeros((3, problem.n), dtype=bool)
    masks[1, one] = True
    masks[2] = True
    values, status = utility.evaluate(masks)
    assert status.tolist() == [EMPTY, ONE_CLASS, OK]
    assert values[0] == 0.0  # Jia et al.: no neighbour, no vote (not the majority fallback)
    assert values[1] == pytest.approx(brute_force_value(problem, masks[1], 3), abs=1e-12)
    chain_values, chain_status = utility.evaluate_prefixes(np.arange(problem.n))
    assert chain_status[0] == EMPTY and chain_status[-1] == OK
    assert chain_values[-1] == pytest.approx(values[2], abs=1e-12)


def test_permutation_monte_carlo_converges_to_the_closed_form():
    problem = knn_problem(30, seed=5, duplicates=False, n_valid=20)
    utility = make_utility("knn", problem, seed=0, knn_k=3)
    rows = run_sampler(utility, 3000, seed=1, batch_fits=2000, learner="knn")
    point, value = rows.point, rows.weight * rows.delta
    assert np.bincount(point).tolist() == [3000] * problem.n
    mean = np.bincount(point, weights=value) / 3000
    stderr = np.sqrt((np.bincount(point, weights=value**2) / 3000 - mean**2) / 3000)
    truth = knn_shapley(problem, 3)
    assert np.all(np.abs(mean - truth) <= 4.5 * stderr + 1e-12)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_shapley(knn_problem(5, seed=0), 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNLearner(knn_problem(5, seed=0), 0)
