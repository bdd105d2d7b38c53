"""Degenerate subsets with every learner: the documented fallback and status, counted per
run in DuckDB and logged to MLflow.

Parametrized over ``LEARNER_NAMES``, so a learner added there is held to the same policy
without touching this file. The policy (models/utility.py, README "Degenerate subsets"):
empty -> accuracy of the full training set's majority class; one class -> accuracy of
always predicting it; some but not all classes -> the learner fitted over the fixed
class set; all classes -> ok.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from amortval.data.problem import Problem
from amortval.data.store import ValuationStore
from amortval.models.utility import LEARNER_NAMES, STATUS_NAMES, make_utility
from amortval.tasks.config import RunConfig
from amortval.tasks.marginals import BatchSpec, evaluate_batch
from amortval.tasks.samplers import make_sampler, plan_segments

EMPTY, ONE_CLASS, MISSING, OK = (STATUS_NAMES.index(s) for s in ("empty", "one_class", "missing_classes", "ok"))
# Training classes 0,0,0,0,0,1,1,1,1,2,2,2 (majority 0); validation 6x0, 9x1, 15x2, so the
# constant predictions score 0.2, 0.3 and 0.5: every fallback value is distinguishable.
Y_TRAIN = np.array([0] * 5 + [1] * 4 + [2] * 3)
Y_VALID = np.array([0] * 6 + [1] * 9 + [2] * 15)
CONSTANT = {0: 0.2, 1: 0.3, 2: 0.5}


def three_class_problem(seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(3, 2)

    def draw(y):
        return (centres[y] + rng.normal(scale=0.7, size=(len(y), 2))).astype(np.float32)

    return Problem(draw(Y_TRAIN), Y_TRAIN, draw(Y_VALID), Y_VALID, 3)


def mask(*points: int) -> np.ndarray:
    row = np.zeros(len(Y_TRAIN), dtype=bool)
    row[list(points)] = True
    return row


@pytest.mark.parametrize("learner", LEARNER_NAMES)
def test_fallback_value_and_status_for_each_kind_of_subset(learner):
    utility = make_utility(learner, three_class_problem(), seed=0)
    masks = np.stack([
        mask(),              # empty: majority class of the full training set (0)
        mask(0, 1),          # only class 0
        mask(9),             # only class 2, one point
        mask(0, 1, 5, 6),    # classes 0 and 1 of 3
        mask(0, 1, 5, 6, 9, 10),  # every class
    ])
    values, status = utility.evaluate(masks)
    assert status.tolist() == [EMPTY, ONE_CLASS, ONE_CLASS, MISSING, OK]
    if getattr(utility.learner, "defined_on_every_subset", False):
        # The KNN utility (Jia et al.) defines v on every subset: statuses are counted but
        # no fallback replaces its value; the empty subset has no neighbours and scores 0.
        np.testing.assert_array_equal(values, utility.learner.fit_score(masks))
        assert values[0] == 0.0
        return
    assert values[:3].tolist() == [CONSTANT[0], CONSTANT[0], CONSTANT[2]]
    # A subset missing a class is fitted by the learner itself (no flat 0, no constant).
    np.testing.assert_array_equal(values[3:], utility.learner.fit_score(masks[3:]))
    assert np.all((values >= 0) & (values <= 1))


def expected_statuses(samples: pl.DataFrame, y: np.ndarray, k: int) -> tuple[list[str], int]:
    """Recompute every sample's status and the fallback count from class counts alone.

    Each draw is one permutation chain: sorting its samples by cardinality gives the
    permutation, so the coalition a point joined is the points before it.
    """
    def kind(classes: int) -> int:
        return EMPTY if classes == 0 else ONE_CLASS if classes == 1 else MISSING if classes < k else OK

    statuses, fallbacks = [], 0
    for draw in samples.partition_by("draw", maintain_order=True):
        order = draw.sort("cardinality")["point"].to_numpy()
        prefix = [kind(len(set(y[order[:j]]))) for j in range(len(order) + 1)]
        fallbacks += sum(s != OK for s in prefix)
        for j in range(len(order)):
            statuses.append(STATUS_NAMES[prefix[j] if prefix[j] != OK else prefix[j + 1]])
    return statuses, fallbacks


@pytest.mark.parametrize("learner", LEARNER_NAMES)
def test_statuses_and_fallbacks_are_counted_per_run_in_the_store(learner, tmp_path):
    problem = three_class_problem()
    path = str(problem.save(tmp_path / "problem.npz"))
    config = RunConfig.from_options(learner=learner, samples=6, seed=0, batch_fits=2 * (problem.n + 1))
    sampler = make_sampler(config.sampling, problem.n)
    with ValuationStore(tmp_path / "store.duckdb") as db:
        db.begin_run("r", "s", "d", config.model_dump(), 6, {}, problem.n)
        for units in plan_segments(sampler, 6, config.sampling.batch_fits):
            r = evaluate_batch(BatchSpec("s", units.start, units.stop, path, config.utility, config.sampling))
            db.commit_batch("s", r.start, r.stop, r.samples, n_fits=r.n_fits, n_fallbacks=r.n_fallbacks,
                            seconds=r.seconds)
        samples = db.samples("s").sort("draw", "cardinality")
        counts, fallbacks = db.status_counts("s"), db.fallback_count("s")
    statuses, expected_fallbacks = expected_statuses(samples, Y_TRAIN, 3)
    assert samples["status"].to_list() == statuses
    assert counts == dict(Counter(statuses))
    assert counts["empty"] == 6, "every chain starts from the empty coalition"
    assert fallbacks == expected_fallbacks > counts["empty"]


@pytest.fixture(scope="module")
def three_class_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("three-class")
    problem = three_class_problem(seed=1)
    for name, x, y in (("train", problem.x_train, problem.y_train), ("valid", problem.x_valid, problem.y_valid)):
        pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": [f"c{v}" for v in y]}).write_csv(root / f"{name}.csv")
    return root


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("learner", [pytest.param(name, marks=[] if name == "logreg" else [pytest.mark.slow])
                                     for name in LEARNER_NAMES])
def test_a_real_run_logs_every_status_count_to_duckdb_and_mlflow(learner, three_class_files, tmp_path, figures):
    from valuing import value

    result = value(data=str(three_class_files / "train.csv"), valid=str(three_class_files / "valid.csv"),
                           target="label", learner=learner, samples=6, target_error=None, seed=0, epochs=2, batch_fits=200,
                           store=str(tmp_path))
    with ValuationStore(tmp_path / "amortval.duckdb") as db:
        counts, fallbacks, stored = db.status_counts(result["sampling_id"]), db.fallback_count(result["sampling_id"]), \
            db.metrics(result["run_id"])
    logged = MlflowClient(result["mlflow_uri"]).get_run(result["mlflow_run_id"]).data.metrics
    for status in STATUS_NAMES:
        assert logged[f"samples_{status}"] == stored[f"samples_{status}"] == counts.get(status, 0), status
    assert logged["fallback_fits"] == stored["fallback_fits"] == fallbacks > 0
    assert counts["empty"] == 6 and counts["one_class"] > 0 and counts["missing_classes"] > 0
    figures(f"degenerate subsets, {learner} run", {**counts, "fallback_fits": fallbacks})
