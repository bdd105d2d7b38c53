"""The small-coalition control variate: same values in expectation, less variance.

Exact first: when every point's samples follow the pooled distribution of cardinalities
exactly, each point's mean is unchanged. Then a game whose small-coalition marginals are
a large step set by the label (as a classifier's are): the adjusted per-point means are
far closer to the known values. Last, ``amortize`` applies it when the samples carry
their cardinality, and only then.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from amortval.tasks.amortize import amortize
from amortval.tasks.config import AmortizationConfig
from amortval.tasks.control_variate import MIN_CELL, adjust


def point_means(frame: pl.DataFrame, n: int) -> np.ndarray:
    point = frame["point"].to_numpy()
    return np.bincount(point, weights=frame["value"].to_numpy(), minlength=n) / np.bincount(point, minlength=n)


def test_means_are_unchanged_when_each_point_has_the_pooled_cardinalities():
    # 80 points (two labels), each with every cardinality 0..19 once: each point's own
    # distribution of cardinalities is the pooled one, so the control averages out exactly.
    rng = np.random.default_rng(0)
    n, ks = 80, np.arange(20)
    labels = np.arange(n) % 2
    frame = pl.DataFrame({"point": np.repeat(np.arange(n), ks.size), "draw": np.tile(ks, n),
                          "cardinality": np.tile(ks, n),
                          "value": rng.standard_t(2, size=n * ks.size) / (1 + np.tile(ks, n))})
    adjusted, info = adjust(frame, labels, below=10)
    assert info.cells == 20 and info.samples_adjusted == n * 10  # 40 per cell >= MIN_CELL
    np.testing.assert_allclose(point_means(adjusted, n), point_means(frame, n), rtol=0, atol=1e-12)
    assert not np.allclose(adjusted["value"].to_numpy(), frame["value"].to_numpy())
    assert info.variance_ratio < 1


def label_step_game(seed: int, n: int = 100, m: int = 100, sizes: int = 100):
    """Cardinality k uniform on 0..sizes-1; a sample is the point's own effect a_i, plus a step
    of the label's size that decays with k, plus noise. Its value is a_i + mean_k step."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    own = rng.normal(scale=0.01, size=n)
    step = np.where(labels == 1, 0.5, -0.3)
    k = rng.integers(0, sizes, size=(n, m))
    decay = 1.0 / (1.0 + k) ** 2
    values = own[:, None] + step[:, None] * decay + rng.normal(scale=0.002, size=(n, m))
    phi = own + step * np.mean(1.0 / (1.0 + np.arange(sizes)) ** 2)
    frame = pl.DataFrame({"point": np.repeat(np.arange(n), m), "draw": np.tile(np.arange(m), n),
                          "cardinality": k.ravel(), "value": values.ravel()})
    return frame, labels, phi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_steps_of_small_coalitions_are_taken_out(seed):
    frame, labels, phi = label_step_game(seed)
    adjusted, info = adjust(frame, labels, below=10)
    before = np.mean((point_means(frame, phi.size) - phi) ** 2)
    after = np.mean((point_means(adjusted, phi.size) - phi) ** 2)
    assert after < 0.2 * before, (before, after)
    # Value moves between the points of a label only: each label keeps its total.
    for y in (0, 1):
        rows = labels[frame["point"].to_numpy()] == y
        assert adjusted["value"].to_numpy()[rows].sum() == pytest.approx(frame["value"].to_numpy()[rows].sum(),
                                                                          rel=1e-12, abs=1e-12)
    assert info.variance_ratio < 0.5


def test_off_rare_cells_and_large_cardinalities_are_left_alone():
    frame, labels, _ = label_step_game(0)
    same, info = adjust(frame, labels, below=0)
    assert same["value"].equals(frame["value"]) and info.samples_adjusted == 0
    # One label's cells are too rare: only the other label's samples move at k < below,
    # and a sample from `below` up moves only by its label's constant.
    rare = frame.filter(~((pl.col("point") % 2 == 1) & (pl.col("cardinality") < 10) & (pl.col("draw") >= 1)))
    adjusted, info = adjust(rare, labels, below=10)
    small_one = rare.filter((pl.col("point") % 2 == 1) & (pl.col("cardinality") < 10)).height
    assert small_one < 10 * MIN_CELL and info.cells == 10
    shift = (adjusted["value"] - rare["value"]).to_numpy()
    odd = rare["point"].to_numpy() % 2 == 1
    assert np.ptp(shift[odd]) < 1e-15  # label 1: one constant for all its samples (all cells unused)
    large = rare["cardinality"].to_numpy() >= 10
    assert np.ptp(shift[~odd & large]) < 1e-15


def test_amortize_applies_it_only_to_samples_that_carry_their_cardinality():
    frame, labels, phi = label_step_game(0, n=200, m=40, sizes=50)
    x = np.column_stack([labels, np.random.default_rng(1).normal(size=(200, 3))]).astype(np.float32)
    config = AmortizationConfig(pretrain_epochs=1, epochs=2, lr_tries=1)
    with_k = amortize(x, labels, 2, frame, config=config, seed=0)
    without = amortize(x, labels, 2, frame.drop("cardinality"), config=config, seed=0)
    off = amortize(x, labels, 2, frame, config=config.model_copy(update={"control_below": 0}), seed=0)
    assert with_k.control.samples_adjusted > 0 and without.control.samples_adjusted == 0
    np.testing.assert_array_equal(off.values, without.values)
    adjusted, _ = adjust(frame, labels, below=config.control_below)
    np.testing.assert_allclose(with_k.monte_carlo, point_means(adjusted, 200))
    assert np.mean((with_k.monte_carlo - phi) ** 2) < 0.5 * np.mean((without.monte_carlo - phi) ** 2)


def test_the_run_summary_says_what_the_control_variate_did(capsys):
    from amortval.flows.summary import print_valuation

    run = {"source": "demo", "seconds": 1.0, "run_id": "r", "duckdb": "s/amortval.duckdb", "values_path": "s/v.parquet",
           "store": "s"}
    print_valuation({**run, "control_samples_adjusted": 1234.0, "control_variance_ratio": 0.561})
    assert "control variate   1,234 small-coalition samples adjusted, sample variance x0.56" in capsys.readouterr().out
    print_valuation({**run, "control_samples_adjusted": 0.0, "control_variance_ratio": 1.0})
    assert "control variate" not in capsys.readouterr().out
