"""Curate new data: score unseen points with a registered valuation network.

Loads the named model (or the one whose columns match the file) at its ``champion``
alias or a pinned version, checks the new file against the model's schema before
scoring, writes every score to DuckDB and a curated Parquet file (kept rows) plus the
dropped rows, each with its value and the reason, and tracks the curation in MLflow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger

from amortval.data.store import ValuationStore
from amortval.data.schema import mislabeled_flags
from amortval.data.tabular import read_table
from amortval.errors import ModelNotFoundError
from amortval.tasks import tracking
from amortval.tasks.config import RunConfig
from amortval.tasks.curate import CurationRule, curation_metrics, select
from amortval.tasks.model_choice import choose_model
from amortval.tasks.prepare import store_paths
from amortval.tasks.report import write_parquet
from amortval.tasks.runtime import pin_threads


def default_outputs(data: str, curated_dir: Path, out: str | None) -> tuple[Path, Path]:
    """<name>.curated.parquet (kept rows) and <name>.dropped.parquet beside it."""
    kept = Path(out) if out else curated_dir / f"{Path(data).stem}.curated.parquet"
    stem = kept.name.removesuffix(".parquet").removesuffix(".curated")
    return kept, kept.with_name(f"{stem}.dropped.parquet")


@flow(name="curate-dataset")
def curate_dataset(
    data: str, store: str = RunConfig.model_fields["store"].default, model_name: str | None = None,
    alias: str = tracking.CHAMPION, model_version: str | None = None, threshold: float | None = None,
    drop_fraction: float | None = None, out: str | None = None, mislabeled_column: str | None = None,
) -> dict:
    """Score ``data`` with a registered network and drop what the rule says."""
    pin_threads()
    rule = CurationRule(threshold=threshold, drop_fraction=drop_fraction)
    frame = read_table(data)
    flags = mislabeled_flags(frame, mislabeled_column, name=Path(data).name) if mislabeled_column else None
    paths = store_paths(store)
    uri = tracking.tracking_uri(paths["root"])
    ignore = [mislabeled_column] if mislabeled_column else []
    if not paths["duckdb"].exists():
        raise ModelNotFoundError(f"no store at {paths['duckdb']}: nothing was valued there yet; run `amortval value` "
                                 "first, or pass the --store it used")
    with ValuationStore(paths["duckdb"]) as db:
        chosen = choose_model(db, uri, frame.columns, name=model_name, alias=alias, version=model_version,
                              ignore=ignore)
        values = chosen.model.predict(frame, ignore=ignore)
        kept, reasons = select(values, rule)
        curation_id = "curate-" + hashlib.sha256(
            f"{Path(data).resolve()}|{chosen.uri}|{rule}".encode()).hexdigest()[:12]
        db.write_scores(curation_id, chosen.uri, pl.DataFrame(
            {"row": range(len(frame)), "value": values, "kept": kept, "reason": reasons}))
    scored = frame.with_columns(pl.Series("value", values), pl.Series("reason", reasons)).with_row_index("row")
    kept_path, dropped_path = default_outputs(data, paths["curated"], out)
    write_parquet(scored.filter(pl.Series(kept)), kept_path)
    write_parquet(scored.filter(~pl.Series(kept)), dropped_path)
    metrics = curation_metrics(values, kept, flags)
    tracking.log_curation_run(uri=uri, experiment=chosen.name, run_name=curation_id, model_uri=chosen.uri,
                              params={"data": str(data), "model_uri": chosen.uri, "model_version": chosen.version,
                                      "rule": rule.describe(), "curation_id": curation_id},
                              metrics=metrics, table=scored)
    get_run_logger().info("Curated %s with %s: kept %d, dropped %d (%s)", data, chosen.uri,
                          metrics["rows_kept"], metrics["rows_dropped"], rule.describe())
    return {"curation_id": curation_id, "model_uri": chosen.uri, "model_name": chosen.name,
            "model_version": chosen.version, "how": chosen.how, "curated": str(kept_path),
            "dropped": str(dropped_path), "duckdb": str(paths["duckdb"]), "rule": rule.describe(), **metrics}
