"""Sampled points (``--points``): samples for a seeded subset of rows, values for all.

Analytic first: each sampler's rows for the sampled points converge to the exact
semivalue (enumeration) or equal the full sampler's rows; then the config, identity
and plan rules; then one small end-to-end run whose values table says which rows were
sampled.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from amortval.errors import ConfigError
from amortval.tasks.config import AUTO_POINTS, RunConfig
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.samplers import make_sampler, sampled_points
from games import TableGame, codes_and_sizes, random_game
from test_distributional import per_point, run_units


def sampler_for(n: int, **options):
    return make_sampler(RunConfig.from_options(**options).sampling, n)


# -- the rule -------------------------------------------------------------------------------

@pytest.mark.parametrize("points, n, expected", [
    (None, 500, 500), (None, AUTO_POINTS + 1, AUTO_POINTS), (0.1, 500, 50), (1.0, 500, 500),
    (120, 500, 120), (900, 500, 500), (0.001, 500, 1),
])
def test_points_resolve_to_a_count(points, n, expected):
    assert RunConfig.from_options(points=points).sampling.n_sampled(n) == expected


@pytest.mark.parametrize("bad, fragment", [(0, "--points"), (-3, "--points"), (12.5, "whole number"),
                                           (float("nan"), "--points"), (float("inf"), "--points")])
def test_bad_points_name_the_option(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_options(points=bad)


def test_subsets_are_seeded_nested_and_sorted():
    small, large = sampled_points(3, 1000, 100), sampled_points(3, 1000, 400)
    assert np.all(np.diff(small) > 0) and set(small) <= set(large)
    assert not np.array_equal(small, sampled_points(4, 1000, 100))
    assert sampled_points(3, 1000, 1000) is None


def test_identity_counts_the_subset_only_when_it_is_one():
    """Sampling every row keeps the identity runs had before --points existed."""
    base = RunConfig()
    assert base.sampling_id("d", 500) == base.sampling_id("d") == RunConfig.from_options(points=1.0).sampling_id("d", 500)
    assert RunConfig.from_options(points=200).sampling_id("d", 500) != base.sampling_id("d", 500)
    assert RunConfig.from_options(points=200).sampling_id("d", 500) == RunConfig.from_options(points=0.4).sampling_id("d", 500)
    assert base.sampling_id("d", AUTO_POINTS + 5) != base.sampling_id("d"), "the default samples a subset"


# -- the samplers ---------------------------------------------------------------------------

def test_permutation_rows_are_the_full_chains_rows_of_the_sampled_points():
    """Same chains, fewer fits: at most two per sampled point."""
    game = random_game(9, seed=5)
    full = run_units(sampler_for(9), game, range(6), seed=2)
    part_sampler = sampler_for(9, points=3)
    part = run_units(part_sampler, game, range(6), seed=2)
    keep = np.isin(full["point"], sampled_points(0, 9, 3))
    order = np.lexsort((full["point"][keep], full["draw"][keep]))
    order_part = np.lexsort((part["point"], part["draw"]))
    for name in ("point", "draw", "cardinality", "delta", "weight", "status"):
        np.testing.assert_array_equal(part[name][order_part], full[name][keep][order])
    batch = part_sampler.run(game, range(6), 2)
    assert batch.n_fits <= 6 * 2 * 3 < 6 * 10


def test_msr_rows_are_the_full_subsets_rows_of_the_sampled_points():
    game = random_game(8, seed=6)
    full = run_units(sampler_for(8, method="banzhaf"), game, range(20), seed=1)
    part = run_units(sampler_for(8, method="banzhaf", points=0.5), game, range(20), seed=1)
    keep = np.isin(full["point"], sampled_points(0, 8, 4))
    for name in ("point", "draw", "cardinality", "delta", "weight"):
        np.testing.assert_array_equal(part[name], full[name][keep])


@pytest.mark.parametrize("options", [
    {"method": "distributional", "min_size": 2, "max_size": 5},
    {"method": "distributional", "min_size": 0, "max_size": 4},
    {"method": "beta", "alpha": 4.0, "beta": 1.0},
    {"method": "shapley"},
])
def test_sampled_points_converge_to_enumeration(options):
    """Coalitions still come from the whole table: each sampled point's mean converges to
    its exact value on all n points (within 4.5 standard errors, as test_semivalues.py)."""
    _, sizes = codes_and_sizes(9)
    game = TableGame(random_game(9, seed=7).table + 0.1 * sizes**2)
    method = options["method"]
    exact = exact_semivalues(game, method, **{k: v for k, v in options.items() if k != "method"})
    sampler = sampler_for(9, points=4, seed=1, **options)
    rows = run_units(sampler, game, range(sampler.n_units(3000)), seed=1)
    chosen = sampled_points(1, 9, 4)
    assert set(np.unique(rows["point"])) == set(chosen)
    assert np.all(np.bincount(rows["point"], minlength=9)[chosen] == 3000), "one sample per point per draw"
    mean, se = per_point(rows, 9)
    assert np.all(np.abs(mean[chosen] - exact[chosen]) <= 4.5 * se[chosen] + 1e-12), \
        (mean[chosen] - exact[chosen]) / se[chosen]


@pytest.mark.parametrize("n, sizes", [(12, (1, 4)), (11, (0, 4))])  # 11: a padded last block
def test_distributional_rows_are_the_full_samplers_rows_of_the_sampled_points(n, sizes):
    """Same blocks, fewer fits: only the prefixes around sampled points are evaluated."""
    game = random_game(n, seed=8)
    options = {"method": "distributional", "min_size": sizes[0], "max_size": sizes[1]}
    full_sampler, part_sampler = sampler_for(n, **options), sampler_for(n, points=5, **options)
    assert part_sampler.n_units(7) == full_sampler.n_units(7)
    units = range(full_sampler.n_units(7))
    full, part = run_units(full_sampler, game, units, seed=0), run_units(part_sampler, game, units, seed=0)
    keep = np.isin(full["point"], sampled_points(0, n, 5))
    for name in ("point", "draw", "cardinality", "delta", "weight", "status"):
        np.testing.assert_array_equal(part[name], full[name][keep])
    assert part_sampler.run(game, units, 0).n_fits < full_sampler.run(game, units, 0).n_fits


# -- end to end -----------------------------------------------------------------------------

def test_a_run_on_sampled_points_values_every_row(tmp_path):
    from valuing import value

    result = value(points=120, samples=4, epochs=2, pretrain_epochs=1, folds=2, store=str(tmp_path / "store"))
    table = pl.read_parquet(result["values_path"])
    train = table.filter(pl.col("split") == "train")
    sampled = train.filter(pl.col("sampled"))
    assert sampled.height == 120 and train.height > 120
    assert (sampled["mc_count"] == 4).all() and (train.filter(~pl.col("sampled"))["mc_count"] == 0).all()
    assert train["value"].is_not_null().all() and train["value"].is_finite().all()
    assert train.filter(~pl.col("sampled"))["mc_value"].is_null().all()
    assert result["gate_mse_network"] > 0, "the gate compares on the sampled rows' held-out samples"
