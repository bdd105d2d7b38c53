"""The MLflow backend: where it is, creating it safely, and keeping a moved store working.

The default backend is an SQLite file inside the store folder (nothing to start), with
artifacts in ``<store>/mlartifacts``; ``$MLFLOW_TRACKING_URI`` points it elsewhere.
Functions take the URI explicitly and restore MLflow's process-wide URI afterwards,
because ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI``.

MLflow records artifact locations as absolute paths. A store folder moved or copied with
``mv``/``cp -r`` would keep pointing at the old place (reads fail, new runs write there),
so before each use the locations are resolved from the store: ``relocate`` rewrites the
old folder prefix to the current one in the store's own SQLite database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from amortval.errors import AmortvalError, storage_errors
from amortval.tasks.paths import TRACKING_FILE, tracking_tables

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# Before mlflow is first imported (by whichever function needs it): no telemetry.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ARTIFACTS = "mlartifacts"
# MLflow's error-code names (``ErrorCode.Name`` of its protobuf codes; a test checks them),
# spelled out so that this module loads without mlflow: only what talks to MLflow imports it.
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
# (table, column) pairs holding artifact locations in MLflow 3's SQL schema.
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("model_versions", "source"), ("model_versions", "storage_location"),
                     ("logged_models", "artifact_location"))

for _name in ("mlflow", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def tracking_uri(store_dir: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an SQLite file inside the store directory."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    return f"sqlite:///{(Path(store_dir).resolve() / TRACKING_FILE).as_posix()}"


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def init_tracking(uri: str, store_dir: str | Path | None, experiment: str) -> str:
    """Create (or migrate, or relocate) the backend once and return the experiment id.

    Call before any parallel work: a fresh SQLite database is migrated by the first
    client that opens it, and concurrent first opens race. Idempotent; restores a
    deleted experiment. For local backends the experiment's artifacts go to
    ``<store_dir>/mlartifacts`` so a store directory is self-contained; a remote
    server keeps its own artifact policy.
    """
    db = sqlite_path(uri)
    with storage_errors(db or uri):
        return _init_tracking(uri, db, store_dir, experiment)


def _init_tracking(uri: str, db: Path | None, store_dir: str | Path | None, experiment: str) -> str:
    from mlflow.exceptions import MlflowException

    if db is not None:
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            _create_sqlite_atomically(db)
        else:
            check_sqlite(db)
            relocate(db, db.parent)
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if store_dir is not None and urlparse(uri).scheme in ("sqlite", "file", ""):
            location = (Path(store_dir).resolve() / ARTIFACTS).as_uri()
        try:
            return mlflow_client.create_experiment(experiment, artifact_location=location)
        except MlflowException as error:
            if error.error_code != ALREADY_EXISTS:
                raise
            found = mlflow_client.get_experiment_by_name(experiment)
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


def local_run_active(uri: str, run_id: str | None) -> bool:
    """True when ``uri`` is a local SQLite database (checked and relocated as ``init_tracking``
    does) holding ``run_id`` active in an active experiment, read with sqlite3 alone.

    Re-reporting a finished run needs only this answer; MLflow's client would first import
    mlflow and build its SQLAlchemy store (~2.5 s together). False means "not settled here"
    (another backend, no database, a run or experiment missing or deleted): the caller goes
    through MLflow, which also repairs what it can (``init_tracking`` restores a deleted
    experiment).
    """
    db = sqlite_path(uri)
    if not run_id or db is None or not db.exists():
        return False
    with storage_errors(db):
        check_sqlite(db)
        relocate(db, db.parent)
        with closing(sqlite3.connect(db)) as con:
            row = con.execute("SELECT r.lifecycle_stage, e.lifecycle_stage FROM runs r JOIN experiments e "
                              "ON e.experiment_id = r.experiment_id WHERE r.run_uuid = ?", (run_id,)).fetchone()
    return row == ("active", "active")


def check_sqlite(path: Path) -> None:
    """AmortvalError naming the file unless it is a readable SQLite database with MLflow's tables."""
    tables = tracking_tables(path)  # StorageError if damaged
    if "experiments" not in tables:
        raise AmortvalError(f"{path} is not an MLflow tracking database (no 'experiments' table); "
                            "move it aside or set MLFLOW_TRACKING_URI")


def relocate(db: Path, store_dir: Path) -> int:
    """Point artifact locations recorded under another store folder at ``store_dir``.

    Returns the number of rows rewritten (0 when the store has not moved). Only
    locations under an ``mlartifacts`` folder are touched: a remote or custom artifact
    root stays as it is.
    """
    new_root = (Path(store_dir).resolve() / ARTIFACTS)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT artifact_location FROM experiments").fetchall()
        old_roots = set()
        for (location,) in rows:
            path = _local_path(location or "")
            if path is not None and path.name != "" and ARTIFACTS in path.parts:
                root = Path(*path.parts[: path.parts.index(ARTIFACTS) + 1])
                if root != new_root:
                    old_roots.add(root)
        changed = 0
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for old in old_roots:
            for before, after in ((old.as_uri(), new_root.as_uri()), (str(old), str(new_root))):
                for table, column in _LOCATION_COLUMNS:
                    if table in tables:
                        changed += con.execute(
                            f"UPDATE {table} SET {column} = replace({column}, ?, ?) WHERE {column} LIKE ?",
                            (before, after, before + "%")).rowcount
        return changed


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


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
        store = SqlAlchemyStore(f"sqlite:///{private.as_posix()}", (path.parent / ARTIFACTS).as_uri())
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


@contextmanager
def using(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri``, then put the environment back as it was."""
    import mlflow

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
def quiet() -> Iterator[None]:
    """Hide MLflow's advisory warnings (requirement hints, pickling notes) during logging."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*(mlflow|MLflow).*")
        yield
