"""MLflow tracking and registry against a temporary SQLite store; figure structure.

One module-scoped fixture logs two valuation runs of a tiny real model (the first
passes the quality gate, the second does not), because importing MLflow and migrating
a fresh database dominate the cost.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from amortval.data.encoding import TabularEncoder
from amortval.errors import ModelNotFoundError
from amortval.models.valuation_model import ValuationModel
from amortval.models.valuation_net import ValuationEnsemble, ValuationNet
from amortval.tasks import plots, tracking
from amortval.tasks.tracking.backend import using

NAME = EXPERIMENT = "amortval-tiny"
HISTORY = [{"epoch": e, "train_mse": 1.0 / (e + 1), "heldout_mse": 1.2 / (e + 1)} for e in range(4)]


def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({
        "x": rng.normal(size=20),
        "region": ["north", "south", "east", "west"] * 5,
        "label": ["yes", "no"] * 10,
    })


def _model(frame: pl.DataFrame) -> ValuationModel:
    encoder = TabularEncoder.fit(frame, "label")
    net = ValuationEnsemble([ValuationNet(encoder.n_encoded, encoder.n_classes, hidden=8, layers=1,
                                          generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    return ValuationModel(encoder, net, target_scale=0.05)


def _log(uri: str, model: ValuationModel, frame: pl.DataFrame, *, gate_passed: bool,
         name: str, tags: dict | None = None) -> SimpleNamespace:
    values = model.predict(frame)
    mislabeled = np.arange(20) % 7 == 0
    figures = {
        "value_distribution": plots.value_distribution_figure(values, frame["label"], mislabeled),
        "training_curve": plots.training_curve_figure(HISTORY, best_epoch=2),
    }
    metrics = {"gate_mse_network": 0.1 if gate_passed else 0.3, "gate_mse_monte_carlo": 0.2,
               "fit_count": 120, "learner": "not a number"}
    logged = tracking.log_valuation_run(
        uri=uri, experiment=EXPERIMENT, run_name=name,
        params={"seed": 0, "learner": "logreg", "amortization": {"lr": 0.001, "epochs": 4}},
        metrics=metrics,
        history=HISTORY,
        tables={"values": pl.DataFrame({"point": np.arange(20), "value": values})},
        figures=figures, model=model, input_example=frame.head(5).to_pandas(),
        tags=tags or {"dataset": "tiny"},
    )
    registered = tracking.register(uri, NAME, model_uri=logged.model_uri, run_id=logged.run_id,
                                   model_id=logged.model_id, gate_passed=gate_passed,
                                   tags={k: str(v) for k, v in metrics.items() if k.startswith("gate_")})
    return SimpleNamespace(run_id=logged.run_id, model_version=registered.version, alias_set=registered.alias_set,
                           model_uri=registered.uri)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = tracking.tracking_uri(store)
        tracking.init_tracking(uri, store, EXPERIMENT)
        frame = _frame()
        model = _model(frame)
        first = _log(uri, model, frame, gate_passed=True, name="passes")
        second = _log(uri, model, frame, gate_passed=False, name="fails")
        yield {"uri": uri, "store": store, "frame": frame, "model": model,
               "first": first, "second": second, "client": MlflowClient(uri, uri)}


def test_tracking_uri_defaults_to_sqlite_in_store_and_env_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_init_tracking_is_idempotent_and_keeps_artifacts_in_store(logged):
    experiment_id = tracking.init_tracking(logged["uri"], logged["store"], EXPERIMENT)
    assert tracking.init_tracking(logged["uri"], logged["store"], EXPERIMENT) == experiment_id
    experiment = logged["client"].get_experiment(experiment_id)
    assert experiment.artifact_location == (logged["store"] / "mlartifacts").resolve().as_uri()
    assert (logged["store"] / "mlartifacts").is_dir()


def test_local_run_active_answers_from_sqlite_and_leaves_the_rest_to_mlflow(logged):
    uri, client = logged["uri"], logged["client"]
    assert tracking.local_run_active(uri, logged["first"].run_id)
    assert not tracking.local_run_active(uri, "0" * 32)
    assert not tracking.local_run_active(uri, None)
    assert not tracking.local_run_active("http://127.0.0.1:9", logged["first"].run_id)  # not settled: MLflow asks
    experiment = client.create_experiment("amortval-deleted-later")
    deleted_run, kept_run = (client.create_run(experiment).info.run_id for _ in range(2))
    client.delete_run(deleted_run)
    assert not tracking.local_run_active(uri, deleted_run)
    assert tracking.local_run_active(uri, kept_run)
    client.delete_experiment(experiment)  # init_tracking restores it: that path needs MLflow
    assert not tracking.local_run_active(uri, kept_run)


def test_local_run_active_relocates_a_moved_store_like_init_tracking(logged, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(logged["store"], moved)
    uri = tracking.tracking_uri(moved) if "MLFLOW_TRACKING_URI" not in os.environ else None
    if uri is None:
        pytest.skip("MLFLOW_TRACKING_URI points elsewhere")
    assert tracking.local_run_active(uri, logged["first"].run_id)
    with closing(sqlite3.connect(moved / "mlflow.db")) as con:
        (location,) = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?",
                                  (logged["first"].run_id,)).fetchone()
    assert location.startswith((moved / "mlartifacts").resolve().as_uri()), location


def test_error_code_names_are_mlflow_s():
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

    from amortval.tasks.tracking.backend import ALREADY_EXISTS, DOES_NOT_EXIST

    assert (ALREADY_EXISTS, DOES_NOT_EXIST) == (ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                                                ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


def test_re_reporting_a_finished_run_loads_no_mlflow_torch_matplotlib_or_scipy(logged):
    """What `amortval value` imports when the run is complete (api.run -> completed_summary):
    those four cost ~4 s of the re-report's ~5 s before they were loaded on demand."""
    code = ("import sys\n"
            "from amortval.flows import cli\n"
            "from amortval import api\n"
            "from amortval.tasks import record, tracking\n"
            "from amortval.tasks.run_plan import plan_run, stored_status\n"
            "active = tracking.local_run_active(sys.argv[1], sys.argv[2])\n"
            "print(active, [m for m in ('mlflow', 'torch', 'matplotlib', 'scipy') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code, logged["uri"], logged["first"].run_id],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True []", done.stdout


def test_run_holds_params_metrics_curves_artifacts_and_version(logged):
    client, run_id = logged["client"], logged["first"].run_id
    run = client.get_run(run_id)
    assert run.data.params["amortization.lr"] == "0.001"
    assert run.data.params["learner"] == "logreg"
    assert run.data.metrics["gate_mse_network"] == pytest.approx(0.1)
    assert run.data.metrics["fit_count"] == 120
    assert "learner" not in run.data.metrics
    assert run.data.tags["dataset"] == "tiny"
    curve = client.get_metric_history(run_id, "heldout_mse")
    assert sorted(m.step for m in curve) == [0, 1, 2, 3]
    assert {m.step: m.value for m in curve}[1] == pytest.approx(0.6)
    artifacts = {a.path for a in client.list_artifacts(run_id, "tables")}
    artifacts |= {a.path for a in client.list_artifacts(run_id, "figures")}
    assert artifacts == {"tables/values.parquet", "figures/value_distribution.png",
                         "figures/training_curve.png"}
    local = client.download_artifacts(run_id, "tables/values.parquet", str(logged["store"]))
    assert pl.read_parquet(local)["value"].to_list() == pytest.approx(
        logged["model"].predict(logged["frame"]).tolist())
    version = client.get_model_version(NAME, "1")
    assert version.run_id == run_id
    assert float(version.tags["gate_mse_network"]) == pytest.approx(0.1)
    assert "fit_count" not in version.tags


def test_champion_moves_only_when_gate_passes(logged):
    first, second = logged["first"], logged["second"]
    assert (first.model_version, first.alias_set) == ("1", True)
    assert (second.model_version, second.alias_set) == ("2", False)
    assert first.model_uri == f"models:/{NAME}/1"
    client = logged["client"]
    assert client.get_model_version(NAME, "2").tags["gate_passed"] == "False"
    assert str(client.get_model_version_by_alias(NAME, tracking.CHAMPION).version) == "1"


def test_registered_model_reloads_and_predicts_identically(logged):
    model, model_uri, version = tracking.load_registered_model(logged["uri"], NAME)
    assert (model_uri, version) == (f"models:/{NAME}/1", "1")
    frame = logged["frame"]
    np.testing.assert_array_equal(model.predict(frame), logged["model"].predict(frame))
    assert model.encoder.input_schema() == logged["model"].encoder.input_schema()


def test_pyfunc_adapter_scores_raw_pandas_rows(logged):
    import mlflow.pyfunc

    frame = logged["frame"]
    with using(logged["uri"]):
        pyfunc = mlflow.pyfunc.load_model(logged["first"].model_uri)
    out = pyfunc.predict(frame.to_pandas())
    assert list(out.columns) == ["value"]
    np.testing.assert_array_equal(out["value"].to_numpy(), logged["model"].predict(frame))
    schema = pyfunc.metadata.get_input_schema()
    assert schema.input_names() == ["x", "region", "label"]


def test_pyfunc_refuses_bad_rows_with_an_invalid_parameter_error(logged):
    """What a served model answers with: the scoring server puts an MlflowException's
    message in the response body and its code decides the status (400 here)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    with using(logged["uri"]):
        pyfunc = mlflow.pyfunc.load_model(logged["first"].model_uri)
    rows = logged["frame"].head(3).with_columns(pl.Series("label", ["yes", "maybe", "no"])).to_pandas()
    with pytest.raises(MlflowException, match=r"target column 'label' .*'maybe'") as raised:
        pyfunc.predict(rows)
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE" and raised.value.get_http_status_code() == 400


def test_missing_alias_or_model_raises_model_not_found(logged, tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"'{NAME}' has alias 'staging'.*versions: 1 \(aliases: champion\), 2"):
        tracking.load_registered_model(logged["uri"], NAME, alias="staging")
    with pytest.raises(ModelNotFoundError, match="no registered model 'other-net'"):
        tracking.load_registered_model(logged["uri"], "other-net")
    fresh = tracking.tracking_uri(tmp_path)
    with pytest.raises(ModelNotFoundError, match="amortval value"):
        tracking.load_registered_model(fresh, NAME)
    assert not (tmp_path / "mlflow.db").exists()


def test_curation_run_logs_rule_counts_and_table(logged):
    table = pl.DataFrame({"row": [0, 1, 2], "value": [0.1, -0.2, 0.3], "kept": [True, False, True]})
    run_id = tracking.log_curation_run(
        uri=logged["uri"], experiment=EXPERIMENT, run_name="curate",
        model_uri=logged["first"].model_uri, params={"threshold": 0.0, "model_version": "1"},
        metrics={"rows_scored": 3, "rows_kept": 2, "rows_dropped": 1}, table=table)
    run = logged["client"].get_run(run_id)
    assert run.data.params == {"threshold": "0.0", "model_version": "1"}
    assert run.data.metrics["rows_dropped"] == 1
    assert run.data.tags["model_uri"] == f"models:/{NAME}/1"
    assert [a.path for a in logged["client"].list_artifacts(run_id, "tables")] == ["tables/curated.parquet"]
    bare = tracking.log_curation_run(uri=logged["uri"], experiment=EXPERIMENT, params={"fraction": 0.1},
                                     metrics={"dropped_mislabeled_precision": float("nan")})
    assert np.isnan(logged["client"].get_run(bare).data.metrics["dropped_mislabeled_precision"])


def test_logging_leaves_tracking_env_untouched(logged):
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "DO_NOT_TRACK" in os.environ and "MLFLOW_DISABLE_TELEMETRY" in os.environ


def test_figures_have_expected_structure():
    rng = np.random.default_rng(1)
    values = rng.normal(size=30)
    classes = np.array(["a", "b", "c"])[np.arange(30) % 3]
    flipped = np.arange(30) % 5 == 0

    distribution = plots.value_distribution_figure(values, classes, flipped)
    assert len(distribution.axes) == 3
    assert all(len(ax.containers) == 2 for ax in distribution.axes)
    assert len(plots.value_distribution_figure(values, classes).axes[0].containers) == 1

    stderr = list(np.abs(rng.normal(size=30)) * 0.1)
    stderr[0] = None
    scatter = plots.network_vs_monte_carlo_figure(values, stderr, values + 0.1, flipped)
    (ax,) = scatter.axes
    assert "Pearson r = 1.000" in ax.get_title()
    assert len(ax.containers) == 2 and len(ax.get_legend().get_texts()) == 3

    curve = plots.training_curve_figure(HISTORY, best_epoch=2)
    (ax,) = curve.axes
    assert len(ax.lines) == 3
    assert ax.get_xlabel() == "epoch"
    plots.close_figures([distribution, scatter, curve])
    assert not distribution.axes


def test_a_migration_killed_midway_leaves_no_database_behind(tmp_path, monkeypatch):
    """MLflow migrates a fresh SQLite file with DDL SQLite cannot roll back; a run killed
    in the middle used to leave a file every later run failed on ('table ... already
    exists'). The database is now built aside and linked in only when complete."""
    import mlflow.store.db.utils as db_utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri(tmp_path)
    real = db_utils._initialize_tables

    def killed_midway(engine):
        with engine.begin() as con:  # the first of many migration steps lands...
            con.exec_driver_sql("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
        raise KeyboardInterrupt  # ...then the process dies (SIGKILL, minus the process)

    monkeypatch.setattr(db_utils, "_initialize_tables", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        tracking.init_tracking(uri, tmp_path, EXPERIMENT)
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setattr(db_utils, "_initialize_tables", real)
    experiment_id = tracking.init_tracking(uri, tmp_path, EXPERIMENT)
    assert MlflowClient(uri, uri).get_experiment(experiment_id).name == EXPERIMENT
    assert not list(tmp_path.glob(".mlflow.db.*")), "no private migration file left behind"


def test_a_run_killed_while_logging_is_ended_killed_by_the_re_run(logged, monkeypatch):
    """SIGKILL while logging leaves the MLflow run RUNNING (nothing in the process can end it);
    the re-run of the same valuation ends it KILLED before logging its own. Other valuations'
    runs are left alone."""
    client, uri = logged["client"], logged["uri"]
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    killed = client.create_run(experiment_id, tags={"amortval.run_id": "valuation-a"}).info.run_id
    other = client.create_run(experiment_id, tags={"amortval.run_id": "valuation-b"}).info.run_id
    _log(uri, logged["model"], logged["frame"], gate_passed=False, name="re-run",
         tags={"amortval.run_id": "valuation-a"})
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"
    client.set_terminated(other, status="FINISHED")


def test_a_signal_while_logging_ends_the_run_killed_not_failed(logged, monkeypatch):
    """SIGTERM/SIGINT reach the logging as ``Interrupted`` (flows/interrupt.py): the run is
    KILLED, as MLflow's UI says of a stopped run; no run is left RUNNING."""
    import signal

    import mlflow

    from amortval.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    client = logged["client"]
    monkeypatch.setattr(mlflow, "log_figure", interrupted)
    with pytest.raises(Interrupted):
        _log(logged["uri"], logged["model"], logged["frame"], gate_passed=False, name="stopped",
             tags={"amortval.run_id": "valuation-c"})
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment_id], filter_string="tags.`amortval.run_id` = 'valuation-c'")
    assert run.info.status == "KILLED"


def test_a_full_disk_while_logging_is_a_storage_error_naming_the_database(logged, monkeypatch):
    """SQLite's "database or disk is full", as MLflow raises it (wrapped twice), is one line
    naming the tracking database; the run is ended FAILED, not left RUNNING."""
    import sqlite3

    import mlflow
    from mlflow.exceptions import MlflowException

    from amortval.errors import StorageError

    def full(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as error:
            raise MlflowException(f"(sqlite3.OperationalError) {error}") from error

    client = logged["client"]
    monkeypatch.setattr(mlflow, "log_figure", full)
    with pytest.raises(StorageError, match=r"cannot write .*mlflow.db: the disk is full"):
        _log(logged["uri"], logged["model"], logged["frame"], gate_passed=False, name="full",
             tags={"amortval.run_id": "valuation-d"})
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment_id], filter_string="tags.`amortval.run_id` = 'valuation-d'")
    assert run.info.status == "FAILED"
