"""Curate new data: score unseen points with the registered valuation network.

Loads ``models:/<name>@<alias>`` from MLflow, checks the new file against the model's
schema before scoring, writes every score to DuckDB and a curated Parquet file (kept
rows) plus the dropped rows, each with its value and the reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger

from amortval.data.store import ValuationStore
from amortval.data.tabular import read_table
from amortval.tasks import tracking
from amortval.tasks.curate import CurationRule, select
from amortval.tasks.metrics import mislabeled_auroc
from amortval.tasks.prepare import DEFAULT_STORE, store_paths
from amortval.tasks.report import write_parquet
from amortval.tasks.runtime import pin_threads


def default_outputs(data: str, curated_dir: Path, out: str | None) -> tuple[Path, Path]:
    """<name>.curated.parquet (kept rows) and <name>.dropped.parquet beside it."""
    kept = Path(out) if out else curated_dir / f"{Path(data).stem}.curated.parquet"
    stem = kept.name.removesuffix(".parquet").removesuffix(".curated")
    return kept, kept.with_name(f"{stem}.dropped.parquet")


@flow(name="curate-dataset")
def curate_dataset(
    data: str, store: str = DEFAULT_STORE, model_name: str = tracking.DEFAULT_MODEL_NAME,
    alias: str = tracking.CHAMPION, threshold: float | None = None, drop_fraction: float | None = None,
    out: str | None = None, mislabeled_column: str | None = None,
) -> dict:
    """Score ``data`` with the champion network and drop what the rule says."""
    pin_threads()
    logger = get_run_logger()
    rule = CurationRule(threshold=threshold, drop_fraction=drop_fraction)
    frame = read_table(data)
    paths = store_paths(store)
    uri = tracking.tracking_uri(paths["root"])
    model, model_uri, version = tracking.load_registered_model(uri, model_name, alias)
    ignore = [mislabeled_column] if mislabeled_column else []
    values = model.predict(frame, ignore=ignore)
    kept, reasons = select(values, rule)
    scored = frame.with_columns(pl.Series("value", values), pl.Series("reason", reasons)).with_row_index("row")
    curation_id = "curate-" + hashlib.sha256(
        f"{Path(data).resolve()}|{model_uri}|{version}|{rule}".encode()
    ).hexdigest()[:12]
    with ValuationStore(paths["duckdb"]) as db:
        db.write_scores(curation_id, f"{model_uri} (version {version})", pl.DataFrame(
            {"row": range(len(frame)), "value": values, "kept": kept, "reason": reasons}))
    kept_path, dropped_path = default_outputs(data, paths["curated"], out)
    write_parquet(scored.filter(pl.Series(kept)), kept_path)
    write_parquet(scored.filter(~pl.Series(kept)), dropped_path)
    metrics = {"rows_scored": len(frame), "rows_kept": int(kept.sum()), "rows_dropped": int((~kept).sum())}
    if mislabeled_column:
        flags = frame[mislabeled_column].cast(pl.Boolean).to_numpy()
        metrics["mislabeled_auroc"] = mislabeled_auroc(values, flags)
        metrics["dropped_mislabeled_precision"] = float(flags[~kept].mean()) if (~kept).any() else float("nan")
        metrics["mislabeled_recall"] = float((~kept)[flags].mean()) if flags.any() else float("nan")
    tracking.log_curation_run(uri=uri, params={"data": str(data), "model_uri": model_uri, "model_version": version,
                                               "rule": rule.describe(), "curation_id": curation_id},
                              metrics=metrics, table=scored, run_name=curation_id)
    logger.info("Curated %s with %s v%s: kept %d, dropped %d (%s)", data, model_name, version,
                metrics["rows_kept"], metrics["rows_dropped"], rule.describe())
    return {"curation_id": curation_id, "model_uri": model_uri, "model_version": version,
            "curated": str(kept_path), "dropped": str(dropped_path), "duckdb": str(paths["duckdb"]),
            "rule": rule.describe(), **metrics}
