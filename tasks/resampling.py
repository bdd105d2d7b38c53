"""When the inbox's kept rows re-value their dataset: the re-sampling trigger.

The rule: once the rows *kept* from inbox files scored with a dataset's model, and not
yet taken into a re-valuation, reach ``resample_after_rows``, the inbox flow values the
grown dataset again. The training table it values is the training file of the model's
newest completed valuation that the inbox did not start (its *base* run: the user's own
``amortval value``), followed by the kept rows of every inbox file that model has scored,
in the order they were processed, without the ``row``, ``value`` and ``reason`` columns.
It is written once to ``<store>/inbox-training/<id>/<dataset name>.parquet`` and valued
with the base run's stored config (only the data file, label and validation file are
spelled out, and the model name kept), so the same registered model gets a new version
and its ``champion`` alias moves if the quality gate passes. The grown table is another
dataset (a new content hash): a seeded subset of its rows gets fresh Monte Carlo samples
(``points``) and the network, trained again on them, values every row. The subset has
as many rows as the base run sampled, or as the trigger counted if those are more: it
covers the new rows' share and keeps at least the base run's coverage.

The trigger and the files whose rows it counts are recorded before the valuation starts
(``data/inbox_store.py``): each kept row triggers at most once, and a valuation that was
killed is resumed by the next flow run (same table, same run id) before any new trigger
for that model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import polars as pl

from amortval.data import inbox_store
from amortval.data.store import ValuationStore
from amortval.data.tabular import read_table
from amortval.errors import AmortvalError, ConfigError, DataValidationError
from amortval.tasks.config import RunConfig
from amortval.tasks.inbox import inbox_outputs
from amortval.tasks.prepare import load_inputs, store_paths
from amortval.tasks.report import write_parquet

SCORING_COLUMNS = ("row", "value", "reason")  # added by curation; not part of the data


@dataclass(frozen=True)
class Resampling:
    resampling_id: str
    model_name: str
    run_id: str  # of the valuation it starts
    rows: int  # kept inbox rows this trigger counted
    config: RunConfig


def check_resample_after(rows: int | None) -> None:
    if rows is not None and rows < 1:
        raise ConfigError(f"resample_after_rows must be at least 1 (or none to never re-sample), got {rows}")


def due_resamplings(store: str, after_rows: int | None) -> list[Resampling]:
    """Unfinished triggers to resume, then one new trigger per model whose unclaimed kept rows
    reach ``after_rows`` (none when ``after_rows`` is None); new ones are recorded here."""
    path = store_paths(store)["duckdb"]
    if not path.exists():
        return []
    with ValuationStore(path) as db:
        due = [Resampling(r["resampling_id"], r["model_name"], r["run_id"], r["rows"],
                          RunConfig.build(r["config"]).replace(store=store))
               for r in inbox_store.running_resamplings(db)]
        if after_rows is None:
            return due
        busy = {job.model_name for job in due}
        for model_name, kept in inbox_store.unclaimed_rows(db).select("model_name", "kept").iter_rows():
            if kept >= after_rows and model_name not in busy:
                due.append(_begin(db, store, model_name))
    return due


def finish(store: str, job: Resampling) -> None:
    with ValuationStore(store_paths(store)["duckdb"]) as db:
        inbox_store.finish_resampling(db, job.resampling_id)


def _begin(db: ValuationStore, store: str, model_name: str) -> Resampling:
    """Write the grown training table, derive its run config and id, record the trigger."""
    base = _base_run(db, model_name)
    base_config = RunConfig.build(json.loads(base["config"])).replace(store=store, out=None)
    try:
        inputs = load_inputs(base_config.inputs, seed=base_config.sampling.seed, store=store)
    except AmortvalError as error:
        raise DataValidationError(f"cannot re-value {model_name}: the training file of its run {base['run_id']} "
                                  f"does not load: {error}") from None
    files = inbox_store.model_files(db, model_name)
    table, flags = _grown_table(read_table(inputs.path), inputs.data.mislabeled_column, store, files)
    unclaimed = files.filter(pl.col("resampling_id").is_null())
    hashes = unclaimed["content_hash"].to_list()
    resampling_id = "resample-" + hashlib.sha256(
        f"{base['run_id']}|{'|'.join(files['content_hash'])}".encode()).hexdigest()[:12]
    path = write_parquet(table, store_paths(store)["root"] / "inbox-training" / resampling_id /
                         f"{inputs.dataset_name}.parquet")
    config = base_config.replace(data=str(path), target=inputs.data.target, valid=inputs.valid_source,
                                 mislabeled_column=flags, model_name=model_name)
    grown = load_inputs(config.inputs, seed=config.sampling.seed, store=store)
    rows = int(unclaimed["kept"].sum())
    sampled = max(base_config.sampling.n_sampled(inputs.problem.n), rows)
    n = grown.problem.n
    config = config.replace(points=float(min(sampled, n)) if sampled > 1 else 1 / n)  # a count; 1 would be "all"
    job = Resampling(resampling_id, model_name, config.run_id(grown.dataset_id, n), rows, config)
    inbox_store.begin_resampling(db, resampling_id, model_name=model_name, base_run_id=base["run_id"],
                                 run_id=job.run_id, config=config.model_dump(mode="json"), hashes=hashes,
                                 rows=job.rows)
    return job


def _base_run(db: ValuationStore, model_name: str) -> dict:
    """The model's newest completed valuation not started by the inbox."""
    started = inbox_store.inbox_run_ids(db)
    runs = db.runs().filter((pl.col("model_name") == model_name) & (pl.col("status") == "completed")
                            & ~pl.col("run_id").is_in(list(started)))
    if runs.is_empty():
        raise AmortvalError(f"model {model_name} has no completed valuation in store {db.path} to extend; "
                            "run `amortval value` on its training data into this store")
    return runs.row(0, named=True)


def _grown_table(base: pl.DataFrame, flag_column: str | None, store: str,
                 files: pl.DataFrame) -> tuple[pl.DataFrame, str | None]:
    """(base rows + every file's kept rows, in the base's columns; the flag column if every row has one)."""
    parts = [base]
    for name, digest in files.select("file_name", "content_hash").iter_rows():
        kept = inbox_outputs(store, name, digest)
        if not kept.exists():
            raise DataValidationError(f"the kept rows of inbox file {name} ({kept}) are gone; restore the file "
                                      "or move the store's inbox records aside")
        parts.append(pl.read_parquet(kept).drop(SCORING_COLUMNS, strict=False))
    table = pl.concat(parts, how="diagonal_relaxed").select(base.columns)
    if flag_column and table[flag_column].null_count():
        # Inbox rows without known label errors: the grown table has none to report on.
        return table.drop(flag_column), None
    return table, flag_column
