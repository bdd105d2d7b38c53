"""Monte Carlo ground truth: exact values on small problems, storage, parallelism, halves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from amortval.data.problem import Problem
from amortval.data.store import ValuationStore
from amortval.data.truth_store import read_truth, truth_info, write_truth
from amortval.errors import ConfigError
from amortval.models.utility import make_utility
from amortval.tasks import ground_truth
from amortval.tasks.exact import exact_semivalues
from amortval.tasks.knn_shapley import knn_shapley
from amortval.tasks.ground_truth import (
    TruthSpec,
    compute_truth,
    halves_agreement,
    load_or_compute_truth,
    summarize_draws,
    truth_batch,
)
from amortval.tasks.config import RunConfig
from amortval.tasks.metrics import mse, nmse, pearson
from amortval.tasks.samplers import plan_segments
from amortval.tasks.samplers.independent import IndependentSampler
from amortval.tasks.semivalues import size_distribution
from games import run_sampler, random_game


def small_problem(n: int = 8, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 60, 3)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=n + 60) > 0).astype(np.int64)
    y[:2] = [0, 1]  # both classes among the training points
    return Problem(x[:n], y[:n], x[n:], y[n:], 2)


@pytest.fixture
def problem_path(tmp_path: Path) -> str:
    return str(small_problem().save(tmp_path / "problem.npz"))


def game_truth(game, spec: TruthSpec) -> pl.DataFrame:
    spec = spec.resolved(game.n)
    segments = plan_segments(ground_truth.truth_sampler(spec, game.n), spec.samples, spec.batch_fits)
    parts = [truth_batch(game, spec, units) for units in segments]
    return summarize_draws(np.concatenate([p.point for p in parts]), np.concatenate([p.draw for p in parts]),
                           np.concatenate([p.value for p in parts]), spec.probes)


def test_probe_sampler_over_every_point_replays_the_independent_sampler():
    game = random_game(6, seed=2)
    want = run_sampler(game, 7, seed=3, batch_fits=10, method="beta", sampler="independent", alpha=4.0)
    probe = IndependentSampler(game.n, size_distribution("beta", 5, alpha=4.0), points=np.arange(game.n))
    assert probe.n_units(7) == game.n * 7
    got = probe.run(game, range(probe.n_units(7)), 3)
    for field in ("point", "draw", "cardinality", "delta", "weight", "status"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert got.n_fits == want.n_fits


@pytest.mark.parametrize("method,sampler", [("shapley", None), ("shapley", "permutation"),
                                            ("shapley", "independent"), ("beta", None), ("banzhaf", "independent"), ("banzhaf", None)])
def test_truth_of_a_game_matches_exact_semivalues(method, sampler):
    game = random_game(7, seed=4)
    spec = TruthSpec(probes=(5, 1), samples=3000, seed=11, method=method, sampler=sampler,
                     alpha=4.0, batch_fits=400)
    frame = game_truth(game, spec)
    exact = exact_semivalues(game, method, alpha=4.0)[[1, 5]]
    assert frame["point"].to_list() == [1, 5]
    assert frame["count"].to_list() == [3000, 3000]
    z = (frame["value"].to_numpy() - exact) / frame["stderr"].to_numpy()
    assert np.all(np.abs(z) < 4), z


def test_distributional_truth_matches_exact_values_for_its_size_range():
    """The truth of a distributional run draws |S| from that run's min_size..max_size-1."""
    game = random_game(7, seed=4)
    spec = TruthSpec(probes=(5, 1), samples=3000, seed=11, method="distributional", min_size=1, max_size=4,
                     batch_fits=400)
    assert spec.resolved(game.n).sampler == "shared"  # 2 probes: 3 fits a draw beat ~n (and 2 a sample)
    frame = game_truth(game, spec)
    exact = exact_semivalues(game, "distributional", min_size=1, max_size=4)[[1, 5]]
    z = (frame["value"].to_numpy() - exact) / frame["stderr"].to_numpy()
    assert np.all(np.abs(z) < 4), z
    shapley = exact_semivalues(game, "shapley")[[1, 5]]
    assert np.any(np.abs(frame["value"].to_numpy() - shapley) > 6 * frame["stderr"].to_numpy())  # teeth
    problem = small_problem()
    same = TruthSpec(probes=(1, 5), samples=10, seed=1, method="distributional")
    spelled = TruthSpec(probes=(1, 5), samples=10, seed=1, method="distributional", min_size=0,
                        max_size=RunConfig().sampling.max_size)
    other = TruthSpec(probes=(1, 5), samples=10, seed=1, method="distributional", max_size=5)
    assert same.truth_id(problem) == spelled.truth_id(problem) != other.truth_id(problem)


def test_truth_converges_to_exact_shapley_with_a_real_learner(problem_path):
    problem = small_problem()
    exact = exact_semivalues(make_utility("logreg", problem, 0), "shapley")
    spec = TruthSpec(probes=tuple(range(problem.n)), samples=600, seed=5)
    assert spec.resolved(problem.n).sampler == "permutation"
    frame = compute_truth(problem_path, spec)
    assert frame.columns == ["point", "value", "stderr", "count", "half_a", "half_b"]
    assert frame["point"].to_list() == list(range(problem.n))
    assert (frame["count"] == 600).all()
    value, stderr = frame["value"].to_numpy(), frame["stderr"].to_numpy()
    assert np.all(np.abs(value - exact) < 4 * stderr), (value, exact, stderr)
    assert np.all(stderr < 0.25 * np.abs(exact).max())  # the check above has teeth
    np.testing.assert_allclose((frame["half_a"] + frame["half_b"]).to_numpy() / 2, value, atol=1e-12)


@pytest.mark.parametrize("sampler,probes,samples", [("permutation", tuple(range(40)), 1500),
                                                     ("independent", (0, 7, 19), 3000),
                                                     ("shared", (0, 7, 19), 3000)])
def test_knn_truth_matches_closed_form_knn_shapley_beyond_enumeration(tmp_path, sampler, probes, samples):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 2)).astype(np.float32)
    y = (x[:, 0] + 0.7 * rng.normal(size=70) > 0).astype(np.int64)
    problem = Problem(x[:40], y[:40], x[40:], y[40:], 2)  # n = 40: 2^40 coalitions
    exact = knn_shapley(problem, 3)[list(probes)]
    spec = TruthSpec(probes=probes, samples=samples, seed=9, learner="knn", knn_k=3, sampler=sampler)
    frame = compute_truth(str(problem.save(tmp_path / "knn.npz")), spec)
    stderr = frame["stderr"].to_numpy()
    assert np.all(np.abs(frame["value"].to_numpy() - exact) < 4 * stderr)
    assert stderr.mean() < 0.1 * np.abs(exact).mean()


def test_sampler_defaults_by_cost_and_probe_validation():
    def chosen(method, probes, n=100, sampler=None):
        return TruthSpec(probes=probes, samples=10, seed=1, method=method, sampler=sampler).resolved(n).sampler

    assert chosen("shapley", range(99)) == "shared"  # 100 fits a draw < 101 fits a chain
    assert chosen("shapley", range(100)) == "permutation"  # every point: a chain is as cheap
    assert chosen("shapley", range(5), sampler="permutation") == "permutation"
    assert chosen("shapley", range(5), sampler="independent") == "independent"
    assert chosen("beta", range(3)) == "shared"
    assert chosen("beta", range(100)) == "independent"
    assert chosen("distributional", range(3)) == "shared"
    assert chosen("banzhaf", range(3)) == "msr"
    with pytest.raises(ConfigError, match=r"\[0, 100\)"):
        chosen("shapley", (3, 100))
    with pytest.raises(ConfigError, match="at least one probe"):
        TruthSpec(probes=(), samples=10, seed=1)
    with pytest.raises(ConfigError, match=">= 2 samples"):
        TruthSpec(probes=(1,), samples=1, seed=1)
    with pytest.raises(ConfigError, match="cannot estimate"):
        TruthSpec(probes=(1,), samples=10, seed=1, method="shapley", sampler="msr")


def test_truth_id_names_data_and_spec_not_probe_order():
    problem = small_problem()
    spec = TruthSpec(probes=(3, 1, 1), samples=100, seed=1)
    assert spec.probes == (1, 3)
    same = TruthSpec(probes=(1, 3), samples=100, seed=1, sampler="shared")  # resolved default
    assert spec.truth_id(problem) == same.truth_id(problem)
    assert spec.truth_id(problem).startswith("truth-shapley-logreg-")
    others = [TruthSpec(probes=(1, 3), samples=101, seed=1), TruthSpec(probes=(1, 3), samples=100, seed=2),
              TruthSpec(probes=(1, 4), samples=100, seed=1), TruthSpec(probes=(1, 3), samples=100, seed=1, utility_seed=1)]
    ids = {s.truth_id(problem) for s in others} | {spec.truth_id(small_problem(seed=1))}
    assert spec.truth_id(problem) not in ids and len(ids) == 5
    assert TruthSpec(probes=(1, 3), samples=100, seed=1, knn_k=9).truth_id(problem) == spec.truth_id(problem)
    knn = TruthSpec(probes=(1, 3), samples=100, seed=1, learner="knn")
    assert knn.truth_id(problem) != TruthSpec(probes=(1, 3), samples=100, seed=1, learner="knn", knn_k=9).truth_id(problem)


def test_workers_give_bit_identical_truths(problem_path):
    spec = TruthSpec(probes=(0, 2, 5, 7), samples=40, seed=3, sampler="permutation", batch_fits=30)
    lines: list[str] = []
    serial = compute_truth(problem_path, spec, workers=1, progress=lines.append)
    parallel = compute_truth(problem_path, spec, workers=2)
    assert serial.equals(parallel)
    assert lines and "truth: 14/14 batches" in lines[-1]  # 40 chains, 3 per batch of 30 fits


def test_stored_truth_is_computed_once(tmp_path, problem_path, monkeypatch):
    batches = []
    real = ground_truth.truth_batch
    monkeypatch.setattr(ground_truth, "truth_batch", lambda *a: batches.append(a[2]) or real(*a))
    spec = TruthSpec(probes=(1, 4), samples=30, seed=2)
    with ValuationStore(tmp_path / "store.duckdb") as store:
        first = load_or_compute_truth(store, problem_path, spec)
        assert len(batches) == 1  # 30 draws * 3 fits fit in one batch of 2000
        again = load_or_compute_truth(store, problem_path, spec)
        assert len(batches) == 1 and again.equals(first)
    with ValuationStore(tmp_path / "store.duckdb") as store:  # survives reopening
        assert load_or_compute_truth(store, problem_path, spec).equals(first)
        info = truth_info(store, spec.truth_id(small_problem()))
    assert len(batches) == 1
    assert info["n_fits"] == 90 and info["n_probes"] == 2 and info["samples"] == 30
    assert info["config"]["sampler"] == "shared" and info["config"]["probes"] == [1, 4]
    assert info["dataset_id"] == small_problem().fingerprint


def test_an_interrupted_truth_resumes_from_its_stored_batches(tmp_path, problem_path, monkeypatch):
    """Batches are kept as they finish: a truth stopped after 3 of its batches computes only
    the rest on the next call, and equals an uninterrupted one bit for bit."""
    from amortval.data.truth_store import truth_batches, truth_samples

    spec = TruthSpec(probes=(1, 4, 6), samples=40, seed=2, batch_fits=20)  # shared: 5 draws a batch
    whole = compute_truth(problem_path, spec)
    real, calls = ground_truth.truth_batch, []

    def stop_after_three(utility, spec, units):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(units)
        return real(utility, spec, units)

    monkeypatch.setattr(ground_truth, "truth_batch", stop_after_three)
    truth_id = spec.truth_id(small_problem())
    with ValuationStore(tmp_path / "store.duckdb") as store:
        with pytest.raises(KeyboardInterrupt):
            load_or_compute_truth(store, problem_path, spec)
        assert read_truth(store, truth_id) is None
        assert truth_batches(store, truth_id)["start"].to_list() == [0, 5, 10]
        assert truth_samples(store, truth_id).height == 3 * 5 * 3
    monkeypatch.setattr(ground_truth, "truth_batch", lambda *a: calls.append(a[2]) or real(*a))
    lines: list[str] = []
    with ValuationStore(tmp_path / "store.duckdb") as store:
        resumed = load_or_compute_truth(store, problem_path, spec, progress=lines.append)
        info = truth_info(store, truth_id)
        assert truth_batches(store, truth_id).is_empty() and truth_samples(store, truth_id).is_empty()
    assert [u.start for u in calls] == [0, 5, 10, 15, 20, 25, 30, 35]  # nothing computed twice
    assert "resuming: 15 of 40 units stored (60 fits), 5 batches to go" in lines[0]
    assert resumed.equals(whole)
    assert info["n_fits"] == 40 * 4


def truth_frame(points, values) -> pl.DataFrame:
    return pl.DataFrame({"point": points, "value": values, "stderr": [0.1] * len(points),
                         "count": [10] * len(points), "half_a": values, "half_b": values},
                        schema_overrides={"value": pl.Float64, "half_a": pl.Float64, "half_b": pl.Float64})


def test_truth_write_is_all_or_nothing(tmp_path):
    config = {"learner": "logreg", "method": "shapley", "samples": 10}
    with ValuationStore(tmp_path / "store.duckdb") as store:
        with pytest.raises(Exception, match="NOT NULL"):  # the second statement fails
            write_truth(store, "t1", truth_frame([0, 1], [0.5, None]), dataset_id="d", config=config)
        assert truth_info(store, "t1") is None and read_truth(store, "t1") is None
        assert store.query("SELECT count(*) AS n FROM truth_values")["n"][0] == 0
        with pytest.raises(ValueError, match="lists a point twice"):
            write_truth(store, "t1", truth_frame([0, 0], [0.5, 0.1]), dataset_id="d", config=config)
        with pytest.raises(ValueError, match=r"lacks \['samples'\]"):
            write_truth(store, "t1", truth_frame([0], [0.5]), dataset_id="d", config={"learner": "x", "method": "y"})
        write_truth(store, "t1", truth_frame([1, 0], [0.5, 0.25]), dataset_id="d", config=config)
        assert read_truth(store, "t1")["value"].to_list() == [0.25, 0.5]


def test_summarize_draws_by_hand():
    point = np.array([4, 2, 4, 4, 2, 4])
    draw = np.array([1, 0, 0, 2, 1, 3])
    value = np.array([2.0, 1.0, 4.0, 6.0, 3.0, 8.0])
    frame = summarize_draws(point, draw, value, (2, 4))
    assert frame.rows() == [(2, 2.0, 1.0, 2, 1.0, 3.0),  # stderr = std([1,3], ddof=1)/sqrt(2) = 1
                            (4, 5.0, math.sqrt(20 / 3) / 2, 4, 5.0, 5.0)]


@pytest.mark.parametrize("samples", [100, 5])
def test_halves_agreement_predicts_the_truth_error(samples):
    # phi ~ N(0, 1) over many points; each point's samples are phi + N(0, 2^2).
    rng = np.random.default_rng(0)
    phi = rng.normal(size=20_000)
    draws = phi[:, None] + 2.0 * rng.normal(size=(phi.size, samples))
    frame = pl.DataFrame({"value": draws.mean(axis=1), "count": np.full(phi.size, samples),
                          "half_a": draws[:, 0::2].mean(axis=1), "half_b": draws[:, 1::2].mean(axis=1)})
    got = halves_agreement(frame)
    value = frame["value"].to_numpy()
    assert got["truth_mse"] == pytest.approx(mse(value, phi), rel=0.05)  # = 4 / samples
    assert got["truth_mse"] == pytest.approx(4.0 / samples, rel=0.05)
    assert got["truth_nmse"] == pytest.approx(nmse(value, phi), rel=0.05)
    assert got["truth_pearson"] == pytest.approx(pearson(value, phi), abs=0.005)
    assert got["pearson_halves"] == pytest.approx(pearson(frame["half_a"], frame["half_b"]))
    if samples == 100:  # small noise: the nmse of the truth is about a quarter of the halves'
        assert got["truth_nmse"] == pytest.approx(got["nmse_halves"] / 4, rel=0.1)
        r = got["pearson_halves"]  # equal halves: Spearman-Brown
        assert got["truth_pearson"] == pytest.approx(math.sqrt(2 * r / (1 + r)), abs=0.002)
