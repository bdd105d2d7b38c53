"""Curate an inbox folder: scan -> curate each new file -> re-value grown datasets.

Files are recognised by content (sha256), curated one at a time like ``amortval
curate`` does (``tasks/inbox.py``), and a file that fails validation is moved into
``<inbox>/rejected/`` while the others go ahead. Then the re-sampling rule
(``tasks/resampling.py``) decides whether a dataset has grown enough to value again.

``python -m amortval.flows.inbox_once`` runs it once from a shell; ``prefect.yaml``'s
``inbox-curation`` deployment runs it every 15 minutes.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from amortval.flows.valuation import value_dataset
from amortval.tasks import tracking
from amortval.tasks.config import RunConfig
from amortval.tasks.curate import CurationRule
from amortval.tasks.inbox import check_inbox_store, curate_inbox_file, inbox_folder, scan_inbox
from amortval.tasks.resampling import check_resample_after, due_resamplings, finish
from amortval.tasks.runtime import pin_threads

curate_file_task = task(curate_inbox_file, name="curate-file", cache_policy=NO_CACHE)


@flow(name="curate-inbox")
def curate_inbox(
    inbox: str | None = None, store: str = RunConfig.model_fields["store"].default, model_name: str | None = None,
    alias: str = tracking.CHAMPION, model_version: str | None = None, threshold: float | None = None,
    drop_fraction: float | None = None, mislabeled_column: str | None = None, resample_after_rows: int | None = 1000,
) -> dict:
    """Curate every new CSV/Parquet file of ``inbox`` (default ``<store>/inbox``) once.

    Each new file is scored with the champion network of the dataset whose columns it has
    (or ``model_name``; rule, alias and flag column as for ``curate-dataset``); its kept and
    dropped rows go to ``<store>/curated/inbox/<stem>.<hash>.{curated,dropped}.parquet``,
    its scores and a row of ``inbox_files`` to DuckDB, a run to MLflow. A file that fails
    validation is moved into ``<inbox>/rejected/`` with ``<file>.error.txt``.

    Re-sampling: when a dataset's kept inbox rows not yet re-valued reach
    ``resample_after_rows`` (default 1,000; None never re-samples), its training file plus
    the kept rows of every inbox file scored with its model are valued again as a subflow,
    with the stored config of the model's last own valuation and ``points`` = as many rows
    as that valuation sampled, or as the new kept rows if more: fresh Monte Carlo samples
    for that seeded subset, a new network version for every row. Returns the counts
    (processed, rejected, skipped), each file's outcome and the re-valuations.
    """
    pin_threads()
    logger = get_run_logger()
    CurationRule(threshold=threshold, drop_fraction=drop_fraction)  # a bad rule fails before any file
    check_resample_after(resample_after_rows)
    folder = inbox_folder(inbox, store)
    scan = scan_inbox(folder, store)
    if scan.new:
        check_inbox_store(store)
    outcomes = []
    for item in scan.new:
        outcome = curate_file_task(item, store=store, model_name=model_name, alias=alias,
                                   model_version=model_version, threshold=threshold, drop_fraction=drop_fraction,
                                   mislabeled_column=mislabeled_column)
        if outcome["status"] == "processed":
            logger.info("Curated %s with %s: kept %d, dropped %d -> %s", outcome["file"], outcome["model_uri"],
                        outcome["rows_kept"], outcome["rows_dropped"], outcome["curated"])
        else:
            logger.warning("Rejected %s: %s (moved to %s)", outcome["file"], outcome["error"], outcome["moved_to"])
        outcomes.append(outcome)
    revalued = []
    for job in due_resamplings(store, resample_after_rows):
        logger.info("Re-sampling %s: %d new kept rows; valuing %s (run %s)", job.model_name, job.rows,
                    job.config.inputs.data, job.run_id)
        valued = value_dataset(config=job.config)
        finish(store, job)
        revalued.append({"resampling_id": job.resampling_id, "model_name": job.model_name, "rows": job.rows,
                         "run_id": valued["run_id"], "model_version": valued.get("model_version"),
                         "data": job.config.inputs.data})
    counts = {status: sum(o["status"] == status for o in outcomes) for status in ("processed", "rejected")}
    logger.info("Inbox %s: %d processed, %d rejected, %d skipped, %d re-valued", folder, counts["processed"],
                counts["rejected"], len(scan.skipped), len(revalued))
    return {"inbox": str(folder), **counts, "skipped": len(scan.skipped), "skipped_files": scan.skipped,
            "ignored_files": scan.ignored, "files": outcomes, "resampled": revalued}
