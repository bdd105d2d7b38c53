"""End to end on tiny data: a real Prefect run, DuckDB file, MLflow SQLite store and registry."""

from __future__ import annotations

import time

import duckdb
import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from amortval.data.demo import make_demo
from amortval.data.store import ValuationStore
from amortval.flows.curation import curate_dataset
from amortval.tasks.config import RunConfig
from amortval.tasks.marginals import BatchSpec, evaluate_batch
from amortval.tasks.prepare import load_inputs, store_paths
from amortval.tasks.run_plan import begin, pending, plan_run
from valuing import value

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_TRAIN, SAMPLES = 300, 6  # the smallest demo size whose network beats both Monte Carlo and a constant
OPTIONS = dict(target="label", samples=SAMPLES, seed=0, epochs=5, batch_fits=50, mislabeled_column="flipped")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    demo = make_demo(seed=1, n_train=N_TRAIN, n_valid=30, n_new=30)
    demo.train.write_csv(root / "train.csv")
    demo.valid.drop("flipped").write_parquet(root / "valid.parquet")
    demo.new.write_parquet(root / "new.parquet")
    return root


@pytest.fixture(scope="module")
def valued(files, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    result = value(data=str(files / "train.csv"), valid=str(files / "valid.parquet"), store=str(store), **OPTIONS)
    return store, result


def test_store_holds_every_sample_and_estimate(valued):
    store, result = valued
    con = duckdb.connect(str(store_paths(store)["duckdb"]), read_only=True)
    try:
        run, sampling = result["run_id"], result["sampling_id"]
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (point, draw)) FROM samples WHERE sampling_id = ?", [sampling]).fetchone()
        assert n == distinct == N_TRAIN * SAMPLES
        orphans = con.execute("SELECT count(*) FROM samples s ANTI JOIN batches b USING (sampling_id, unit_start) WHERE s.sampling_id = ?", [sampling]).fetchone()[0]
        assert orphans == 0
        per_source = dict(con.execute("SELECT source, count(*) FROM estimates WHERE run_id = ? GROUP BY source", [run]).fetchall())
        assert per_source == {"monte_carlo": N_TRAIN, "amortized": N_TRAIN, "combined": N_TRAIN}
        assert con.execute("SELECT status FROM runs WHERE run_id = ?", [run]).fetchone()[0] == "completed"
        # The stored estimate is exactly the mean of the stored samples.
        mc = con.execute("SELECT point, avg(weight * delta) FROM samples WHERE sampling_id = ? GROUP BY point ORDER BY point", [sampling]).fetchall()
        est = con.execute("SELECT point, value FROM estimates WHERE run_id = ? AND source = 'monte_carlo' ORDER BY point", [run]).fetchall()
        np.testing.assert_allclose([v for _, v in mc], [v for _, v in est])
    finally:
        con.close()
    values = pl.read_parquet(result["values_path"])
    assert values["row"].to_list() == list(range(N_TRAIN))
    assert {"mc_value", "mc_stderr", "mc_count", "amortized_value", "value"} <= set(values.columns)
    assert (values["mc_count"] == SAMPLES).all()


def test_mlflow_run_model_version_and_alias(valued):
    store, result = valued
    client = MlflowClient(result["mlflow_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.params["utility.learner"] == "logreg" and run.data.params["sampling.method"] == "shapley"
    assert run.data.tags["amortval.run_id"] == result["run_id"] and result["experiment"] == "amortval-train"
    assert client.get_experiment(run.info.experiment_id).name == result["model_name"] == "amortval-train"
    for key in ("gate_mse_network", "gate_mse_monte_carlo", "gate_passed", "samples_stored",
                "control_variance_ratio", "control_samples_adjusted"):
        assert key in run.data.metrics
    assert run.data.metrics["samples_stored"] == N_TRAIN * SAMPLES
    history = client.get_metric_history(run.info.run_id, "heldout_mse")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 2
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert sum(p.endswith(".png") for p in figures) >= 2, figures
    assert "tables/values.parquet" in tables, tables
    version = client.get_model_version(result["model_name"], str(result["model_version"]))
    assert version.run_id == run.info.run_id
    gate_passed = bool(run.data.metrics["gate_passed"])
    assert gate_passed, "the tiny problem is chosen so the network beats 5-sample Monte Carlo"
    assert client.get_model_version_by_alias(result["model_name"], "champion").version == version.version


def test_rerun_of_a_completed_run_adds_nothing(valued, files):
    store, first = valued
    again = value(data=str(files / "train.csv"), valid=str(files / "valid.parquet"), store=str(store), **OPTIONS)
    assert again["run_id"] == first["run_id"] and again.get("reported_stored")
    assert again["mlflow_run_id"] == first["mlflow_run_id"] and again["model_version"] == first["model_version"]
    with ValuationStore(store_paths(store)["duckdb"]) as db:
        assert db.sample_count(first["sampling_id"]) == N_TRAIN * SAMPLES


def test_resume_submits_only_missing_batches_and_matches_uninterrupted(valued, files, tmp_path):
    """A run that stopped after batches 0 and 2 ends with the same values as one that never stopped."""
    store, full = valued
    config = RunConfig.from_options(data=str(files / "train.csv"), valid=str(files / "valid.parquet"),
                                    store=str(tmp_path), **OPTIONS)
    inputs = load_inputs(config.inputs, seed=0, store=tmp_path)
    plan = plan_run(config, inputs)
    assert plan.run_id == full["run_id"]
    with ValuationStore(plan.paths["duckdb"]) as db:
        begin(db, plan, inputs)
        todo = pending(db, plan)
        assert len(todo) >= 4
        for units in (todo[0], todo[2]):
            r = evaluate_batch(BatchSpec(plan.sampling_id, units.start, units.stop, str(plan.problem_path),
                                         config.utility, config.sampling))
            db.commit_batch(plan.sampling_id, r.start, r.stop, r.samples, n_fits=r.n_fits,
                            n_fallbacks=r.n_fallbacks, seconds=-1.0)
    resumed = value(data=str(files / "train.csv"), valid=str(files / "valid.parquet"), store=str(tmp_path), **OPTIONS)
    with ValuationStore(plan.paths["duckdb"]) as db:
        batches = db.batches(plan.sampling_id)
        assert sorted(batches.filter(pl.col("seconds") == -1.0)["unit_start"].to_list()) == [todo[0].start, todo[2].start]
        assert batches.height == len(todo)
        resumed_samples = db.samples(plan.sampling_id)
    with ValuationStore(store_paths(store)["duckdb"]) as db:
        full_samples = db.samples(full["sampling_id"])
    assert resumed_samples.equals(full_samples)
    a, b = pl.read_parquet(full["values_path"]), pl.read_parquet(resumed["values_path"])
    assert a.select("mc_value", "amortized_value", "value").equals(b.select("mc_value", "amortized_value", "value"))
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[resumed["flow_run_id"]])))
    assert sum(t.name.startswith("evaluate-batch") for t in task_runs) == len(todo) - 2


def test_curate_scores_unseen_points_with_the_registered_model(valued, files, tmp_path):
    store, result = valued
    out = tmp_path / "curated.parquet"
    curated = curate_dataset(data=str(files / "new.parquet"), store=str(store), drop_fraction=0.2, out=str(out),
                             mislabeled_column="flipped")
    assert curated["model_version"] == str(result["model_version"])
    kept, dropped = pl.read_parquet(out), pl.read_parquet(curated["dropped"])
    assert kept.height + dropped.height == 30 and dropped.height == 6
    assert {"value", "reason"} <= set(kept.columns)
    assert dropped["value"].max() <= kept["value"].min()
    assert all(r.startswith("dropped") for r in dropped["reason"])
    with ValuationStore(store_paths(store)["duckdb"]) as db:
        scores = db.scores(curated["curation_id"])
    assert scores.height == 30 and int(scores["kept"].sum()) == 24
    # The registry model scores exactly like the network used during the run.
    model_uri = f"models:/{result['model_name']}@champion"
    mlflow.set_tracking_uri(result["mlflow_uri"])
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    new = pl.read_parquet(files / "new.parquet").drop("flipped")
    registry_values = np.asarray(pyfunc.predict(new.to_pandas())).ravel()
    scored = pl.concat([kept, dropped]).sort("row")
    assert scored["row"].to_list() == list(range(30))
    np.testing.assert_allclose(registry_values, scored["value"].to_numpy(), rtol=1e-6)


def _scores_rows(store) -> int:
    con = duckdb.connect(str(store_paths(store)["duckdb"]), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM scores").fetchone()[0]
    finally:
        con.close()


def _mlflow_runs(uri: str) -> int:
    client = MlflowClient(uri)
    return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


@pytest.mark.parametrize("case,mutate,needle", [
    ("missing column", lambda f: f.drop("income"), "'income'"),
    ("extra column", lambda f: f.with_columns(pl.lit(1.0).alias("surprise")), "'surprise'"),
    ("wrong dtype", lambda f: f.with_columns(pl.col("income").cast(pl.String)), "'income' has dtype String"),
    ("wrong class label", lambda f: f.with_columns(pl.lit("maybe").alias("label")), "'maybe'"),
    ("NaN", lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("nan")).otherwise(pl.col("income")).alias("income")), "'income' has 1 NaN"),
    ("null label", lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("label")).alias("label")), "'label' has 1 null"),
])
def test_curate_rejects_data_unlike_the_model_and_writes_nothing(valued, files, tmp_path, case, mutate, needle,
                                                                 bad_input):
    from amortval.errors import SchemaMismatchError

    store, result = valued
    bad = tmp_path / "bad.parquet"
    mutate(pl.read_parquet(files / "new.parquet").drop("flipped")).write_parquet(bad)
    out = tmp_path / "curated.parquet"
    before = _scores_rows(store), _mlflow_runs(result["mlflow_uri"])
    began = time.perf_counter()
    with pytest.raises(SchemaMismatchError, match=needle):
        curate_dataset(data=str(bad), store=str(store), out=str(out))
    bad_input[f"scoring | curate: {case}"] = time.perf_counter() - began  # includes loading the model from MLflow
    assert not out.exists() and not (tmp_path / "curated.dropped.parquet").exists()
    assert (_scores_rows(store), _mlflow_runs(result["mlflow_uri"])) == before, "no scores, no MLflow run"


def test_curate_without_a_registered_model_says_so(files, tmp_path):
    from amortval.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="amortval value"):
        curate_dataset(data=str(files / "new.parquet"), store=str(tmp_path / "empty-store"), mislabeled_column="flipped")
    assert not (tmp_path / "empty-store" / "amortval.duckdb").exists()
