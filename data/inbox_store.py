"""The inbox's memory in the valuation store: which files were curated, and when their rows
were taken into a new valuation.

Two tables, created on first use (a store without them is not an older schema):

- ``inbox_files``: one row per file *content* (sha256 of its bytes), so a renamed or
  re-copied file is recognised: its name, status (``processed`` or ``rejected`` with the
  error), rows kept and dropped, the model version that scored it, and the re-sampling
  that took its kept rows in (NULL until then);
- ``inbox_resamplings``: one row per re-sampling trigger: the model whose dataset grew,
  the valuation run it started with its config, the base run whose training file it
  extends, the rows it added, and its status (``running`` until the valuation finished).

A trigger and the claim on its files commit in one transaction *before* the valuation
starts, so every kept row is counted by exactly one trigger, and a valuation that was
killed is found ``running`` and resumed by the next flow run. SQL runs through
``ValuationStore.query`` / ``execute_atomic`` (DuckDB stays behind the store's lock).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from amortval.data.store import ValuationStore

PROCESSED, REJECTED = "processed", "rejected"
FILE_FIELDS = ("content_hash", "file_name", "status", "error", "rows", "kept", "dropped", "model_name",
               "model_uri", "model_version", "curation_id")

_INBOX_TABLES = """
CREATE TABLE IF NOT EXISTS inbox_files (
    content_hash VARCHAR PRIMARY KEY, file_name VARCHAR NOT NULL, status VARCHAR NOT NULL, error VARCHAR,
    "rows" BIGINT, kept BIGINT, dropped BIGINT, model_name VARCHAR, model_uri VARCHAR, model_version VARCHAR,
    curation_id VARCHAR, resampling_id VARCHAR, processed_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_resamplings (
    resampling_id VARCHAR PRIMARY KEY, model_name VARCHAR NOT NULL, base_run_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL, config JSON NOT NULL, files INTEGER NOT NULL, "rows" BIGINT NOT NULL,
    status VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, finished_at TIMESTAMP);
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _ensure_tables(store: ValuationStore) -> None:
    store.execute_atomic([(_INBOX_TABLES, None)])


def processed_hashes(store: ValuationStore) -> set[str]:
    """Content hashes of the files already curated (rejected ones are tried again if they return)."""
    _ensure_tables(store)
    return set(store.query("SELECT content_hash FROM inbox_files WHERE status = ?", [PROCESSED])["content_hash"])


def record_file(store: ValuationStore, **fields) -> None:
    """Insert or replace one file's row (``FILE_FIELDS``; a rejected file that comes back is replaced)."""
    unknown = set(fields) - set(FILE_FIELDS)
    if unknown or "content_hash" not in fields:
        raise ValueError(f"inbox file fields must name content_hash, may name {FILE_FIELDS}; got {sorted(fields)}")
    row = {name: fields.get(name) for name in FILE_FIELDS}
    columns = ", ".join(f'"{name}"' for name in row)
    _ensure_tables(store)
    store.execute_atomic([(
        f"INSERT OR REPLACE INTO inbox_files ({columns}, resampling_id, processed_at) "
        f"VALUES ({', '.join('?' for _ in row)}, NULL, ?)", [*row.values(), _now()])])


def inbox_files(store: ValuationStore) -> pl.DataFrame:
    """Every recorded file, in the order they were processed."""
    _ensure_tables(store)
    return store.query("SELECT * FROM inbox_files ORDER BY processed_at, content_hash")


def unclaimed_rows(store: ValuationStore) -> pl.DataFrame:
    """Per model: kept rows (and files) of curated files no re-sampling has taken in yet."""
    _ensure_tables(store)
    return store.query(
        "SELECT model_name, sum(kept)::BIGINT AS kept, count(*)::INTEGER AS files FROM inbox_files "
        "WHERE status = ? AND resampling_id IS NULL GROUP BY model_name ORDER BY model_name", [PROCESSED])


def model_files(store: ValuationStore, model_name: str) -> pl.DataFrame:
    """Every curated file of a model (claimed or not), in processing order."""
    _ensure_tables(store)
    return store.query(
        "SELECT content_hash, file_name, kept, resampling_id FROM inbox_files "
        "WHERE status = ? AND model_name = ? ORDER BY processed_at, content_hash", [PROCESSED, model_name])


def inbox_run_ids(store: ValuationStore) -> set[str]:
    """Valuation runs started by the inbox (never the base of another re-sampling)."""
    _ensure_tables(store)
    return set(store.query("SELECT run_id FROM inbox_resamplings")["run_id"])


def begin_resampling(store: ValuationStore, resampling_id: str, *, model_name: str, base_run_id: str,
                     run_id: str, config: dict, hashes: list[str], rows: int) -> None:
    """Record a trigger and claim its files in one transaction (so their rows count once)."""
    _ensure_tables(store)
    store.execute_atomic([
        ("INSERT INTO inbox_resamplings VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, NULL)",
         [resampling_id, model_name, base_run_id, run_id, json.dumps(config, sort_keys=True, default=str),
          len(hashes), rows, _now()]),
        ("UPDATE inbox_files SET resampling_id = ? WHERE content_hash IN (SELECT unnest(?::VARCHAR[]))",
         [resampling_id, hashes]),
    ])


def running_resamplings(store: ValuationStore) -> list[dict]:
    """Triggers whose valuation has not finished (killed, or failed): id, run id, config."""
    _ensure_tables(store)
    rows = store.query("SELECT resampling_id, model_name, run_id, config, \"rows\" FROM inbox_resamplings "
                       "WHERE status = 'running' ORDER BY created_at").to_dicts()
    return [{**row, "config": json.loads(row["config"])} for row in rows]


def finish_resampling(store: ValuationStore, resampling_id: str) -> None:
    store.execute_atomic([("UPDATE inbox_resamplings SET status = 'completed', finished_at = ? "
                           "WHERE resampling_id = ?", [_now(), resampling_id])])


def resamplings(store: ValuationStore) -> pl.DataFrame:
    _ensure_tables(store)
    return store.query("SELECT * FROM inbox_resamplings ORDER BY created_at")
