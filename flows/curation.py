"""Curate new data: score unseen points with a registered valuation network.

Loads the named model (or the one whose columns match the file) at its ``champion``
alias or a pinned version, checks the new file against the model's schema before
scoring (``prepare_curation``: every user error, before any work), writes every score
to DuckDB and a curated Parquet file (kept rows) plus the dropped rows, each with its
value and the reason, and tracks the curation in MLflow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow, get_run_logger

from amortval.data.store import ValuationStore
from amortval.data.schema import mislabeled_flags
from amortval.data.tabular import read_table
from amortval.flows.interrupt import reclaim_sigterm
from amortval.tasks import tracking
from amortval.tasks.config import RunConfig
from amortval.tasks.curate import CurationRule, curation_metrics, select
from amortval.tasks.model_choice import ChosenModel, choose_model
from amortval.tasks.paths import check_curation_paths
from amortval.tasks.prepare import store_paths
from amortval.tasks.report import write_parquet
from amortval.tasks.runtime import pin_threads


@dataclass(frozen=True)
class Curation:
    """A curation whose every user input has been checked: what the flow scores and writes."""
    data: str
    frame: pl.DataFrame
    flags: np.ndarray | None
    rule: CurationRule
    paths: dict[str, Path]
    uri: str
    ignore: list[str]
    chosen: ChosenModel
    kept_path: Path
    dropped_path: Path


def prepare_curation(
    data: str, store: str, model_name: str | None, alias: str, model_version: str | None,
    threshold: float | None, drop_fraction: float | None, out: str | None, mislabeled_column: str | None,
) -> Curation:
    """Everything in a curation that can fail on user input, in order of cost; writes nothing.

    Rule; the file and its flag column; output paths (never an input file), the store
    folder, present and not held by another process (``check_curation_paths``); then the
    model and the file's schema against it. The CLI calls this before Prefect starts, so a
    user error is one line and no flow run; the flow calls it too, for deployments.
    """
    rule = CurationRule(threshold=threshold, drop_fraction=drop_fraction)
    frame = read_table(data)
    flags = mislabeled_flags(frame, mislabeled_column, name=Path(data).name) if mislabeled_column else None
    kept_path, dropped_path = check_curation_paths(data, store, out)
    paths = store_paths(store)
    uri = tracking.tracking_uri(paths["root"])
    ignore = [mislabeled_column] if mislabeled_column else []
    with ValuationStore(paths["duckdb"]) as db:  # free a moment ago: a new holder fails here, still one line
        chosen = choose_model(db, uri, frame.columns, name=model_name, alias=alias, version=model_version,
                              ignore=ignore)
    chosen.model.encoder.validate_scoring_frame(frame, require_target=True, ignore=ignore)
    return Curation(data, frame, flags, rule, paths, uri, ignore, chosen, kept_path, dropped_path)


@flow(name="curate-dataset")
def curate_dataset(
    data: str, store: str = RunConfig.model_fields["store"].default, model_name: str | None = None,
    alias: str = tracking.CHAMPION, model_version: str | None = None, threshold: float | None = None,
    drop_fraction: float | None = None, out: str | None = None, mislabeled_column: str | None = None,
) -> dict:
    """Score ``data`` with a registered network and drop what the rule says."""
    reclaim_sigterm()  # under the CLI: TERM is one line and no orphaned server
    pin_threads()
    c = prepare_curation(data, store, model_name, alias, model_version, threshold, drop_fraction, out,
                         mislabeled_column)
    chosen, frame = c.chosen, c.frame
    with ValuationStore(c.paths["duckdb"]) as db:
        values = chosen.model.predict(frame, ignore=c.ignore)
        kept, reasons = select(values, c.rule)
        curation_id = "curate-" + hashlib.sha256(
            f"{Path(data).resolve()}|{chosen.uri}|{c.rule}".encode()).hexdigest()[:12]
        db.write_scores(curation_id, chosen.uri, pl.DataFrame(
            {"row": range(len(frame)), "value": values, "kept": kept, "reason": reasons}))
    scored = frame.with_columns(pl.Series("value", values), pl.Series("reason", reasons)).with_row_index("row")
    write_parquet(scored.filter(pl.Series(kept)), c.kept_path)
    write_parquet(scored.filter(~pl.Series(kept)), c.dropped_path)
    metrics = curation_metrics(values, kept, c.flags)
    experiment = tracking.source_experiment(c.uri, chosen.name, chosen.version) or chosen.name
    tracking.log_curation_run(uri=c.uri, experiment=experiment, run_name=curation_id, model_uri=chosen.uri,
                              params={"data": str(data), "model_uri": chosen.uri, "model_version": chosen.version,
                                      "rule": c.rule.describe(), "curation_id": curation_id},
                              metrics=metrics, table=scored)
    get_run_logger().info("Curated %s with %s: kept %d, dropped %d (%s)", data, chosen.uri,
                          metrics["rows_kept"], metrics["rows_dropped"], c.rule.describe())
    return {"curation_id": curation_id, "model_uri": chosen.uri, "model_name": chosen.name,
            "model_version": chosen.version, "how": chosen.how, "curated": str(c.kept_path),
            "dropped": str(c.dropped_path), "duckdb": str(c.paths["duckdb"]), "rule": c.rule.describe(), **metrics}
