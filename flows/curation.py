"""Curate new data: score unseen points with a registered valuation network.

Loads the named model (or the one whose columns match the file) at its ``champion``
alias or a pinned version, checks the new file against the model's schema before
scoring (``prepare_curation``: every user error, before any work), writes every score
to DuckDB and a curated Parquet file (kept rows) plus the dropped rows, each with its
value and the reason, and tracks the curation in MLflow (``tasks/scoring.py``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from amortval.flows.interrupt import reclaim_sigterm
from amortval.tasks import tracking
from amortval.tasks.config import RunConfig
from amortval.tasks.runtime import pin_threads
from amortval.tasks.scoring import prepare_curation, score_file

__all__ = ["curate_dataset", "prepare_curation"]  # the CLI checks a curation before Prefect starts


@flow(name="curate-dataset")
def curate_dataset(
    data: str, store: str = RunConfig.model_fields["store"].default, model_name: str | None = None,
    alias: str = tracking.CHAMPION, model_version: str | None = None, threshold: float | None = None,
    drop_fraction: float | None = None, out: str | None = None, mislabeled_column: str | None = None,
) -> dict:
    """Score ``data`` with a registered network and drop what the rule says."""
    reclaim_sigterm()  # under the CLI: TERM is one line and no orphaned server
    pin_threads()
    curation = prepare_curation(data, store, model_name, alias, model_version, threshold, drop_fraction, out,
                                mislabeled_column)
    summary = score_file(curation)
    get_run_logger().info("Curated %s with %s: kept %d, dropped %d (%s)", data, summary["model_uri"],
                          summary["rows_kept"], summary["rows_dropped"], summary["rule"])
    return summary
