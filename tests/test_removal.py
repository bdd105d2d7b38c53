"""Point removal and curation gain: exact masks, real refits, and the figure."""

from __future__ import annotations

import numpy as np
import pytest

from amortval.data.problem import Problem
from amortval.models.utility import make_utility
from amortval.tasks.plots import close_figures, removal_curves_figure
from amortval.tasks.removal import curation_gain, removal_counts, removal_curves, removal_masks

N_CLEAN, N_FLIPPED = 24, 12


def flipped_problem(seed: int = 0) -> tuple[Problem, np.ndarray]:
    """1-D, class = x > 0, tested on a uniform grid (every boundary shift costs accuracy).

    The flipped points lie in the class-0 region but are labelled 1: with them the
    boundary moves into class 0; with them removed the data are separable at 0; with
    the clean class-0 points removed instead, they out-vote class 0 in its own region.
    """
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(-3, -0.2, N_CLEAN), rng.uniform(0.2, 3, N_CLEAN),
                        rng.uniform(-3, -0.5, N_FLIPPED)])[:, None].astype(np.float32)
    y = np.repeat([0, 1, 1], [N_CLEAN, N_CLEAN, N_FLIPPED])
    x_test = np.linspace(-3, 3, 200, dtype=np.float32)[:, None]
    flipped = np.arange(x.shape[0]) >= 2 * N_CLEAN
    return Problem(x, y, x_test, (x_test[:, 0] > 0).astype(np.int64), 2), flipped


def test_removal_counts_floor_with_float_tolerance():
    np.testing.assert_array_equal(removal_counts(np.array([0, 0.05, 0.29, 0.5, 1.0]), 100), [0, 5, 29, 50, 100])
    np.testing.assert_array_equal(removal_counts(np.array([0.1, 0.19]), 10), [1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        removal_counts(np.array([0.2, 1.5]), 10)


def test_removal_masks_by_hand_with_ties_broken_by_index():
    values = np.array([0.3, -0.1, 0.2, -0.1, 0.5])
    low, high = removal_masks(values, np.array([0.0, 0.4, 0.6]))
    np.testing.assert_array_equal(low, [[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 0, 0, 0, 1]])
    np.testing.assert_array_equal(high, [[1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0]])
    # All tied: both directions remove the smallest indices first.
    low, high = removal_masks(np.zeros(4), np.array([0.5]))
    np.testing.assert_array_equal(low, [[0, 0, 1, 1]])
    np.testing.assert_array_equal(high, [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="finite"):
        removal_masks(np.array([0.1, np.nan]), np.array([0.5]))


def test_removing_flipped_points_beats_removing_the_best():
    problem, flipped = flipped_problem()
    # An oracle valuation: flipped < clean class 1 < clean class 0 (which protects the
    # class-0 region from the flipped points).
    values = np.where(flipped, -1.0, np.where(problem.y_train == 0, 2.0, 1.0))
    fractions = np.array([0.0, 0.1, 0.2, 0.3])
    curves = removal_curves(problem, "logreg", values, fractions, seed=0)
    np.testing.assert_array_equal(curves["removed"], [0, 6, 12, 18])
    full = make_utility("logreg", problem, 0).full_value()
    assert curves["full"] == full
    assert curves["low_removed"][0] == curves["high_removed"][0] == full
    assert np.all(curves["low_removed"][1:] > curves["high_removed"][1:])
    assert curves["low_removed"][2] > full + 0.1  # all 12 flipped points gone
    assert curves["low_removed"][2] >= 0.95
    assert np.all(np.diff(curves["high_removed"]) < 0)


def test_curation_gain_of_dropping_the_flipped_points():
    problem, flipped = flipped_problem()
    gain = curation_gain(problem, "logreg", ~flipped, seed=0)
    assert gain["n_kept"] == 2 * N_CLEAN
    assert gain["all"] == make_utility("logreg", problem, 0).full_value()
    assert gain["gain"] == pytest.approx(gain["kept"] - gain["all"])
    assert gain["gain"] > 0.1
    with pytest.raises(ValueError, match="boolean mask of shape"):
        curation_gain(problem, "logreg", np.ones(5, dtype=bool), seed=0)


def test_removal_curves_reject_values_of_the_wrong_length():
    problem, _ = flipped_problem()
    with pytest.raises(ValueError, match="60 training points"):
        removal_curves(problem, "logreg", np.zeros(59), np.array([0.1]), seed=0)


def test_removal_curves_figure_draws_two_lines_per_estimator():
    curve = {"fractions": np.array([0.0, 0.1]), "low_removed": np.array([0.8, 0.9]),
             "high_removed": np.array([0.8, 0.6])}
    figure = removal_curves_figure({"network": curve, "monte carlo": curve})
    ax = figure.axes[0]
    assert len(ax.lines) == 4
    assert ax.get_xlabel() == "fraction of training points removed"
    assert "accuracy" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "network: lowest values removed" in labels and "monte carlo: highest values removed" in labels
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [0.8, 0.6])
    close_figures([figure])
    with pytest.raises(ValueError, match="at least one"):
        removal_curves_figure({})


@pytest.mark.parametrize("learner", ["xgboost", "logreg"])
def test_refits_on_threads_give_the_serial_values_in_order(learner):
    """Point removal's refits split over worker threads: the same accuracies, in order."""
    from amortval.tasks.removal import evaluate

    problem, flipped = flipped_problem()
    values = np.where(flipped, -1.0, 1.0) + np.linspace(0, 0.1, problem.n)
    fractions = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    serial = removal_curves(problem, learner, values, fractions, seed=3)
    threaded = removal_curves(problem, learner, values, fractions, seed=3, workers=3)
    for key in ("low_removed", "high_removed"):
        np.testing.assert_array_equal(threaded[key], serial[key])
    assert threaded["full"] == serial["full"]
    masks = np.random.default_rng(0).random((7, problem.n)) < 0.5
    utility = make_utility(learner, problem, 3)
    for workers in (1, 2, 7, 20):
        got = evaluate(utility, masks, workers)
        np.testing.assert_array_equal(got[0], utility.evaluate(masks)[0])
        np.testing.assert_array_equal(got[1], utility.evaluate(masks)[1])
