"""Batches of marginal contributions with real learners: exactness and determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from games import tiny_problem

from amortval.data.problem import load_problem
from amortval.data.store import ValuationStore
from amortval.models.utility import make_utility
from amortval.tasks.config import RunConfig
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.marginals import BatchSpec, evaluate_batch
from amortval.tasks.samplers import make_sampler, plan_segments




@pytest.fixture(scope="module")
def problem_path(tmp_path_factory):
    return str(tiny_problem().save(tmp_path_factory.mktemp("p") / "problem.npz"))


def batch_specs(problem_path: str, config: RunConfig) -> list[BatchSpec]:
    sampler = make_sampler(config.sampling, load_problem(problem_path).n)
    return [BatchSpec("s", r.start, r.stop, problem_path, config.utility, config.sampling)
            for r in plan_segments(sampler, config.sampling.samples, config.sampling.batch_fits)]


def run_all(problem_path: str, config: RunConfig) -> pl.DataFrame:
    frames = [evaluate_batch(spec).samples for spec in batch_specs(problem_path, config)]
    return pl.concat(frames).sort("point", "draw")


@pytest.mark.parametrize("method,sampler", [("shapley", "permutation"), ("beta", "independent"), ("banzhaf", "msr")])
def test_logreg_estimates_converge_to_enumeration(problem_path, method, sampler):
    """Within 4.5 standard errors of the exact semivalue of the real logreg utility.

    Enumeration and sampling use the same utility object, so degenerate subsets get the
    same fallback in both; a biased weight or a mis-assigned coalition fails by many se.
    """
    problem = load_problem(problem_path)
    exact = exact_semivalues(make_utility("logreg", problem, 0), method, alpha=4.0, beta=1.0)
    config = RunConfig.from_options(method=method, sampler=sampler, samples=1500, seed=1, alpha=4.0, batch_fits=3000)
    samples = run_all(problem_path, config).with_columns((pl.col("weight") * pl.col("delta")).alias("v"))
    est = samples.group_by("point").agg(pl.col("v").mean().alias("m"), (pl.col("v").std() / pl.len().sqrt()).alias("se")).sort("point")
    err = np.abs(est["m"].to_numpy() - exact)
    assert np.all(err <= 4.5 * est["se"].to_numpy() + 1e-9), (err, est["se"].to_numpy())
    assert exact[:2].max() < 0 < exact[2:].mean(), "flipped points hurt, clean ones help"


@pytest.mark.parametrize("learner", ["logreg", "mlp", "xgboost"])
def test_every_learner_permutation_chain_is_efficient(problem_path, learner):
    """Each chain's samples sum to v(D) - v(empty): the Shapley efficiency axiom per draw."""
    problem = load_problem(problem_path)
    utility = make_utility(learner, problem, 0)
    config = RunConfig.from_options(learner=learner, samples=3, seed=0)
    samples = run_all(problem_path, config)
    v_full = utility.full_value()
    v_empty = utility.evaluate(np.zeros((1, problem.n), dtype=bool))[0][0]
    sums = samples.group_by("draw").agg(pl.col("delta").sum()).sort("draw")["delta"].to_numpy()
    np.testing.assert_allclose(sums, v_full - v_empty, atol=1e-12)
    assert set(samples["status"]) <= {"ok", "empty", "one_class", "missing_classes"}
    assert (samples.filter(pl.col("cardinality") == 0)["status"] == "empty").all()


def test_same_seed_identical_stored_samples_other_seed_differs(problem_path, tmp_path):
    def stored(seed: int, name: str) -> pl.DataFrame:
        config = RunConfig.from_options(samples=4, seed=seed, batch_fits=9)
        with ValuationStore(tmp_path / f"{name}.duckdb") as db:
            db.begin_run("r", "s", "d", config.model_dump(), 4, {}, 8)
            # Commit in reverse order: storage order must not matter either.
            for spec in reversed(batch_specs(problem_path, config)):
                r = evaluate_batch(spec)
                db.commit_batch("s", r.start, r.stop, r.samples, n_fits=r.n_fits, n_fallbacks=r.n_fallbacks,
                                seconds=r.seconds)
            return db.samples("s")

    a, b, c = stored(5, "a"), stored(5, "b"), stored(6, "c")
    assert a.height == 8 * 4
    assert a.equals(b)
    assert not a["delta"].equals(c["delta"]) or not a["point"].equals(c["point"])
