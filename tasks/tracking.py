"""MLflow tracking and model registry: the only module that imports mlflow.

Every valuation is one MLflow run (params, metrics, per-epoch curves, value tables,
figures) whose valuation network is logged as a pyfunc model over *raw* columns and
registered under one name. The alias ``champion`` moves to a new version only when the
run passed its quality gate (network beats the Monte Carlo averages on held-out
samples), so scoring always uses the last network that earned it.

The default backend is an SQLite file next to the DuckDB store (nothing to start) with
artifacts in ``<store>/mlartifacts``; ``$MLFLOW_TRACKING_URI`` points it elsewhere.
Functions take the URI explicitly and restore MLflow's process-wide URI afterwards,
because ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models.signature import ModelSignature  # noqa: E402
from mlflow.protos.databricks_pb2 import (  # noqa: E402
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.types.schema import ColSpec, Schema  # noqa: E402

from amortval.errors import ModelNotFoundError  # noqa: E402
from amortval.models.valuation_model import ValuationModel  # noqa: E402

DEFAULT_EXPERIMENT = "amortval"
DEFAULT_MODEL_NAME = "amortval-valuation-net"
CHAMPION = "champion"
MODEL_ARTIFACT = "valuation_model"
HISTORY_KEYS = ("train_mse", "heldout_mse")
PIP_REQUIREMENTS = ["torch==2.13.*", "polars", "pyarrow", "pandas", "numpy"]

for _name in ("mlflow", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# The logged model is "models from code": this file is stored with the model and run
# on load, so nothing is pickled and loading only needs amortval importable.
_MODEL_CODE = """\
from mlflow.models import set_model

from amortval.tasks.tracking import ValuationPyfunc

set_model(ValuationPyfunc())
"""

_ALREADY_EXISTS = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)
_DOES_NOT_EXIST = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


@dataclass
class LoggedRun:
    run_id: str
    model_uri: str        # models:/<name>/<version>: stable, unlike the alias
    model_version: str
    alias_set: bool       # True when this version became the champion


def tracking_uri(store_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an SQLite file inside the store directory."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    return f"sqlite:///{(Path(store_dir).resolve() / 'mlflow.db').as_posix()}"


def init_tracking(uri: str, store_dir: str | Path | None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create (or migrate) the backend once and return the experiment id.

    Call before any parallel work: a fresh SQLite database is migrated by the first
    client that opens it, and concurrent first opens race. Idempotent; restores a
    deleted experiment. For local backends the experiment's artifacts go to
    ``<store_dir>/mlartifacts`` so a store directory is self-contained; a remote
    server keeps its own artifact policy.
    """
    sqlite_path = _sqlite_path(uri)
    if sqlite_path is not None and not sqlite_path.exists():
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        _create_sqlite_atomically(sqlite_path)
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if store_dir is not None and urlparse(uri).scheme in ("sqlite", "file", ""):
            location = (Path(store_dir).resolve() / "mlartifacts").as_uri()
        try:
            return client.create_experiment(experiment, artifact_location=location)
        except MlflowException as error:
            if error.error_code != _ALREADY_EXISTS:
                raise
            found = client.get_experiment_by_name(experiment)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _create_sqlite_atomically(path: Path) -> None:
    """Create a fully migrated SQLite tracking database at ``path``, or leave what is there.

    MLflow migrates a new SQLite file in place, dozens of DDL steps SQLite cannot roll
    back; a run killed in the middle leaves a file every later run fails to open
    ("table ... already exists"). So migrate a private file and hard-link it into place:
    the link is atomic and fails if another process got there first, so ``path`` only
    ever names a complete database. A killed attempt leaves only its private file,
    removed by the next attempt once its process is gone.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f".{path.name}.*.init"):
        pid = stale.name.split(".")[-3]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)
    # A fresh name per attempt: MLflow caches an engine per URI for the process's life.
    private = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.init")
    try:
        store = SqlAlchemyStore(f"sqlite:///{private.as_posix()}", (path.parent / "mlartifacts").as_uri())
        store.engine.dispose()
        try:
            os.link(private, path)
        except FileExistsError:
            pass
    finally:
        private.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ValuationPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc adapter: raw rows (features + label) -> column ``value``.

    Logged as code (``_MODEL_CODE``), never pickled: the network and encoder live in
    the artifact directory written by ``ValuationModel.save`` and are loaded in
    ``load_context``. Loading needs ``amortval`` importable.
    """

    def __init__(self) -> None:
        self.model: ValuationModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = ValuationModel.load(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.model is None:
            raise RuntimeError("ValuationPyfunc used before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        values = np.asarray(self.model.predict(frame), dtype=np.float64)
        return pd.DataFrame({"value": values}, index=frame.index)


def model_signature(model: ValuationModel) -> ModelSignature:
    """Inputs: the raw columns with the encoder's types; output: ``value`` (double)."""
    inputs = Schema([ColSpec(kind, column) for column, kind in model.encoder.input_schema()])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "value")]))


def log_valuation_run(
    *,
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: list[dict],
    tables: Mapping[str, pl.DataFrame],
    figures: Mapping[str, Figure],
    model: ValuationModel,
    input_example: pd.DataFrame,
    registered_name: str,
    gate_passed: bool,
    tags: Mapping[str, Any],
) -> LoggedRun:
    """Log one valuation as an MLflow run and register its network.

    Artifacts: ``tables/<name>.parquet``, ``figures/<name>.png`` and the pyfunc model
    ``valuation_model``. Nested params are flattened (``amortization.lr``); only scalar
    metrics are logged; ``history`` gives per-epoch ``train_mse``/``heldout_mse`` with
    step = epoch. The new version is tagged with every ``gate_*`` metric; the
    ``champion`` alias moves to it only if ``gate_passed``. Figures are cleared after
    logging (they are consumed).
    """
    experiment_id = _experiment_id(uri, experiment)
    client = _client(uri)
    scalars = _scalar_metrics(metrics)
    run_tags = {str(k): str(v) for k, v in tags.items()} | {"gate_passed": str(bool(gate_passed))}
    with _quiet(), _using(uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                                 tags=run_tags) as run:
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        epoch_metrics = [Metric(key, float(row[key]), now, int(row["epoch"]))
                         for row in history for key in HISTORY_KEYS if row.get(key) is not None]
        client.log_batch(run_id, params=[], metrics=[Metric(k, v, now, 0) for k, v in scalars.items()]
                         + epoch_metrics)
        mlflow.log_params({k: _param_text(v) for k, v in flatten_params(params).items()})
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
            code_file.write_text(_MODEL_CODE)
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=str(code_file),
                artifacts={MODEL_ARTIFACT: str(model_dir)},
                signature=model_signature(model),
                input_example=input_example,
                pip_requirements=PIP_REQUIREMENTS,
            )
        version = _register(client, registered_name, info, run_id,
                            {k: str(v) for k, v in scalars.items() if k.startswith("gate_")}
                            | {"gate_passed": str(bool(gate_passed))})
        if gate_passed:
            client.set_registered_model_alias(registered_name, CHAMPION, version)
    return LoggedRun(run_id=run_id, model_uri=f"models:/{registered_name}/{version}",
                     model_version=version, alias_set=bool(gate_passed))


def load_registered_model(uri: str, name: str, alias: str = CHAMPION) -> tuple[ValuationModel, str, str]:
    """Load ``models:/<name>@<alias>`` -> (model, ``models:/<name>/<version>``, version).

    The alias is resolved once and the exact version loaded, so the URI returned is the
    one that scored. Raises ``ModelNotFoundError`` (naming model, alias, backend and
    the versions that do exist) when there is nothing to load; never creates a database.
    """
    sqlite_path = _sqlite_path(uri)
    if sqlite_path is not None and not sqlite_path.exists():
        raise ModelNotFoundError(
            f"no MLflow database at {sqlite_path}: no valuation has run against this store; "
            "run `amortval value` first")
    client = _client(uri)
    with _quiet():
        try:
            registered = client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != _DOES_NOT_EXIST:
                raise
            raise ModelNotFoundError(
                f"no registered model '{name}' in {uri}: no valuation has run against this "
                "tracking backend; run `amortval value` first") from None
        try:
            version = client.get_model_version_by_alias(name, alias).version
        except MlflowException:
            aliases: dict[str, list[str]] = {}
            for other, number in (registered.aliases or {}).items():
                aliases.setdefault(str(number), []).append(other)
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            listing = ", ".join(
                f"{v}" + (f" (aliases: {', '.join(sorted(aliases[str(v)]))})" if str(v) in aliases else "")
                for v in versions) or "none"
            raise ModelNotFoundError(
                f"no version of '{name}' has alias '{alias}' in {uri}: the last valuation run's "
                f"quality gate did not pass or no valuation has run; run `amortval value` first "
                f"(existing versions: {listing})") from None
        model_uri = f"models:/{name}/{version}"
        with _using(uri):
            loaded = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
    return loaded.unwrap_python_model().model, model_uri, str(version)


def log_curation_run(
    *,
    uri: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    table: pl.DataFrame | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
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
    with _quiet(), _using(uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                                 tags=run_tags) as run:
        mlflow.log_params({k: _param_text(v) for k, v in flatten_params(params).items()})
        mlflow.log_metrics(_scalar_metrics(metrics))
        if table is not None:
            with tempfile.TemporaryDirectory(prefix="amortval-mlflow-") as scratch:
                path = Path(scratch) / f"{table_name}.parquet"
                table.write_parquet(path)
                mlflow.log_artifact(str(path), artifact_path="tables")
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


def _register(client: MlflowClient, name: str, info: Any, run_id: str, tags: dict[str, str]) -> str:
    """Register through the client: ``mlflow.register_model`` prints to stderr."""
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != _ALREADY_EXISTS:
            raise
    created = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                          tags=tags, model_id=info.model_id)
    return str(created.version)


def _experiment_id(uri: str, experiment: str) -> str:
    sqlite_path = _sqlite_path(uri)
    return init_tracking(uri, sqlite_path.parent if sqlite_path is not None else None, experiment)


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


@contextmanager
def _using(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri``, then put the environment back as it was."""
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide MLflow's advisory warnings (requirement hints, pickling notes) during logging."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*(mlflow|MLflow).*")
        yield
