"""Distributional Shapley: its size distribution, exact values, and the block sampler."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from amortval.errors import ConfigError
from amortval.models.utility import make_utility
from amortval.tasks.config import RunConfig
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.samplers import make_sampler
from amortval.tasks.samplers.distributional import DistributionalSampler
from amortval.tasks.semivalues import size_distribution
from games import TableGame, additive_game, codes_and_sizes, random_game, tiny_problem


def sampler_for(n: int, samples: int = 1, seed: int = 0, **options):
    config = RunConfig.from_options(method="distributional", samples=samples, seed=seed, **options)
    return make_sampler(config.sampling, n)


def run_units(sampler, game, units: range, seed: int, per_call: int | None = None):
    """All rows of ``units``, run in calls of ``per_call`` units (default: one call)."""
    step = per_call or max(1, len(units))
    parts = [sampler.run(game, range(a, min(a + step, units.stop)), seed) for a in range(units.start, units.stop, step)]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return {name: cat(name) for name in ("point", "draw", "cardinality", "delta", "weight", "status")}


def per_point(rows, n):
    value = rows["weight"] * rows["delta"]
    mean = np.array([value[rows["point"] == i].mean() for i in range(n)])
    se = np.array([value[rows["point"] == i].std(ddof=1) / np.sqrt((rows["point"] == i).sum()) for i in range(n)])
    return mean, se




# -- the semivalue ------------------------------------------------------------------------

def test_size_distribution_is_uniform_on_the_clipped_range():
    p = size_distribution("distributional", 9, min_size=2, max_size=6)
    np.testing.assert_allclose(p, [0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0, 0, 0])
    np.testing.assert_allclose(size_distribution("distributional", 9, min_size=3, max_size=1000),
                               np.r_[np.zeros(3), np.full(7, 1 / 7)])
    np.testing.assert_allclose(size_distribution("distributional", 9, min_size=0, max_size=10),
                               size_distribution("shapley", 9))
    with pytest.raises(ValueError, match="max_size"):
        size_distribution("distributional", 9)


def test_additive_game_values_are_the_weights():
    weights = np.array([0.3, -0.1, 0.0, 0.25, 0.05, -0.2, 0.1])
    phi = exact_semivalues(additive_game(weights), "distributional", min_size=1, max_size=4)
    np.testing.assert_allclose(phi, weights, atol=1e-12)


def test_distributional_differs_from_shapley_unless_the_range_is_everything():
    game = random_game(7, seed=2)
    shapley = exact_semivalues(game, "shapley")
    np.testing.assert_allclose(exact_semivalues(game, "distributional", max_size=50), shapley, atol=1e-12)
    assert not np.allclose(exact_semivalues(game, "distributional", min_size=1, max_size=3), shapley, atol=1e-3)


# -- config wiring ------------------------------------------------------------------------

def test_config_defaults_validation_and_identity():
    config = RunConfig.from_options(method="distributional", min_size=2, max_size=6)
    assert config.sampling.sampler_name == "distributional"
    assert config.sampling.identity() == {"method": "distributional", "sampler": "distributional",
                                          "seed": 0, "min_size": 2, "max_size": 6}
    assert "max_size" not in RunConfig.from_options(max_size=6).sampling.identity()
    default = RunConfig().sampling
    assert (default.min_size, default.max_size) == (0, 1000)
    with pytest.raises(ConfigError, match="min-size"):
        RunConfig.from_options(method="distributional", min_size=6, max_size=6)
    with pytest.raises(ConfigError, match="cannot estimate"):
        RunConfig.from_options(method="shapley", sampler="distributional")
    sampler = make_sampler(config.sampling, 9)
    assert isinstance(sampler, DistributionalSampler) and (sampler.lo, sampler.block, sampler.blocks) == (2, 4, 3)


# -- the block sampler: convergence ---------------------------------------------------------

@pytest.mark.parametrize("sampler_name", ["distributional", "independent"])
def test_sampler_converges_to_enumeration_on_a_nonlinear_game(sampler_name):
    """Within 4.5 standard errors of the exact value (see test_semivalues.py for the odds).

    n = 8 with sizes 2..4 (L = 3): the last block of every permutation holds 2 points,
    so padded blocks are a third of all blocks; a wrong size for them biases the
    estimate by many standard errors at these sample counts: the convex size term makes
    marginal contributions grow with |S| (leaving the padding out fails by 5-9 se).
    """
    _, sizes = codes_and_sizes(8)
    game = TableGame(random_game(8, seed=3).table + 0.1 * sizes**2)
    exact = exact_semivalues(game, "distributional", min_size=2, max_size=5)
    sampler = sampler_for(8, sampler=sampler_name, min_size=2, max_size=5)
    rows = run_units(sampler, game, range(sampler.n_units(3000)), seed=1)
    mean, se = per_point(rows, game.n)
    assert np.all(np.abs(mean - exact) <= 4.5 * se + 1e-12), (mean - exact) / se
    assert np.all(se < 0.005)


def test_block_sampler_converges_with_the_logreg_utility():
    utility = make_utility("logreg", tiny_problem(), 0)
    exact = exact_semivalues(utility, "distributional", min_size=1, max_size=5)
    sampler = sampler_for(8, min_size=1, max_size=5)
    rows = run_units(sampler, utility, range(sampler.n_units(400)), seed=2)
    mean, se = per_point(rows, utility.n)
    assert np.all(np.abs(mean - exact) <= 4.5 * se + 1e-9), (mean - exact) / se
    assert exact[:2].max() < 0 < exact[2:].mean(), "flipped points hurt, clean ones help"


def test_sizes_are_uniform_also_in_the_short_last_block():
    """n = 11, sizes 1..4 (L = 4): the last block of each draw has 3 real points and 1 filler."""
    game = random_game(11, seed=4)
    sampler = sampler_for(11, min_size=1, max_size=5)
    assert sampler.blocks == 3 and sampler.n % sampler.block == 3
    last = [sampler.run(game, range(j * 3 + 2, j * 3 + 3), seed=5) for j in range(1500)]
    for sizes in (np.concatenate([b.cardinality for b in last]),
                  run_units(sampler, game, range(sampler.n_units(400)), seed=6)["cardinality"]):
        counts = np.bincount(sizes, minlength=5)
        assert counts[0] == 0 and counts[1:].min() > 0
        assert stats.chisquare(counts[1:]).pvalue > 1e-4, counts


# -- the block sampler: the unit contract ---------------------------------------------------

def test_prefix_property_and_one_sample_per_draw():
    game = random_game(10, seed=7)
    sampler = sampler_for(10, min_size=1, max_size=4)  # L = 3, B = 4, last block of 1
    big = run_units(sampler, game, range(sampler.n_units(6)), seed=3)
    for m in (1, 4):
        small = run_units(sampler, game, range(sampler.n_units(m)), seed=3)
        keep = big["draw"] < m
        for name in small:
            np.testing.assert_array_equal(small[name], big[name][keep])
    pairs = sorted(zip(big["point"].tolist(), big["draw"].tolist()))
    assert pairs == [(i, j) for i in range(10) for j in range(6)]


def test_same_seed_same_rows_other_seed_differs_and_grouping_changes_nothing():
    game = random_game(9, seed=8)
    sampler = sampler_for(9, min_size=2, max_size=6)
    units = range(sampler.n_units(5))
    one_call = run_units(sampler, game, units, seed=11)
    for per_call in (1, 4, 7):
        grouped = run_units(sampler, game, units, seed=11, per_call=per_call)
        for name in one_call:
            np.testing.assert_array_equal(grouped[name], one_call[name])
    other = run_units(sampler, game, units, seed=12)
    assert not np.array_equal(other["delta"], one_call["delta"])


class SpyGame:
    """Wraps a game and records every coalition size evaluated."""

    def __init__(self, game):
        self.game, self.n, self.sizes = game, game.n, []

    def evaluate(self, masks):
        self.sizes.append(masks.sum(axis=1))
        return self.game.evaluate(masks)


@pytest.mark.parametrize("n,min_size,max_size", [(12, 2, 6), (11, 0, 4)])
def test_fits_per_sample_and_coalitions_never_exceed_max_size(n, min_size, max_size):
    spy = SpyGame(random_game(n, seed=9))
    sampler = sampler_for(n, min_size=min_size, max_size=max_size)
    batch = sampler.run(spy, range(sampler.n_units(3)), seed=0)
    sizes = np.concatenate(spy.sizes)
    assert batch.n_fits == len(sizes) and sizes.max() == max_size and sizes.min() == min_size
    per_sample = batch.n_fits / len(batch.point)
    block = max_size - min_size
    assert per_sample == pytest.approx(sampler.blocks * (block + 1) / n)
    if n % block == 0:
        assert per_sample == pytest.approx(1 + 1 / block)
