"""The utility v(S): degenerate-subset policy, batched learners, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amortval.data.problem import Problem
from amortval.errors import ConfigError
from amortval.models.torch_learners import BatchedLogisticRegression, BatchedMLP
from amortval.models.utility import STATUS_NAMES, Utility, make_utility
from amortval.models.xgboost_learner import XGBoostLearner

# The contract's codes (stored as text in DuckDB through STATUS_NAMES).
OK, EMPTY, ONE_CLASS, MISSING = 0, 1, 2, 3
assert STATUS_NAMES == ("ok", "empty", "one_class", "missing_classes")


class SpyLearner:
    """Returns 0.123 for every fit and records which masks reached the learner."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def fit_score(self, masks: np.ndarray) -> np.ndarray:
        self.seen.append(masks.copy())
        return np.full(masks.shape[0], 0.123)


def tiny_problem() -> Problem:
    # Training classes: 0 0 1 1 1 2 -> the full-set majority is class 1.
    # Validation: 2x class 0, 2x class 1, 4x class 2 -> constant accuracies 1/4, 1/4, 1/2.
    rng = np.random.default_rng(0)
    return Problem(
        x_train=rng.normal(size=(6, 2)).astype(np.float32),
        y_train=np.array([0, 0, 1, 1, 1, 2]),
        x_valid=rng.normal(size=(8, 2)).astype(np.float32),
        y_valid=np.array([0, 1, 1, 2, 2, 2, 0, 2]),
        n_classes=3,
    )


def noisy_problem(n: int, d: int, k: int, n_valid: int = 200, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, k))
    x = rng.normal(size=(n + n_valid, d)).astype(np.float32)
    y = np.argmax(x @ w + rng.gumbel(size=(n + n_valid, k)), axis=1)
    return Problem(x[:n], y[:n], x[n:], y[n:], k)


def blobs_problem(k: int, per_class: int = 20, d: int = 2, seed: int = 0) -> Problem:
    """Well separated Gaussian blobs: linearly separable, balanced train and validation."""
    rng = np.random.default_rng(seed)
    centres = 6.0 * np.eye(k, d)

    def draw():
        y = np.repeat(np.arange(k), per_class)
        return (centres[y] + rng.normal(scale=0.5, size=(len(y), d))).astype(np.float32), y

    (x, y), (xv, yv) = draw(), draw()
    return Problem(x, y, xv, yv, k)


def random_masks(n: int, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, n + 1, rows)
    masks = rng.random((rows, n)).argsort(axis=1) < sizes[:, None]
    masks[:, :2] = True  # keeps at least two points; classes are checked by the utility
    return masks


def test_degenerate_policy_exact_values_and_statuses():
    spy = SpyLearner()
    utility = Utility(spy, tiny_problem())
    masks = np.array(
        [
            [0, 0, 0, 0, 0, 0],  # empty -> always predict class 1 (full-set majority)
            [1, 1, 0, 0, 0, 0],  # only class 0
            [0, 0, 0, 0, 0, 1],  # only class 2
            [0, 0, 1, 1, 0, 0],  # only class 1
            [1, 0, 1, 0, 0, 0],  # classes 0 and 1 of 3 -> fit, missing_classes
            [1, 0, 1, 0, 0, 1],  # every class -> fit, ok
        ],
        dtype=bool,
    )
    values, status = utility.evaluate(masks)
    assert values.dtype == np.float64 and status.dtype == np.int8
    np.testing.assert_array_equal(values, [0.25, 0.25, 0.5, 0.25, 0.123, 0.123])
    np.testing.assert_array_equal(status, [EMPTY, ONE_CLASS, ONE_CLASS, ONE_CLASS, MISSING, OK])
    # Only the two non-degenerate rows were fitted, in one call.
    assert len(spy.seen) == 1
    np.testing.assert_array_equal(spy.seen[0], masks[4:])


def test_empty_subset_majority_tie_goes_to_smallest_class():
    problem = Problem(
        x_train=np.zeros((4, 1), np.float32),
        y_train=np.array([1, 0, 1, 0]),
        x_valid=np.zeros((4, 1), np.float32),
        y_valid=np.array([1, 1, 1, 0]),
        n_classes=2,
    )
    values, status = Utility(SpyLearner(), problem).evaluate(np.zeros((1, 4), bool))
    assert values[0] == 0.25 and status[0] == EMPTY


def test_empty_batch_returns_empty_arrays():
    for utility in (Utility(SpyLearner(), tiny_problem()), make_utility("logreg", tiny_problem(), 0)):
        values, status = utility.evaluate(np.zeros((0, 6), dtype=bool))
        assert values.shape == (0,) and values.dtype == np.float64
        assert status.shape == (0,) and status.dtype == np.int8


def test_rejects_masks_of_the_wrong_width():
    with pytest.raises(ValueError, match="shape"):
        Utility(SpyLearner(), tiny_problem()).evaluate(np.ones((2, 5), dtype=bool))


def test_unknown_learner_is_a_config_error():
    with pytest.raises(ConfigError, match="knn"):
        make_utility("svm", tiny_problem(), 0)



def test_logreg_separates_a_separable_set():
    utility = make_utility("logreg", blobs_problem(2), seed=0)
    assert utility.full_value() == 1.0
    utility3 = make_utility("logreg", blobs_problem(3), seed=0)
    assert utility3.full_value() == 1.0


@pytest.mark.parametrize("k", [2, 3])
def test_logreg_chunked_equals_one_at_a_time(k):
    problem = noisy_problem(120, 4, k)
    masks = random_masks(problem.n, 23)
    batched = BatchedLogisticRegression(problem).fit_score(masks)
    chunked = BatchedLogisticRegression(problem, chunk_size=5).fit_score(masks)
    alone = np.array([BatchedLogisticRegression(problem).fit_score(m[None])[0] for m in masks])
    np.testing.assert_array_equal(batched, chunked)
    np.testing.assert_array_equal(batched, alone)


def test_logreg_chunks_on_a_large_table_are_never_smaller_than_their_padding():
    """On 40,000 rows the memory bound alone allows 6 models a chunk, each chunk padded to
    32: a chunk holds at least the 32 it is padded to, with v(S) as alone or chunked."""
    problem = noisy_problem(40_000, 4, 2)
    learner = BatchedLogisticRegression(problem, steps=5)
    assert learner.chunk_size == 32
    masks = random_masks(problem.n, 3) | (np.random.default_rng(1).random((3, problem.n)) < 0.9)
    together = learner.fit_score(masks)
    alone = np.array([BatchedLogisticRegression(problem, steps=5).fit_score(m[None])[0] for m in masks])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, BatchedLogisticRegression(problem, steps=5, chunk_size=1).fit_score(masks))


def lbfgs_accuracy(problem: Problem, mask: np.ndarray) -> float:
    """Exact optimum of the same objective (float64 L-BFGS): the reference learner."""
    x = torch.from_numpy(problem.x_train[mask]).double()
    y = torch.from_numpy(problem.y_train[mask])
    w = torch.zeros(problem.n_features, problem.n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(problem.n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 / len(y) * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    logits = torch.from_numpy(problem.x_valid).double() @ w.detach() + b.detach()
    return float((logits.argmax(dim=1).numpy() == problem.y_valid).mean())


@pytest.mark.parametrize("k", [2, 3])
def test_logreg_matches_exact_optimum_accuracy(k):
    problem = noisy_problem(300, 5, k, n_valid=200, seed=k)
    rng = np.random.default_rng(k)
    sizes = np.concatenate([rng.integers(4, 30, 6), rng.integers(30, 301, 10)])
    masks = rng.random((len(sizes), problem.n)).argsort(axis=1) < sizes[:, None]
    masks = masks[[len(np.unique(problem.y_train[m])) == k for m in masks]]
    fast = BatchedLogisticRegression(problem).fit_score(masks)
    exact = np.array([lbfgs_accuracy(problem, m) for m in masks])
    assert np.abs(fast - exact).max() <= 0.02
    assert np.abs(fast - exact).mean() <= 0.004  # 30 Adam steps give ~0.01


def test_mlp_is_a_deterministic_function_of_the_subset():
    problem = noisy_problem(150, 4, 3)
    masks = random_masks(problem.n, 10)
    mlp = BatchedMLP(problem, seed=0, hidden=16, chunk_size=4)
    first = mlp.fit_score(masks)
    np.testing.assert_array_equal(mlp.fit_score(masks), first)
    perm = np.random.default_rng(1).permutation(len(masks))
    np.testing.assert_array_equal(mlp.fit_score(masks[perm]), first[perm])
    np.testing.assert_array_equal(BatchedMLP(problem, seed=0, hidden=16).fit_score(masks[3:4]), first[3:4])
    np.testing.assert_array_equal(BatchedMLP(problem, seed=0, hidden=16).fit_score(masks), first)
    assert first.min() > 0.4  # learns something (constant predictors score ~1/3)
    other_seed = BatchedMLP(problem, seed=1, hidden=16).fit_score(masks)
    assert not np.array_equal(other_seed, first)


def test_mlp_utility_separates_blobs():
    assert make_utility("mlp", blobs_problem(3), seed=0).full_value() == 1.0


def test_xgboost_fits_a_subset_missing_a_class():
    problem = blobs_problem(3)
    learner = XGBoostLearner(problem, seed=0)
    utility = Utility(learner, problem)
    masks = np.zeros((2, problem.n), dtype=bool)
    masks[0, problem.y_train < 2] = True  # classes 0 and 1 only
    masks[1] = True
    values, status = utility.evaluate(masks)
    np.testing.assert_array_equal(status, [MISSING, OK])
    # Blobs 0 and 1 are (nearly all) classified, blob 2 never can be: at most 2/3.
    assert 0.6 <= values[0] <= 2 / 3
    assert values[1] == 1.0
    np.testing.assert_array_equal(learner.fit_score(masks), values)  # deterministic


def test_xgboost_binary_subset():
    problem = blobs_problem(2)
    utility = make_utility("xgboost", problem, seed=0)
    masks = random_masks(problem.n, 3, seed=2)
    masks[:, [0, problem.n - 1]] = True  # both classes present
    values, status = utility.evaluate(masks)
    assert (status == OK).all() and (values >= 0.75).all()  # subsets of 8-34 points


@pytest.mark.parametrize("cls", [BatchedLogisticRegression, BatchedMLP])
def test_small_coalitions_fit_on_gathered_rows_as_on_the_whole_table(cls):
    """|S| < n/4 is fitted on its own rows: same accuracy as weighting all n rows (up to a
    borderline validation point flipped by float rounding), and the same alone or in a chunk."""
    problem = noisy_problem(1200, 5, 3, n_valid=200, seed=4)
    rng = np.random.default_rng(4)
    sizes = rng.integers(6, 300, 24)
    masks = rng.random((len(sizes), problem.n)).argsort(axis=1) < sizes[:, None]
    make = (lambda **kw: cls(problem, **kw)) if cls is BatchedLogisticRegression else (lambda **kw: cls(problem, 0, hidden=8, **kw))
    gathered = make().fit_score(masks)
    shared = make()
    shared.gather = False
    assert np.abs(gathered - shared.fit_score(masks)).max() <= 0.01
    alone = np.array([make().fit_score(m[None])[0] for m in masks[:6]])
    np.testing.assert_array_equal(alone, gathered[:6])
    np.testing.assert_array_equal(make(chunk_size=5).fit_score(masks), gathered)
