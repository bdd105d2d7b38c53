"""MLflow runs: one per valuation (and per curation), with its parameters, metrics and files.

Every valuation is one MLflow run in its dataset's experiment (params, metrics,
per-epoch curves, value tables, figures) whose valuation network is logged as a pyfunc
model over *raw* columns (``pyfunc.py``) and registered under the dataset's model name
(``registry.py``).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl
from matplotlib.figure import Figure
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from amortval.errors import storage_errors
from amortval.models.valuation_model import ValuationModel
from amortval.tasks.tracking.backend import DOES_NOT_EXIST, client, init_tracking, quiet, sqlite_path, using
from amortval.tasks.tracking.pyfunc import MODEL_ARTIFACT, MODEL_CODE, PIP_REQUIREMENTS, model_signature

HISTORY_KEYS = ("train_mse", "heldout_mse")
RUN_ID_TAG = "amortval.run_id"  # the valuation's run id: a re-run logs under the same one


@dataclass(frozen=True)
class TrainingTable:
    """The valued table as MLflow's dataset input: rows, where they came from, name, label."""

    frame: pd.DataFrame
    source: str
    name: str
    target: str


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    model_uri: str  # the logged model (``models:/m-...``), registered under any name later
    model_id: str | None


def log_valuation_run(
    *,
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: list[dict],
    tables: Mapping[str, pl.DataFrame],
    curves: Mapping[str, list[tuple[int, float]]] | None = None,
    figures: Mapping[str, Figure],
    model: ValuationModel,
    input_example: pd.DataFrame,
    tags: Mapping[str, Any],
    started_at: float | None = None,
    dataset: TrainingTable | None = None,
    summary: str | None = None,
) -> LoggedRun:
    """Log one valuation as an MLflow run (registration is ``registry.register``).

    Artifacts: ``tables/<name>.parquet``, ``figures/<name>.png`` and the pyfunc model
    ``valuation_model``. Nested params are flattened (``amortization.lr``); only scalar
    metrics are logged; ``history`` gives per-epoch ``train_mse``/``heldout_mse`` with
    step = epoch; ``curves`` more metric curves as (step, value) pairs (the rounds'
    estimated error, step = samples per point). ``started_at`` (a ``time.time()``) makes the run's duration cover the
    whole valuation, not only the logging. ``dataset`` is logged as the run's training
    input (the UI's Dataset column), ``summary`` as ``summary.md`` (Markdown that links
    the figures). Figures are cleared after logging (consumed). Runs of the same
    valuation (``tags[RUN_ID_TAG]``) left RUNNING by a killed process are ended first
    (``end_stale_runs``); a run interrupted here ends KILLED, a failed one FAILED.
    """
    experiment_id = _experiment_id(uri, experiment)
    mlflow_client = client(uri)
    scalars = _scalar_metrics(metrics)
    run_tags = {str(k): str(v) for k, v in tags.items()}
    start_ms = int((started_at or time.time()) * 1000)
    if RUN_ID_TAG in run_tags:
        end_stale_runs(uri, experiment_id, run_tags[RUN_ID_TAG])
    with quiet(), using(uri), storage_errors(sqlite_path(uri) or uri):
        created = mlflow_client.create_run(experiment_id, start_time=start_ms, tags=run_tags, run_name=run_name)
        run_id = created.info.run_id
        try:
            with mlflow.start_run(run_id=run_id):
                now = int(time.time() * 1000)
                epoch_metrics = [Metric(key, float(row[key]), now, int(row["epoch"]))
                                 for row in history for key in HISTORY_KEYS if row.get(key) is not None]
                epoch_metrics += [Metric(key, float(value), now, int(step)) for key, points in (curves or {}).items()
                                  for step, value in points if math.isfinite(value)]
                mlflow_client.log_batch(run_id, params=[], metrics=[Metric(k, v, now, 0) for k, v in scalars.items()]
                                        + epoch_metrics)
                mlflow.log_params({k: _param_text(v) for k, v in flatten_params(params).items()})
                if dataset is not None:
                    mlflow.log_input(mlflow.data.from_pandas(dataset.frame, source=dataset.source, name=dataset.name,
                                                             targets=dataset.target), context="training")
                if summary is not None:
                    mlflow.log_text(summary, "summary.md")
                with tempfile.TemporaryDirectory(prefix="amortval-mlflow-") as scratch:
                    if tables:
                        table_dir = Path(scratch) / "tables"
                        table_dir.mkdir()
                        for name, table in tables.items():
                            table.write_parquet(table_dir / f"{name}.parquet")
                        mlflow.log_artifacts(str(table_dir), artifact_path="tables")
                    for name, figure in figures.items():
                        mlflow.log_figure(figure, f"figures/{name}.png")
                        figure.clear()
                    model_dir = Path(scratch) / MODEL_ARTIFACT
                    model.save(model_dir)
                    code_file = Path(scratch) / "valuation_pyfunc.py"
                    code_file.write_text(MODEL_CODE)
                    info = mlflow.pyfunc.log_model(
                        name=MODEL_ARTIFACT,
                        python_model=str(code_file),
                        artifacts={MODEL_ARTIFACT: str(model_dir)},
                        signature=model_signature(model),
                        input_example=input_example,
                        pip_requirements=PIP_REQUIREMENTS,
                    )
        except BaseException as error:
            # Ctrl-C or SIGTERM (errors.Interrupted is a KeyboardInterrupt) ends the run KILLED, as
            # MLflow's UI means it; a crash FAILED.
            mlflow_client.set_terminated(run_id, status="KILLED" if isinstance(error, KeyboardInterrupt)
                                         else "FAILED")
            raise
    return LoggedRun(run_id=run_id, model_uri=info.model_uri, model_id=getattr(info, "model_id", None))


def end_stale_runs(uri: str, experiment_id: str, valuation_run_id: str) -> list[str]:
    """Mark KILLED the MLflow runs of this valuation still RUNNING; their ids.

    A process killed while logging (SIGKILL, a lost machine) cannot end its MLflow run,
    which would show RUNNING forever next to the re-run's. Called by the re-run before it
    logs: the store's DuckDB lock admits one process per store, so no live process is
    logging this valuation into the store's own tracking database. (A tracking server
    shared by several stores could see two at once; their runs are told apart by run id.)
    """
    mlflow_client = client(uri)
    stale = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{valuation_run_id}' AND attributes.status = 'RUNNING'")
    for run in stale:
        mlflow_client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def run_exists(uri: str, run_id: str | None) -> bool:
    """True when the MLflow run is there (a deleted database or run makes it False)."""
    if not run_id:
        return False
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return False
    try:
        return client(uri).get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException as error:
        if error.error_code == DOES_NOT_EXIST:
            return False
        raise


def log_curation_run(
    *,
    uri: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    table: pl.DataFrame | None = None,
    experiment: str,
    run_name: str | None = None,
    model_uri: str | None = None,
    table_name: str = "curated",
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log one curation (scoring + filtering) as a small run; returns its run id.

    ``params`` holds the rule (threshold or fraction, model version), ``metrics`` the
    counts (rows scored, kept, dropped, optional mislabeled precision); the curated
    table goes to ``tables/<table_name>.parquet``; ``model_uri`` becomes a tag.
    """
    experiment_id = _experiment_id(uri, experiment)
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()} | {"amortval.kind": "curation"}
    if model_uri is not None:
        run_tags["model_uri"] = model_uri
    with quiet(), using(uri), storage_errors(sqlite_path(uri) or uri), \
            mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        try:
            mlflow.log_params({k: _param_text(v) for k, v in flatten_params(params).items()})
            mlflow.log_metrics(_scalar_metrics(metrics))
            if table is not None:
                with tempfile.TemporaryDirectory(prefix="amortval-mlflow-") as scratch:
                    path = Path(scratch) / f"{table_name}.parquet"
                    table.write_parquet(path)
                    mlflow.log_artifact(str(path), artifact_path="tables")
        except KeyboardInterrupt:  # MLflow's context would say FAILED
            mlflow.end_run("KILLED")
            raise
        return run.info.run_id


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"amortization": {"lr": 1e-3}}`` -> ``{"amortization.lr": 1e-3}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten_params(value, prefix=f"{name}.")
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.integer, np.floating, np.bool_))}


def _experiment_id(uri: str, experiment: str) -> str:
    db = sqlite_path(uri)
    return init_tracking(uri, db.parent if db is not None else None, experiment)
