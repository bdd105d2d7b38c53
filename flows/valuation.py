"""Value a dataset: validate -> plan -> evaluate batches -> commit -> amortize -> track.

Workers only compute (one Prefect task = one batch of fits); this process is the single
DuckDB writer and commits each finished batch with its done-marker, so re-running the
same command resumes a killed run exactly where it stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run

from amortval.data.store import ValuationStore
from amortval.errors import AmortvalError
from amortval.flows.runners import batch_runner, check_runner
from amortval.models.valuation_model import ValuationModel
from amortval.tasks import report, tracking
from amortval.tasks.amortize import amortize
from amortval.tasks.config import AmortizationConfig, ValuationConfig
from amortval.tasks.marginals import BatchSpec, evaluate_batch, plan_batches
from amortval.tasks.prepare import DEFAULT_STORE, Inputs, load_inputs, store_paths
from amortval.tasks.progress import BatchProgress
from amortval.tasks.runtime import pin_threads


def _retry_unless_user_error(task, task_run, state) -> bool:
    """Retry transient failures (a crashed fit); never retry bad input or config."""
    try:
        state.result()
    except AmortvalError:
        return False
    except Exception:
        return True
    return False


evaluate_batch_task = task(
    evaluate_batch, name="evaluate-batch", cache_policy=NO_CACHE, retries=2,
    retry_condition_fn=_retry_unless_user_error,
)
amortize_task = task(amortize, name="amortize", cache_policy=NO_CACHE)
log_run_task = task(tracking.log_valuation_run, name="log-to-mlflow", cache_policy=NO_CACHE)


def run_batches(db: ValuationStore, run_id: str, config: ValuationConfig, problem_path: Path, n_batches: int,
                runner: str, workers: int) -> None:
    """Submit the batches without a done-marker; commit each as soon as it finishes."""
    logger = get_run_logger()
    done = db.done_batches(run_id)
    todo = [b for b in range(n_batches) if b not in done]
    if done:
        logger.info("Resuming %s: %d of %d batches already stored", run_id, len(done), n_batches)
    if not todo:
        return
    progress = BatchProgress(total=n_batches, already_done=len(done), log=logger.info)
    with batch_runner(runner, workers) as pool:
        futures = [pool.submit(evaluate_batch_task, {"spec": BatchSpec(run_id, b, str(problem_path), config)})
                   for b in todo]
        for future in as_completed(futures):
            result = future.result()
            db.commit_batch(run_id, result.batch, result.samples, n_fits=result.n_fits,
                            n_fallbacks=result.n_fallbacks, seconds=result.seconds)
            progress.update(len(result.samples), result.n_fits, result.n_fallbacks)


def amortize_and_track(db: ValuationStore, run_id: str, inputs: Inputs, config: ValuationConfig,
                       store_root: Path, model_name: str, seconds_valuation: float) -> dict:
    """Train the valuation network on the stored samples, then record it everywhere."""
    logger = get_run_logger()
    problem, data = inputs.problem, inputs.data
    result = amortize_task(
        problem.x_train, problem.y_train, problem.n_classes,
        db.samples(run_id).select("point", "draw", (pl.col("weight") * pl.col("delta")).alias("value")),
        config=config.amortization, seed=config.seed,
        progress=lambda h: logger.info("amortization fold %(fold)d epoch %(epoch)d: train MSE %(train_mse).3g, "
                                       "held-out MSE %(heldout_mse).3g", h),
    )
    db.write_estimates(run_id, "monte_carlo", db.monte_carlo_estimates(run_id))
    db.write_estimates(run_id, "amortized", pl.DataFrame({"point": range(problem.n), "value": result.network_values}))
    db.write_estimates(run_id, "combined", pl.DataFrame({"point": range(problem.n), "value": result.values}))
    model = ValuationModel(inputs.encoder, result.net, result.target_scale)
    valid_values = model.predict(inputs.model_columns(data.valid)) if data.valid_rows is not None else None
    table = report.values_table(data, db.estimates(run_id), valid_values)
    values_path = report.write_parquet(table, store_root / "values" / f"{run_id}.parquet")
    quality, quality_figures = report.quality_report(inputs, config, table)
    metrics = {
        **report.gate_metrics(result), **report.summary_metrics(table), **quality,
        "samples_stored": float(db.sample_count(run_id)), "model_fits": float(db.fit_count(run_id)),
        "fallback_fits": float(db.fallback_count(run_id)),
        **report.status_metrics(db.status_counts(run_id)),
        "seconds_valuation": seconds_valuation,
    }
    db.log_metrics(run_id, metrics)
    uri = tracking.tracking_uri(store_root)
    tracking.init_tracking(uri, store_root)
    logged = log_run_task(
        uri=uri, experiment=tracking.DEFAULT_EXPERIMENT, run_name=run_id,
        params=report.run_params(run_id, inputs, config), metrics=metrics, history=result.history,
        tables={"values": table}, figures={**report.run_figures(table, result), **quality_figures}, model=model,
        input_example=inputs.model_columns(data.train).head(5).to_pandas(), registered_name=model_name,
        gate_passed=result.gate_passed, tags={"amortval.run_id": run_id, "amortval.data": problem.fingerprint},
    )
    db.set_run_status(run_id, "completed", mlflow_run_id=logged.run_id, model_version=str(logged.model_version))
    return {"values_path": str(values_path), "mlflow_uri": uri, "mlflow_run_id": logged.run_id,
            "model_name": model_name, "model_version": logged.model_version, "alias_set": logged.alias_set, **metrics}


@flow(name="value-dataset", flow_run_name="value-{method}-{learner}-seed{seed}")
def value_dataset(
    data: str | None = None, target: str | None = None, valid: str | None = None,
    learner: str = "logreg", method: str = "shapley", sampler: str | None = None,
    samples: int = ValuationConfig.samples, seed: int = 0, alpha: float = 16.0, beta: float = 1.0,
    store: str = DEFAULT_STORE, out: str | None = None, mislabeled_column: str | None = None,
    valid_fraction: float = 0.2, model_name: str = tracking.DEFAULT_MODEL_NAME,
    batch_fits: int = ValuationConfig.batch_fits, epochs: int = AmortizationConfig.epochs,
    knn_k: int = ValuationConfig.knn_k,
    workers: int | None = None, runner: str = "threads", allow_missing: bool = False, encode: bool = True,
) -> dict:
    """Estimate every training point's value, amortize, register the valuation network.

    ``workers`` (default: the CPU count) batches run at once on ``runner`` (``threads``
    or ``dask``, see ``flows/runners.py``); neither changes the results or the run id.
    """
    pin_threads()
    workers = (os.cpu_count() or 1) if workers is None else workers
    check_runner(runner, workers)
    config = ValuationConfig(learner=learner, method=method, sampler=sampler, samples=samples, seed=seed,
                             alpha=alpha, beta=beta, batch_fits=batch_fits, knn_k=knn_k,
                             amortization=AmortizationConfig(epochs=epochs))
    inputs = load_inputs(data, target, valid=valid, valid_fraction=valid_fraction, seed=seed,
                         mislabeled_column=mislabeled_column, store=store, allow_missing=allow_missing,
                         encode=encode)
    paths = store_paths(store)
    run_id = config.run_id(inputs.problem.fingerprint)
    problem_path = inputs.problem.save(paths["problems"] / f"{inputs.problem.fingerprint}.npz")
    n_batches = plan_batches(config, inputs.problem.n)
    started = time.perf_counter()
    with ValuationStore(paths["duckdb"]) as db:
        db.register_dataset(inputs.problem.fingerprint, inputs.data.name, inputs.problem.n,
                            inputs.problem.n_features, {"columns": inputs.encoder.input_schema()})
        status = db.begin_run(run_id, inputs.problem.fingerprint, config.to_dict(), seed, inputs.problem.n, n_batches)
        if status == "completed":
            get_run_logger().info("Run %s is already complete; reporting its stored results", run_id)
            summary = {"values_path": str(paths["values"] / f"{run_id}.parquet"), **db.metrics(run_id),
                       **{k: v for k, v in (db.run(run_id) or {}).items() if k in ("mlflow_run_id", "model_version")}}
        else:
            run_batches(db, run_id, config, problem_path, n_batches, runner, workers)
            db.set_run_status(run_id, "valued")
            summary = amortize_and_track(db, run_id, inputs, config, paths["root"], model_name,
                                         time.perf_counter() - started)
    if out:
        report.write_parquet(pl.read_parquet(summary["values_path"]), out)
    return {"run_id": run_id, "flow_run_id": str(flow_run.id), "store": str(paths["root"]), "duckdb": str(paths["duckdb"]),
            "source": inputs.source, "out": out, "seconds": time.perf_counter() - started, **summary}
