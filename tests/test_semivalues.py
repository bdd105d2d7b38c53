"""Semivalue weights, exact enumeration and the samplers, on games with known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from amortval.tasks.config import RunConfig
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.samplers import make_sampler, plan_segments
from amortval.tasks.semivalues import size_distribution
from games import additive_game, random_game, run_sampler

METHODS = ["shapley", "beta", "banzhaf"]
COMBOS = [("shapley", "permutation"), ("shapley", "independent"), ("beta", "permutation"),
          ("beta", "independent"), ("banzhaf", "independent"), ("banzhaf", "msr"),
          ("shapley", "shared"), ("beta", "shared"), ("banzhaf", "shared")]


def estimate(game, method, sampler, samples, seed=0, batch_fits=64):
    """Run every batch of a sampler in-process; (point, draw, weight*delta) of every sample."""
    out = run_sampler(game, samples, seed=seed, batch_fits=batch_fits, method=method, sampler=sampler,
                      alpha=4.0, beta=1.0)
    return out.point, out.draw, out.weight * out.delta


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
    sampler = make_sampler(RunConfig.from_options(method="shapley").sampling, game.n)
    segments = plan_segments(sampler, 10, 14)
    forward = [sampler.run(game, units, 3).delta for units in segments]
    backward = [sampler.run(game, units, 3).delta for units in reversed(segments)]
    for a, b in zip(forward, reversed(backward)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method,sampler", COMBOS)
def test_a_larger_budget_extends_the_draws_of_a_smaller_one(method, sampler):
    """Units are keyed by index, not batch: the samples of budget 4 are exactly the draws < 4
    of budget 9, whatever the batch size, so extending a run never redraws."""
    game = random_game(6, seed=8)
    small = run_sampler(game, 4, seed=2, batch_fits=10, method=method, sampler=sampler).to_frame()
    large = run_sampler(game, 9, seed=2, batch_fits=37, method=method, sampler=sampler).to_frame()
    assert small.height == 6 * 4 and large.height == 6 * 9
    key = ["point", "draw"]
    assert small.sort(key).equals(large.filter(large["draw"] < 4).sort(key))


def test_plan_segments_skips_stored_units_and_cuts_at_batch_edges():
    sampler = make_sampler(RunConfig.from_options(method="banzhaf").sampling, 10)  # one fit per unit
    assert plan_segments(sampler, 10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    # units 0..3 and 6..7 stored (by an earlier run with another batch size): only gaps remain
    assert plan_segments(sampler, 10, 4, done=[(0, 4), (6, 8)]) == [range(4, 6), range(8, 10)]
    assert plan_segments(sampler, 3, 4, done=[(0, 4)]) == []


@pytest.mark.parametrize("method,options", [("shapley", {}), ("beta", {"alpha": 4.0}), ("banzhaf", {}),
                                            ("distributional", {"min_size": 2, "max_size": 5}),
                                            ("distributional", {"min_size": 0, "max_size": 4})])
def test_shared_sampler_sees_each_size_with_its_semivalue_weight(method, options):
    """Analytic: a point's sample has size k with probability r(k) and weight p(k) / r(k),
    so r * weight = p exactly; Shapley needs no weights, a size range from 0 one constant."""
    from amortval.tasks.samplers.shared import SharedSampler, seen_size_pmf

    n = 9
    p = size_distribution(method, n - 1, **options)
    sampler = SharedSampler(n, p)
    np.testing.assert_allclose(seen_size_pmf(sampler.drawn) * sampler.weights, p, atol=1e-15)
    assert sampler.drawn.sum() == pytest.approx(1.0) and seen_size_pmf(sampler.drawn).sum() == pytest.approx(1.0)
    if method == "shapley":
        np.testing.assert_allclose(sampler.weights, 1.0, rtol=1e-12)
    if options.get("min_size") == 0:  # sizes 0..3 of 8 others: |S| = 4 without the point is wasted
        np.testing.assert_allclose(sampler.weights[p > 0], 9 / 8, rtol=1e-12)


def test_shared_sampler_on_sampled_points_costs_one_fit_a_sample_and_is_exact():
    """Three sampled points of 8: each draw is 1 + 3 fits and gives each of them one sample;
    the estimates still converge to the exact values (distributional, range from 2)."""
    from amortval.tasks.samplers.shared import SharedSampler

    game = random_game(8, seed=9)
    exact = exact_semivalues(game, "distributional", min_size=2, max_size=6)
    points = np.array([1, 4, 6])
    game.calls = 0
    sampler = SharedSampler(game.n, size_distribution("distributional", game.n - 1, min_size=2, max_size=6), points)
    assert sampler.n_units(3000) == 3000 and sampler.fits_per_unit == 4
    out = sampler.run(game, range(3000), 5)
    assert out.n_fits == 3000 * 4 and game.calls == 3000 * 4
    assert sorted(set(out.point.tolist())) == [1, 4, 6] and len(out.point) == 9000
    assert set(out.cardinality[out.weight > 0].tolist()) == {2, 3, 4, 5}
    assert np.all(out.weight[out.cardinality == 1] == 0)  # drawn |S| = 2 holding the point: below the range
    value = out.weight * out.delta
    for i in points:
        v = value[out.point == i]
        assert abs(v.mean() - exact[i]) <= 4.5 * v.std(ddof=1) / np.sqrt(len(v)), i
