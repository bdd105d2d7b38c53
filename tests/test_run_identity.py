"""Issue 8's user steps, end to end on tiny data with real Prefect, DuckDB and MLflow runs:
budgets extend, new networks cost no fits, one model per dataset, moved stores work."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys

import polars as pl
import pytest
from mlflow import MlflowClient

from amortval.data.demo import make_demo
from amortval.data.store import ValuationStore
from amortval.errors import ConfigError, ModelNotFoundError, SchemaMismatchError
from amortval.flows.cli import main
from amortval.flows.curation import curate_dataset
from valuing import value

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_TRAIN = 300  # a network that beats a constant needs a few hundred points
FAST = dict(target="label", seed=0, epochs=2, pretrain_epochs=2, batch_fits=100, mislabeled_column="flipped")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Dataset A (the demo's columns) and dataset B (other columns), each with new rows."""
    root = tmp_path_factory.mktemp("datasets")
    a = make_demo(seed=3, n_train=N_TRAIN, n_valid=30, n_new=20)
    a.train.write_parquet(root / "loans.parquet")
    a.valid.drop("flipped").write_parquet(root / "loans_valid.parquet")
    a.new.write_parquet(root / "loans_new.parquet")
    b = make_demo(seed=4, n_train=N_TRAIN, n_valid=30, n_new=20)
    renamed = {c: f"b_{c}" for c in a.train.columns if c not in ("label", "flipped")}
    b.train.rename(renamed).write_parquet(root / "claims.parquet")
    b.valid.drop("flipped").rename(renamed).write_parquet(root / "claims_valid.parquet")
    b.new.rename(renamed).write_parquet(root / "claims_new.parquet")
    return root


def options(files, name: str, store, **extra) -> dict:
    return dict(data=str(files / f"{name}.parquet"), valid=str(files / f"{name}_valid.parquet"),
                store=str(store), **{**FAST, **extra})


def fits_of(store, sampling_id: str) -> int:
    with ValuationStore(store / "amortval.duckdb") as db:
        return db.fit_count(sampling_id)


def test_a_larger_budget_computes_only_the_new_draws_and_equals_a_fresh_run(files, tmp_path, figures):
    ten = value(**options(files, "loans", tmp_path / "a", samples=3))
    twenty = value(**options(files, "loans", tmp_path / "a", samples=6))
    fresh = value(**options(files, "loans", tmp_path / "b", samples=6))
    assert twenty["sampling_id"] == ten["sampling_id"] and twenty["run_id"] != ten["run_id"]
    assert ten["new_model_fits"] + twenty["new_model_fits"] == fresh["new_model_fits"] == fresh["model_fits"]
    assert twenty["new_model_fits"] == fresh["model_fits"] - ten["model_fits"] > 0
    with ValuationStore(tmp_path / "a" / "amortval.duckdb") as db:
        assert db.sample_count(ten["sampling_id"]) == N_TRAIN * 6, "the store holds 6 samples per point, not 9"
    assert pl.read_parquet(twenty["values_path"]).equals(pl.read_parquet(fresh["values_path"]))
    figures(f"budget extension ({N_TRAIN} points)", f"--samples 3 then 6: {int(ten['new_model_fits'])} + "
            f"{int(twenty['new_model_fits'])} fits; fresh 6: {int(fresh['new_model_fits'])} fits; values identical")


def test_a_new_network_costs_no_fits_and_is_a_new_run_and_version(files, tmp_path):
    first = value(**options(files, "loans", tmp_path, samples=4))
    again = value(**options(files, "loans", tmp_path, samples=4, epochs=3))
    assert again["sampling_id"] == first["sampling_id"] and again["run_id"] != first["run_id"]
    assert again["new_model_fits"] == 0 and again["model_fits"] == first["model_fits"]
    assert again["mlflow_run_id"] != first["mlflow_run_id"]
    assert int(again["model_version"]) == int(first["model_version"]) + 1
    # The same through `amortval amortize RUN_ID`, in-process as a user types it.
    assert main(["amortize", first["run_id"], "--store", str(tmp_path), "--hidden", "16"]) == 0
    with ValuationStore(tmp_path / "amortval.duckdb") as db:
        runs = db.runs()
    assert runs.height == 3 and runs.filter(pl.col("run_id") != first["run_id"])["new_fits"].to_list() == [0, 0]
    # amortize never fits: a budget the store does not hold is refused before any work
    with pytest.raises(ConfigError, match="not stored"):
        value(amortize_only=True, **options(files, "loans", tmp_path, samples=9))


def test_two_datasets_in_one_store_have_their_own_models_and_champions(files, tmp_path):
    loans = value(**options(files, "loans", tmp_path, samples=4))
    claims = value(**options(files, "claims", tmp_path, samples=4))
    assert (loans["model_name"], claims["model_name"]) == ("amortval-loans", "amortval-claims")
    client = MlflowClient(loans["mlflow_uri"])
    before = str(client.get_model_version_by_alias("amortval-loans", "champion").version)
    value(**options(files, "claims", tmp_path, samples=4, epochs=3))  # a second claims network
    assert str(client.get_model_version_by_alias("amortval-loans", "champion").version) == before
    assert client.get_experiment(client.get_run(claims["mlflow_run_id"]).info.experiment_id).name == "amortval-claims"
    curated = curate_dataset(data=str(files / "loans_new.parquet"), store=str(tmp_path), mislabeled_column="flipped")
    assert curated["model_name"] == "amortval-loans" and curated["model_version"] == before
    pinned = curate_dataset(data=str(files / "claims_new.parquet"), store=str(tmp_path),
                            mislabeled_column="flipped", model_version="1")
    assert (pinned["model_name"], pinned["model_version"]) == ("amortval-claims", "1")
    odd = tmp_path / "odd.parquet"
    pl.read_parquet(files / "loans_new.parquet").drop("flipped").rename({"label": "target"}).write_parquet(odd)
    with pytest.raises(ModelNotFoundError, match=r"their columns: (?=.*amortval-claims: b_income)(?=.*amortval-loans: income)"):
        curate_dataset(data=str(odd), store=str(tmp_path))
    with pytest.raises(SchemaMismatchError, match="missing columns"):  # named model, other columns
        curate_dataset(data=str(files / "claims_new.parquet"), store=str(tmp_path), model_name="amortval-loans",
                       mislabeled_column="flipped")


def test_renamed_columns_or_other_label_types_are_another_dataset(files, tmp_path):
    frame = pl.read_parquet(files / "loans.parquet")
    frame.rename({"income": "salary"}).write_parquet(tmp_path / "loans.parquet")
    shutil.copy(files / "loans_valid.parquet", tmp_path / "loans_valid.parquet")
    pl.read_parquet(files / "loans_valid.parquet").rename({"income": "salary"}).write_parquet(
        tmp_path / "loans_valid.parquet")
    original = value(**options(files, "loans", tmp_path / "store", samples=2))
    renamed = value(**options(tmp_path, "loans", tmp_path / "store", samples=2))
    assert renamed["dataset_id"] != original["dataset_id"] and renamed["run_id"] != original["run_id"]
    assert renamed["new_model_fits"] > 0


def test_a_moved_store_keeps_working_and_model_name_is_honoured(files, tmp_path):
    first = value(**options(files, "loans", tmp_path / "store", samples=3))
    shutil.move(tmp_path / "store", tmp_path / "moved")
    curated = curate_dataset(data=str(files / "loans_new.parquet"), store=str(tmp_path / "moved"),
                             mislabeled_column="flipped")
    assert curated["rows_scored"] == 20
    again = value(**options(files, "loans", tmp_path / "moved", samples=3, model_name="loans-custom"))
    assert again["run_id"] == first["run_id"] and again["new_model_fits"] == first["new_model_fits"]
    assert again["model_name"] == "loans-custom" and again["model_version"] == "1"
    client = MlflowClient(again["mlflow_uri"])
    assert client.get_model_version("loans-custom", "1").run_id == first["mlflow_run_id"]
    assert main(["show", first["run_id"][:20], "--store", str(tmp_path / "moved")]) == 0
    assert main(["runs", "--store", str(tmp_path / "moved")]) == 0


def test_a_deleted_tracking_database_is_said_and_the_run_relogged_without_fits(files, tmp_path, cli_environment):
    """In a new process, as a user runs it (MLflow caches its database engine per process)."""
    first = value(**options(files, "loans", tmp_path, samples=3))
    (tmp_path / "mlflow.db").unlink()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options(files, "loans", tmp_path, samples=3).items()]
    done = subprocess.run([sys.executable, "-m", "amortval.flows.cli", "value", *flags], env=cli_environment,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "re-amortizing from the stored samples" in done.stdout + done.stderr
    new_run = re.search(r"MLflow +run (\w+)", done.stdout).group(1)
    assert new_run != first["mlflow_run_id"]
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        assert con.execute("SELECT status FROM runs WHERE run_uuid = ?", [new_run]).fetchone() == ("FINISHED",)
    with ValuationStore(tmp_path / "amortval.duckdb") as db:
        assert db.fit_count(first["sampling_id"]) == first["model_fits"], "no new fits"
