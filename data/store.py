"""The valuation store: one DuckDB file holding runs, Monte Carlo samples and estimates.

DuckDB lets one process hold a database file read-write and keeps every other process
out (not even read-only), so the flow process is the only writer: workers compute and
return sample frames, and the flow commits each finished batch here in one transaction
together with its batch-done marker. Because the marker and the samples land together,
a run killed at any moment resumes by submitting only the batches without a marker;
nothing is lost and nothing is counted twice. Frames go in as Arrow tables
(``INSERT ... SELECT``), never row by row. This is the only module that imports duckdb;
the sample tables' methods live in ``data/sample_store.py`` (a mixin of this class) and
table families with their own module (``data/truth_store.py``) run their SQL through
``query`` and ``execute_atomic`` on the same connection.

Samples belong to a sampling (``sampling_id``), estimates and metrics to a run
(``run_id``): see ``data/store_schema.py``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from amortval.data.sample_store import SampleTables
from amortval.data.store_schema import COMMENTS, SCHEMA_VERSION, TABLES
from amortval.errors import AmortvalError, RunInProgressError, StoreLockedError, storage_error, storage_errors

RUN_FIELDS = ("samples", "mlflow_run_id", "model_name", "model_version", "model_uri", "wall_seconds", "new_fits")

# Samplings being computed in this process, as (store path, sampling id). DuckDB's file
# lock keeps other processes out of a store, but it lets any number of connections of
# one process in, so two flows of the same sampling in one process would both do the work.
_ACTIVE_RUNS: set[tuple[Path, str]] = set()
_ACTIVE_LOCK = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ensure_store_free(path: str | Path) -> None:
    """Raise StoreLockedError now if another process holds the store (no-op if none exists).

    Opens the file read-only, so nothing is written; lets the CLI refuse a second run
    before it starts a workflow, instead of failing inside it.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise _locked_error(path, exc) from None
        raise storage_error(exc, path) or AmortvalError(f"cannot open store {path}: {exc}") from exc
    except duckdb.Error as exc:
        raise storage_error(exc, path) or AmortvalError(f"cannot open store {path}: {exc}") from exc


def _locked_error(path: Path, exc: Exception) -> StoreLockedError:
    text = str(exc)
    pid = re.search(r"PID (\d+)", text)
    prog = re.search(r"held in (.+?) \(PID", text)
    holder = f"process {pid.group(1)}" if pid else "another process"
    if prog:
        holder += f" ({prog.group(1)})"
    return StoreLockedError(
        f"store {path} is in use by {holder}; DuckDB allows one process per store file. "
        "Wait for that run to finish (or stop it), or pass another --store."
    )


class ValuationStore(SampleTables):
    """Single-writer DuckDB store; one connection for the life of the flow process.

    All access goes through one connection guarded by a lock, so accidental use from
    several threads serializes instead of interleaving transactions. A damaged file or a
    full disk, met at any statement, is a ``StorageError`` naming the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise AmortvalError(f"store folder {self.path.parent} is a file, not a folder; pass another --store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._claimed: set[str] = set()
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise _locked_error(self.path, exc) from None
            raise storage_error(exc, self.path) or AmortvalError(f"cannot open store {self.path}: {exc}") from exc
        except duckdb.Error as exc:
            raise storage_error(exc, self.path) or AmortvalError(f"cannot open store {self.path}: {exc}") from exc
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    def _init_schema(self) -> None:
        with self._transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            row = self._first(con, "SELECT value FROM meta WHERE key = 'schema_version'")
            if row is None or int(row[0]) == SCHEMA_VERSION:
                con.execute(TABLES)
            if row is None:
                for column, text in COMMENTS.items():
                    quoted = text.replace("'", "''")
                    con.execute(f"COMMENT ON COLUMN {column} IS '{quoted}'")
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            elif int(row[0]) > SCHEMA_VERSION:
                raise AmortvalError(
                    f"store {self.path} has schema version {row[0]}, newer than this "
                    f"amortval understands ({SCHEMA_VERSION}); upgrade amortval or use another --store"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                raise AmortvalError(
                    f"store {self.path} was written by amortval 0.1 (schema {row[0]}); this release "
                    f"(schema {SCHEMA_VERSION}) draws its samples from other random streams and cannot "
                    "extend it. Value into a new --store (or move this folder aside); the old store's "
                    "values files and MLflow runs stay readable as they are"
                )

    # -- plumbing ---------------------------------------------------------------------
    @property
    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise AmortvalError(f"store {self.path} is closed")
        return self._con

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Everything inside commits together or not at all."""
        with self._lock, storage_errors(self.path):
            con = self._connection
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    @contextmanager
    def _frame(self, frame: pl.DataFrame, required: tuple[str, ...]) -> Iterator[str]:
        """Expose a polars frame to SQL as the view ``incoming`` (zero-copy via Arrow).

        Enter it *before* the transaction: a failed statement aborts the transaction,
        which must be rolled back before the view can be dropped (else the drop's error
        would hide the real one).
        """
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks column(s) {missing}; has {frame.columns}")
        with self._lock, storage_errors(self.path):
            self._connection.register("incoming", frame.to_arrow())
            try:
                yield "incoming"
            finally:
                self._connection.unregister("incoming")

    def _query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        with self._lock, storage_errors(self.path):
            return self._connection.sql(sql, params=params).pl()

    @staticmethod
    def _first(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple | None:
        """First row of a query, fully drained: DuckDB 2.0 refuses other work on a
        connection (e.g. unregister) while a result is only partly fetched."""
        rows = con.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def _fetchone(self, sql: str, params: list[Any] | None = None) -> tuple | None:
        with self._lock, storage_errors(self.path):
            return self._first(self._connection, sql, params)

    def _fetchall(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self._lock, storage_errors(self.path):
            return self._connection.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            with _ACTIVE_LOCK:
                _ACTIVE_RUNS.difference_update((self.path, run_id) for run_id in self._claimed)
            self._claimed.clear()
            if self._con is not None:
                con, self._con = self._con, None
                with storage_errors(self.path):  # closing checkpoints: it writes
                    con.close()

    def __enter__(self) -> ValuationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQL for table families kept in their own modules ---------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Result of one read statement as a polars frame."""
        return self._query(sql, params)

    def execute_atomic(self, statements: Sequence[tuple[str, list[Any] | None]],
                       frame: pl.DataFrame | None = None) -> None:
        """Run (sql, params) statements in one transaction: all of them or none.

        ``frame``, when given, is visible to the statements as the view ``incoming``.
        """
        with (self._frame(frame, ()) if frame is not None else nullcontext()), self._transaction() as con:
            for sql, params in statements:
                con.execute(sql, params)

    # -- datasets, samplings and runs ----------------------------------------------------
    def register_dataset(self, dataset_id: str, name: str, source: str, n_rows: int, n_features: int,
                         schema: dict) -> None:
        """Record a dataset once; the id is a content hash, so a second call is a no-op."""
        with self._transaction() as con:
            con.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [dataset_id, name, source, n_rows, n_features, json.dumps(schema, default=str), _now()],
            )

    def dataset(self, dataset_id: str) -> dict | None:
        rows = self._query("SELECT * FROM datasets WHERE dataset_id = ?", [dataset_id]).to_dicts()
        if not rows:
            return None
        rows[0]["schema"] = json.loads(rows[0]["schema"]) if rows[0]["schema"] else None
        return rows[0]

    def begin_run(self, run_id: str, sampling_id: str, dataset_id: str, config: dict, samples: int,
                  sampling_config: dict, n_points: int) -> str:
        """Create the run as 'running' (and its sampling, once) and return 'new'; an
        existing run is left untouched and its current status returned, so the caller
        decides whether to resume.

        The sampling is claimed for this store object until ``close``: a second
        ``begin_run`` on the same sampling in this process raises RunInProgressError.
        (A status 'running' left by a killed process claims nothing, so a re-run resumes.)
        """
        self._claim(sampling_id)
        with self._transaction() as con:
            con.execute("INSERT INTO samplings VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [sampling_id, dataset_id, json.dumps(sampling_config, sort_keys=True, default=str),
                         n_points, _now()])
            row = self._first(con, "SELECT status FROM runs WHERE run_id = ?", [run_id])
            if row is not None:
                return str(row[0])
            now = _now()
            con.execute(
                "INSERT INTO runs (run_id, sampling_id, dataset_id, config, samples, status, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                [run_id, sampling_id, dataset_id, json.dumps(config, sort_keys=True, default=str), samples, now, now],
            )
            return "new"

    def _claim(self, sampling_id: str) -> None:
        key = (self.path, sampling_id)
        with _ACTIVE_LOCK:
            if sampling_id in self._claimed:
                return
            if key in _ACTIVE_RUNS:
                raise RunInProgressError(
                    f"sampling {sampling_id} is already in progress in this process (store {self.path}); "
                    "wait for it to finish: a second copy would only repeat its work"
                )
            _ACTIVE_RUNS.add(key)
            self._claimed.add(sampling_id)

    def sampling(self, sampling_id: str) -> dict | None:
        """The sampling's identity as stored (dataset, utility, sampling settings, n_points)."""
        row = self._fetchone("SELECT config FROM samplings WHERE sampling_id = ?", [sampling_id])
        return None if row is None else json.loads(row[0])

    def run(self, run_id: str) -> dict | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", [run_id]).to_dicts()
        if not rows:
            return None
        rows[0]["config"] = json.loads(rows[0]["config"])
        return rows[0]

    def runs(self) -> pl.DataFrame:
        """Every run with its dataset: newest first."""
        return self._query(
            "SELECT r.*, d.name AS dataset, d.source, d.n_rows, d.schema FROM runs r "
            "LEFT JOIN datasets d USING (dataset_id) ORDER BY r.created_at DESC, r.run_id")

    def set_run_status(self, run_id: str, status: str, **fields: Any) -> None:
        unknown = set(fields) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"unknown run field(s) {sorted(unknown)}; allowed: {RUN_FIELDS}")
        sets = ", ".join(["status = ?", "updated_at = ?", *(f"{k} = ?" for k in fields)])
        with self._transaction() as con:
            hit = con.execute(
                f"UPDATE runs SET {sets} WHERE run_id = ? RETURNING run_id",
                [status, _now(), *fields.values(), run_id],
            ).fetchall()
            if not hit:
                raise LookupError(f"no run {run_id!r} in store {self.path}")

    # -- metrics and curation scores ---------------------------------------------------
    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Upsert named run metrics (a later value for the same name wins)."""
        if not metrics:
            return
        frame = pl.DataFrame({"name": list(metrics), "value": [float(v) for v in metrics.values()]},
                             schema={"name": pl.String, "value": pl.Float64})
        with self._frame(frame, ("name", "value")) as f, self._transaction() as con:
            con.execute(f"INSERT OR REPLACE INTO run_metrics SELECT ?, name, value FROM {f}", [run_id])

    def write_rounds(self, run_id: str, rounds: pl.DataFrame) -> None:
        """Replace the run's rounds (columns of the ``rounds`` table but run_id)."""
        columns = ("round", "samples", "fits", "seconds", "estimated_nmse", "estimated_nmse_se", "stop_reason")
        with self._frame(rounds.select(columns), columns) as f, self._transaction() as con:
            con.execute("DELETE FROM rounds WHERE run_id = ?", [run_id])
            con.execute(f"INSERT INTO rounds SELECT ?, {', '.join(columns)} FROM {f}", [run_id])

    def rounds(self, run_id: str) -> pl.DataFrame:
        return self._query("SELECT round, samples, fits, seconds, estimated_nmse, estimated_nmse_se, stop_reason FROM rounds "
                           "WHERE run_id = ? ORDER BY round", [run_id])

    def stop_reason(self, run_id: str) -> str | None:
        """Why the run's sampling stopped (its last round's reason), None before it did."""
        row = self._fetchone("SELECT stop_reason FROM rounds WHERE run_id = ? AND stop_reason IS NOT NULL "
                             "ORDER BY round DESC LIMIT 1", [run_id])
        return None if row is None else str(row[0])

    def metrics(self, run_id: str) -> dict[str, float]:
        rows = self._fetchall("SELECT name, value FROM run_metrics WHERE run_id = ? ORDER BY name", [run_id])
        return {str(k): float(v) if v is not None else float("nan") for k, v in rows}

    def write_scores(self, curation_id: str, model_uri: str, frame: pl.DataFrame) -> None:
        """Replace a curation's scores (row, value, kept[, reason]) in one transaction."""
        reason = "reason" if "reason" in frame.columns else "NULL"
        with self._frame(frame, ("row", "value", "kept")) as f, self._transaction() as con:
            con.execute("DELETE FROM scores WHERE curation_id = ?", [curation_id])
            con.execute(
                f'INSERT INTO scores SELECT ?, "row", value, kept, {reason}, ?, ? FROM {f}',
                [curation_id, model_uri, _now()],
            )

    def scores(self, curation_id: str) -> pl.DataFrame:
        return self._query(
            'SELECT "row", value, kept, reason, model_uri FROM scores WHERE curation_id = ? ORDER BY "row"',
            [curation_id],
        )
