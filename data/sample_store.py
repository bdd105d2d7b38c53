"""The sample tables of the valuation store: batches, samples and estimates.

A mixin of ``ValuationStore`` (``data/store.py``), which owns the connection, the lock
and the transactions; kept apart because it is the resume contract and nothing else.
Samples are keyed by sampling (``sampling_id``) and Monte Carlo unit ranges: a batch is
the units [unit_start, unit_stop) and commits with its done-marker in one transaction.
A run with budget m reads the rows with ``draw < m``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from amortval.data.store import ValuationStore

ESTIMATE_SOURCES = ("monte_carlo", "amortized", "combined")
SAMPLE_COLUMNS = ("point", "draw", "cardinality", "delta", "weight", "status")


def _budget(sampling_id: str, below_draw: int | None) -> tuple[str, list]:
    if below_draw is None:
        return "sampling_id = ?", [sampling_id]
    return "sampling_id = ? AND draw < ?", [sampling_id, int(below_draw)]


class SampleTables:
    # -- batches -----------------------------------------------------------------------
    def done_segments(self: ValuationStore, sampling_id: str) -> list[tuple[int, int]]:
        """Unit ranges [start, stop) whose samples are committed, in order."""
        rows = self._fetchall("SELECT unit_start, unit_stop FROM batches WHERE sampling_id = ? "
                              "ORDER BY unit_start", [sampling_id])
        return [(int(a), int(b)) for a, b in rows]

    def commit_batch(self: ValuationStore, sampling_id: str, start: int, stop: int, samples: pl.DataFrame, *,
                     n_fits: int, n_fallbacks: int, seconds: float, run_id: str | None = None) -> bool:
        """Store a finished batch's samples and its done-marker in one transaction.

        Returns False (and writes nothing) when the marker already exists, so a batch
        recomputed after a crash is never counted twice. A sample whose (point, draw) is
        already stored by another batch is a sampler bug: it raises (no silent drop).
        Any failure rolls back both.
        """
        from amortval.data.store import _now

        with self._frame(samples, SAMPLE_COLUMNS) as frame, self._transaction() as con:
            if self._first(con, "SELECT 1 FROM batches WHERE sampling_id = ? AND unit_start = ?",
                           [sampling_id, start]):
                return False
            con.execute(
                "INSERT INTO samples (sampling_id, unit_start, point, draw, cardinality, delta, weight, status) "
                f"SELECT ?, ?, point, draw, cardinality, delta, weight, status FROM {frame}",
                [sampling_id, start],
            )
            con.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [sampling_id, start, stop, samples.height, n_fits, n_fallbacks, float(seconds), run_id, _now()],
            )
            return True

    def batches(self: ValuationStore, sampling_id: str) -> pl.DataFrame:
        return self._query("SELECT * EXCLUDE (sampling_id) FROM batches WHERE sampling_id = ? "
                           "ORDER BY unit_start", [sampling_id])

    def fit_count(self: ValuationStore, sampling_id: str, below_unit: int | None = None) -> int:
        """Model fits behind the units below ``below_unit`` (all when None)."""
        extra, params = ("", [sampling_id]) if below_unit is None else (" AND unit_start < ?", [sampling_id, below_unit])
        row = self._fetchone(f"SELECT coalesce(sum(n_fits), 0) FROM batches WHERE sampling_id = ?{extra}", params)
        return int(row[0])

    def fallback_count(self: ValuationStore, sampling_id: str, below_unit: int | None = None) -> int:
        """Utility evaluations answered by the degenerate-subset policy."""
        extra, params = ("", [sampling_id]) if below_unit is None else (" AND unit_start < ?", [sampling_id, below_unit])
        row = self._fetchone(f"SELECT coalesce(sum(n_fallbacks), 0) FROM batches WHERE sampling_id = ?{extra}", params)
        return int(row[0])

    # -- samples -----------------------------------------------------------------------
    def sample_count(self: ValuationStore, sampling_id: str, below_draw: int | None = None) -> int:
        where, params = _budget(sampling_id, below_draw)
        return int(self._fetchone(f"SELECT count(*) FROM samples WHERE {where}", params)[0])

    def samples(self: ValuationStore, sampling_id: str, below_draw: int | None = None) -> pl.DataFrame:
        where, params = _budget(sampling_id, below_draw)
        return self._query(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM samples WHERE {where} ORDER BY point, draw",
                           params)

    def status_counts(self: ValuationStore, sampling_id: str, below_draw: int | None = None) -> dict[str, int]:
        where, params = _budget(sampling_id, below_draw)
        rows = self._fetchall(f"SELECT status, count(*) FROM samples WHERE {where} GROUP BY status ORDER BY status",
                              params)
        return {str(s): int(n) for s, n in rows}

    # -- estimates ---------------------------------------------------------------------
    def monte_carlo_estimates(self: ValuationStore, sampling_id: str, *, below_draw: int | None = None) -> pl.DataFrame:
        """Per point: mean of weight*delta, its standard error (null below 2 samples), count.

        ``below_draw`` keeps draws < below_draw: a run's budget.
        """
        where, params = _budget(sampling_id, below_draw)
        # Each point's samples as one list in draw order, then its mean and deviation:
        # floating-point sums run in draw order, not in the physical order batches were
        # committed, so a resumed or extended run gets bit-identical values to an
        # uninterrupted one. One ordered aggregate, not two (each sorts): ~2.5x faster.
        return self._query(
            "SELECT point, list_avg(v) AS value, "
            "CASE WHEN len(v) >= 2 THEN list_stddev_samp(v) / sqrt(len(v)) END AS stderr, "
            'len(v)::BIGINT AS "count" FROM (SELECT point, list(weight * delta ORDER BY draw) AS v '
            f"FROM samples WHERE {where} GROUP BY point) ORDER BY point",
            params,
        )

    def write_estimates(self: ValuationStore, run_id: str, source: str, frame: pl.DataFrame) -> None:
        """Replace this run's estimates from ``source`` (point, value[, stderr, count])."""
        if source not in ESTIMATE_SOURCES:
            raise ValueError(f"source must be one of {ESTIMATE_SOURCES}, got {source!r}")
        stderr = "stderr" if "stderr" in frame.columns else "NULL"
        count = '"count"' if "count" in frame.columns else "NULL"
        with self._frame(frame, ("point", "value")) as f, self._transaction() as con:
            con.execute("DELETE FROM estimates WHERE run_id = ? AND source = ?", [run_id, source])
            con.execute(
                f"INSERT INTO estimates SELECT ?, point, ?, value, {stderr}, {count} FROM {f}",
                [run_id, source],
            )

    def estimates(self: ValuationStore, run_id: str) -> pl.DataFrame:
        """Wide view: point, mc_value, mc_stderr, mc_count, amortized_value, combined_value."""
        return self._query(
            "SELECT point, "
            "any_value(value) FILTER (source = 'monte_carlo') AS mc_value, "
            "any_value(stderr) FILTER (source = 'monte_carlo') AS mc_stderr, "
            "any_value(\"count\") FILTER (source = 'monte_carlo') AS mc_count, "
            "any_value(value) FILTER (source = 'amortized') AS amortized_value, "
            "any_value(value) FILTER (source = 'combined') AS combined_value "
            "FROM estimates WHERE run_id = ? GROUP BY point ORDER BY point",
            [run_id],
        )
