"""Ground truths in the valuation store: many-sample Monte Carlo values of probe points.

A ground truth costs hours of fits and is a pure function of its id (data fingerprint,
learner, semivalue, sampler, samples, seed, probes), so it is computed once and kept in
the same DuckDB file as the runs it judges. Tables, created on first use:

- ``truths``: one row per truth: what it estimates (config JSON) and what it cost;
- ``truth_values``: one row per probe point: value, stderr, count, and the means of two
  independent halves of the draws (``half_a`` even draws, ``half_b`` odd draws);
- ``truth_batches`` and ``truth_samples``: the batches of a truth still being computed
  (unit range, fits, seconds) and their samples (point, draw, value). Each batch is
  written with its samples in one transaction as it arrives, so an interrupted truth
  (hours of fits) resumes where it stopped; they are deleted when the truth is written.

A truth and its values are written in one transaction, so a failure leaves neither.
SQL runs through ``ValuationStore.query`` / ``execute_atomic``: DuckDB stays behind the
store's single connection and lock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from amortval.data.store import ValuationStore

TRUTH_COLUMNS = ("point", "value", "stderr", "count", "half_a", "half_b")

_TRUTH_TABLES = """
CREATE TABLE IF NOT EXISTS truths (
    truth_id VARCHAR PRIMARY KEY, dataset_id VARCHAR NOT NULL, learner VARCHAR NOT NULL,
    method VARCHAR NOT NULL, config JSON NOT NULL, samples BIGINT NOT NULL,
    n_probes INTEGER NOT NULL, n_fits BIGINT, n_fallbacks BIGINT, seconds DOUBLE,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS truth_values (
    truth_id VARCHAR NOT NULL, point INTEGER NOT NULL, value DOUBLE NOT NULL, stderr DOUBLE,
    "count" BIGINT NOT NULL, half_a DOUBLE, half_b DOUBLE, PRIMARY KEY (truth_id, point));
CREATE TABLE IF NOT EXISTS truth_batches (
    truth_id VARCHAR NOT NULL, start BIGINT NOT NULL, stop BIGINT NOT NULL, n_fits BIGINT NOT NULL,
    n_fallbacks BIGINT NOT NULL, seconds DOUBLE NOT NULL, PRIMARY KEY (truth_id, start));
CREATE TABLE IF NOT EXISTS truth_samples (
    truth_id VARCHAR NOT NULL, point INTEGER NOT NULL, draw INTEGER NOT NULL, value DOUBLE NOT NULL);
"""


def _ensure_tables(store: ValuationStore) -> None:
    store.execute_atomic([(_TRUTH_TABLES, None)])


def read_truth(store: ValuationStore, truth_id: str) -> pl.DataFrame | None:
    """The stored values of a truth (ordered by point), or None if it was never written."""
    _ensure_tables(store)
    if store.query("SELECT 1 FROM truths WHERE truth_id = ?", [truth_id]).is_empty():
        return None
    return store.query(
        'SELECT point, value, stderr, "count", half_a, half_b '
        "FROM truth_values WHERE truth_id = ? ORDER BY point",
        [truth_id],
    )


def truth_info(store: ValuationStore, truth_id: str) -> dict | None:
    """The ``truths`` row (config parsed), or None."""
    _ensure_tables(store)
    rows = store.query("SELECT * FROM truths WHERE truth_id = ?", [truth_id]).to_dicts()
    if not rows:
        return None
    rows[0]["config"] = json.loads(rows[0]["config"])
    return rows[0]


def write_truth(store: ValuationStore, truth_id: str, frame: pl.DataFrame, *, dataset_id: str,
                config: dict, n_fits: int | None = None, n_fallbacks: int | None = None,
                seconds: float | None = None) -> None:
    """Store a truth and its values together (one transaction; idempotent per id).

    ``config`` must name ``learner``, ``method`` and ``samples``; it is kept whole as JSON.
    """
    missing = [c for c in TRUTH_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"truth frame lacks column(s) {missing}; has {frame.columns}")
    if frame["point"].n_unique() != frame.height:
        raise ValueError(f"truth frame for {truth_id} lists a point twice")
    absent = [k for k in ("learner", "method", "samples") if k not in config]
    if absent:
        raise ValueError(f"truth config lacks {absent}")
    _ensure_tables(store)
    store.execute_atomic(
        [
            ("INSERT INTO truths VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
             [truth_id, dataset_id, config["learner"], config["method"],
              json.dumps(config, sort_keys=True, default=str), int(config["samples"]), frame.height,
              n_fits, n_fallbacks, seconds, datetime.now(UTC).replace(tzinfo=None)]),
            ('INSERT INTO truth_values SELECT ?, point, value, stderr, "count", half_a, half_b '
             "FROM incoming ON CONFLICT DO NOTHING", [truth_id]),
            ("DELETE FROM truth_samples WHERE truth_id = ?", [truth_id]),
            ("DELETE FROM truth_batches WHERE truth_id = ?", [truth_id]),
        ],
        frame=frame,
    )


def write_truth_batch(store: ValuationStore, truth_id: str, units: range, samples: pl.DataFrame, *,
                      n_fits: int, n_fallbacks: int, seconds: float) -> None:
    """Keep one computed batch of an unfinished truth: its unit range and its samples
    (``point``, ``draw``, ``value``), in one transaction (idempotent per batch)."""
    _ensure_tables(store)
    store.execute_atomic(
        [
            ("INSERT INTO truth_samples SELECT ?, point, draw, value FROM incoming "
             "WHERE NOT EXISTS (SELECT 1 FROM truth_batches WHERE truth_id = ? AND start = ?)",
             [truth_id, truth_id, units.start]),
            ("INSERT INTO truth_batches VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
             [truth_id, units.start, units.stop, n_fits, n_fallbacks, seconds]),
        ],
        frame=samples.select("point", "draw", "value"),
    )


def truth_batches(store: ValuationStore, truth_id: str) -> pl.DataFrame:
    """The stored batches of an unfinished truth: start, stop, n_fits, n_fallbacks, seconds."""
    _ensure_tables(store)
    return store.query("SELECT start, stop, n_fits, n_fallbacks, seconds FROM truth_batches "
                       "WHERE truth_id = ? ORDER BY start", [truth_id])


def truth_samples(store: ValuationStore, truth_id: str) -> pl.DataFrame:
    """The samples of an unfinished truth's stored batches: point, draw, value."""
    _ensure_tables(store)
    return store.query("SELECT point, draw, value FROM truth_samples WHERE truth_id = ?", [truth_id])
