"""Semivalue weights, exact enumeration and the samplers, on games with known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from amortval.tasks.config import ValuationConfig
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.samplers import batch_rng, make_sampler
from amortval.tasks.semivalues import size_distribution
from games import additive_game, random_game

METHODS = ["shapley", "beta", "banzhaf"]
COMBOS = [("shapley", "permutation"), ("shapley", "independent"), ("beta", "permutation"),
          ("beta", "independent"), ("banzhaf", "independent"), ("banzhaf", "msr")]


def estimate(game, method, sampler, samples, seed=0, batch_fits=64):
    """Run every batch of a sampler in-process and average weight*delta per point."""
    config = ValuationConfig(method=method, sampler=sampler, samples=samples, seed=seed,
                             batch_fits=batch_fits, alpha=4.0, beta=1.0)
    plan = make_sampler(config, game.n)
    parts = [plan.run(game, b, batch_rng(seed, b)) for b in range(plan.n_batches)]
    point = np.concatenate([p.point for p in parts])
    draw = np.concatenate([p.draw for p in parts])
    value = np.concatenate([p.weight * p.delta for p in parts])
    return point, draw, value


def per_point(point, value, n):
    mean = np.array([value[point == i].mean() for i in range(n)])
    se = np.array([value[point == i].std(ddof=1) / np.sqrt((point == i).sum()) for i in range(n)])
    return mean, se


def test_size_distributions():
    n_others = 9
    k = np.arange(n_others + 1)
    for method in METHODS:
        assert size_distribution(method, n_others).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(size_distribution("beta", n_others, alpha=1, beta=1),
                               size_distribution("shapley", n_others))
    np.testing.assert_allclose(size_distribution("banzhaf", n_others), stats.binom.pmf(k, n_others, 0.5))
    small = size_distribution("beta", n_others, alpha=16, beta=1)
    assert (small @ k) < n_others / 10  # Beta(16, 1) favours small coalitions


@pytest.mark.parametrize("method", METHODS)
def test_additive_game_values_are_the_weights(method):
    weights = np.array([0.3, -0.1, 0.0, 0.25, 0.05, -0.2])
    np.testing.assert_allclose(exact_semivalues(additive_game(weights), method, alpha=4), weights, atol=1e-12)


def test_shapley_efficiency_and_banzhaf_is_not_efficient():
    game = random_game(8, seed=1)
    phi = exact_semivalues(game, "shapley")
    assert phi.sum() == pytest.approx(game.table[-1] - game.table[0], abs=1e-12)
    assert exact_semivalues(game, "banzhaf").sum() != pytest.approx(phi.sum(), abs=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_null_player_gets_zero_and_symmetric_players_are_equal(method):
    game = random_game(7, seed=2, null_player=3, symmetric=(0, 5))
    phi = exact_semivalues(game, method, alpha=4)
    assert phi[3] == pytest.approx(0.0, abs=1e-12)
    assert phi[0] == pytest.approx(phi[5], abs=1e-12)


@pytest.mark.parametrize("method,sampler", COMBOS)
def test_sampler_converges_to_enumeration(method, sampler):
    """Every estimate lies within 4.5 standard errors of the exact value.

    With 8 points, P(|Z| > 4.5) ~ 7e-6 each, so a correct unbiased sampler fails this by
    chance about once in 20,000 seeds; a biased weight (e.g. a missing n p(k) factor)
    shifts estimates by many standard errors at these sample counts and fails.
    """
    game = random_game(8, seed=3)
    exact = exact_semivalues(game, method, alpha=4)
    point, _, value = estimate(game, method, sampler, samples=3000)
    mean, se = per_point(point, value, game.n)
    assert np.all(np.abs(mean - exact) <= 4.5 * se + 1e-12), (mean - exact) / se
    assert np.all(se < 0.05)  # enough samples for the check to have teeth


def test_permutation_shapley_is_exactly_efficient_and_null_player_exact():
    game = random_game(8, seed=4, null_player=2)
    point, draw, value = estimate(game, "shapley", "permutation", samples=7)
    for chain in np.unique(draw):
        assert value[draw == chain].sum() == pytest.approx(game.table[-1] - game.table[0], abs=1e-12)
    assert np.all(value[point == 2] == 0.0)


def test_every_point_gets_exactly_the_requested_draws():
    game = random_game(6, seed=5)
    for method, sampler in COMBOS:
        point, draw, _ = estimate(game, method, sampler, samples=5, batch_fits=7)
        pairs = set(zip(point.tolist(), draw.tolist()))
        assert len(pairs) == len(point) == 6 * 5, (method, sampler)
        assert pairs == {(i, j) for i in range(6) for j in range(5)}


@pytest.mark.parametrize("method,sampler", COMBOS)
def test_same_seed_same_samples_other_seed_differs(method, sampler):
    game = random_game(6, seed=6)
    a = estimate(game, method, sampler, samples=6, seed=11)
    b = estimate(game, method, sampler, samples=6, seed=11)
    c = estimate(game, method, sampler, samples=6, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


def test_batches_are_independent_of_execution_order():
    game = random_game(6, seed=7)
    config = ValuationConfig(method="shapley", samples=10, seed=3, batch_fits=14)
    plan = make_sampler(config, game.n)
    forward = [plan.run(game, b, batch_rng(3, b)).delta for b in range(plan.n_batches)]
    backward = [plan.run(game, b, batch_rng(3, b)).delta for b in reversed(range(plan.n_batches))]
    for a, b in zip(forward, reversed(backward)):
        np.testing.assert_array_equal(a, b)
