"""Same seed, same data: bit-identical stored samples and values on 1 or 2 worker threads
and on a Dask cluster of worker processes; the registered valuation network scores new
points identically run after run (CPU)."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import polars as pl
import pytest

from amortval.data.demo import make_demo
from amortval.data.store import ValuationStore
from valuing import value as run_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = dict(target="label", samples=8, seed=3, epochs=4, batch_fits=2 * 41, mislabeled_column="flipped")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    demo = make_demo(seed=5, n_train=40, n_valid=30, n_new=25)
    demo.train.write_parquet(root / "train.parquet")
    demo.valid.drop("flipped").write_parquet(root / "valid.parquet")
    demo.new.drop("flipped").write_parquet(root / "new.parquet")
    return root


def value(files, store, **execution) -> dict:
    result = run_flow(data=str(files / "train.parquet"), valid=str(files / "valid.parquet"), store=str(store),
                           **OPTIONS, **execution)
    with ValuationStore(store / "amortval.duckdb") as db:
        result["stored_samples"] = db.samples(result["sampling_id"])
        result["batch_rows"] = db.batches(result["sampling_id"]).select("unit_start", "n_samples", "n_fits",
                                                                        "n_fallbacks")
    result["values"] = pl.read_parquet(result["values_path"])
    mlflow.set_tracking_uri(result["mlflow_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{result['model_name']}/{result['model_version']}")
    result["new_scores"] = np.asarray(model.predict(pl.read_parquet(files / "new.parquet").to_pandas())).ravel()
    return result


@pytest.fixture(scope="module")
def one_thread(files, tmp_path_factory):
    return value(files, tmp_path_factory.mktemp("one-thread"), workers=1)


def assert_identical(a: dict, b: dict) -> None:
    assert a["run_id"] == b["run_id"], "workers and runner are not part of the run id"
    assert a["stored_samples"].height == 40 * 8
    assert a["stored_samples"].equals(b["stored_samples"])
    # batches are sized by measured time (tasks/batch_sizes.py), so their edges may differ;
    # the units they cover and the fits they made may not
    totals = lambda r: r["batch_rows"].select(pl.col("n_samples", "n_fits", "n_fallbacks").sum()).row(0)  # noqa: E731
    assert totals(a) == totals(b)
    assert a["values"].equals(b["values"]), "Monte Carlo and amortized values, bit for bit"
    assert np.array_equal(a["new_scores"], b["new_scores"]), "registered network scores unseen points alike"


def test_two_worker_threads_give_bit_identical_samples_values_and_scores(files, one_thread, tmp_path, figures):
    two = value(files, tmp_path, workers=2)
    assert_identical(one_thread, two)
    figures("determinism, threads 1 vs 2", f"identical: {two['stored_samples'].height} samples, "
            f"{two['values'].height} values, {len(two['new_scores'])} new-point scores")


@pytest.mark.slow
def test_dask_cluster_gives_bit_identical_samples_values_and_scores(files, one_thread, tmp_path, figures):
    dask = value(files, tmp_path, workers=2, runner="dask")
    assert_identical(one_thread, dask)
    figures("determinism, Dask (2 worker processes) vs 1 thread", f"identical: {dask['stored_samples'].height} "
            f"samples, {dask['values'].height} values, {len(dask['new_scores'])} new-point scores")


@pytest.mark.slow
def test_dask_from_the_command_line_without_a_prefect_server(files, one_thread, cli_environment, tmp_path, figures):
    """The user's path: `amortval value --runner dask` on Prefect's temporary server. Dask
    workers must report to that one server, not each start their own."""
    env = {k: v for k, v in cli_environment.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "ph")}
    argv = [sys.executable, "-m", "amortval.flows.cli", "value", "--data", str(files / "train.parquet"),
            "--valid", str(files / "valid.parquet"), "--store", str(tmp_path / "store"), "--runner", "dask",
            "--workers", "2", "--target", OPTIONS["target"], "--samples", str(OPTIONS["samples"]),
            "--seed", str(OPTIONS["seed"]), "--epochs", str(OPTIONS["epochs"]),
            "--batch-fits", str(OPTIONS["batch_fits"]), "--mislabeled-column", OPTIONS["mislabeled_column"]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert output.count("Starting temporary server") == 1, output[-3000:]
    values = pl.read_parquet(next((tmp_path / "store" / "values").glob("*.parquet")))
    assert values.equals(one_thread["values"])
    figures("determinism, CLI --runner dask on the temporary server", "identical values, 1 temporary server")


def test_another_seed_differs(files, one_thread, tmp_path):
    """The identity above is not vacuous: the seed does reach the samples and values."""
    other = run_flow(data=str(files / "train.parquet"), valid=str(files / "valid.parquet"), store=str(tmp_path),
                          **{**OPTIONS, "seed": 4})
    assert other["run_id"] != one_thread["run_id"]
    assert not pl.read_parquet(other["values_path"])["mc_value"].equals(one_thread["values"]["mc_value"])
