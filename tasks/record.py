"""After the samples: amortize, then record the run in DuckDB, Parquet and MLflow.

Plain functions (no Prefect): the flow calls them as tasks. ``record`` is the only place
a run becomes 'completed', and it writes DuckDB's record last, so a run is never
reported completed without its MLflow run and registered model. ``stored_summary``
checks the two against each other before reporting a finished run.

Re-reporting a finished run is the fixed cost of every ``amortval value`` whose work is
done, so it loads neither torch nor matplotlib nor (for a local store) mlflow: the
network, the report and the amortization are imported by the functions that use them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl

from amortval.data.store import ValuationStore
from amortval.tasks import tracking
from amortval.tasks.runtime import peak_rss_mb

if TYPE_CHECKING:
    from amortval.tasks.amortize import AmortizationResult
    from amortval.tasks.prepare import Inputs
    from amortval.tasks.run_plan import RunPlan
    from amortval.tasks.stopping import Round


def amortize_run(db: ValuationStore, plan: RunPlan, inputs: Inputs,
                 progress: Callable[[dict], None] | None = None, pretrained: dict | None = None) -> AmortizationResult:
    """Train the valuation network on the run's samples (draws below its budget);
    ``pretrained`` carries the fold networks' pretraining from one round to the next."""
    from amortval.tasks.amortize import amortize

    problem, config = inputs.problem, plan.config
    samples = db.samples(plan.sampling_id, below_draw=plan.samples)
    return amortize(problem.x_train, problem.y_train, problem.n_classes,
                    samples.select("point", "draw", (pl.col("weight") * pl.col("delta")).alias("value"), "cardinality"),
                    config=config.amortization, seed=config.sampling.seed, progress=progress, pretrained=pretrained)


def record(db: ValuationStore, plan: RunPlan, inputs: Inputs, result: AmortizationResult, *,
           started_at: float, new_fits: int, rounds: list[Round] | None = None, stop_reason: str | None = None) -> dict:
    """Estimates and metrics to DuckDB, the values table to Parquet, the run and its network
    to MLflow (registered under the plan's model name); returns the run's summary.

    ``plan`` is at the budget the run reached; ``rounds`` (tasks/stopping.py) are stored in
    the ``rounds`` table and logged to MLflow as the curve ``round_estimated_nmse`` (step:
    samples per point)."""
    from amortval.models.valuation_model import ValuationModel
    from amortval.tasks import report

    problem, data, config, run_id = inputs.problem, inputs.data, plan.config, plan.run_id
    budget = plan.samples
    rounds = rounds or []
    db.write_rounds(run_id, pl.DataFrame({
        "round": [r.index for r in rounds], "samples": [r.samples for r in rounds], "fits": [r.fits for r in rounds],
        "seconds": [r.seconds for r in rounds], "estimated_nmse": [r.estimated_nmse for r in rounds],
        "estimated_nmse_se": [r.estimated_nmse_se for r in rounds],
        "stop_reason": [stop_reason if r is rounds[-1] else None for r in rounds]},
        schema={"round": pl.Int32, "samples": pl.Int32, "fits": pl.Int64, "seconds": pl.Float64,
                "estimated_nmse": pl.Float64, "estimated_nmse_se": pl.Float64, "stop_reason": pl.String}))
    db.write_estimates(run_id, "monte_carlo", db.monte_carlo_estimates(plan.sampling_id, below_draw=budget))
    db.write_estimates(run_id, "amortized", pl.DataFrame({"point": range(problem.n), "value": result.network_values}))
    db.write_estimates(run_id, "combined", pl.DataFrame({"point": range(problem.n), "value": result.values}))
    model = ValuationModel(inputs.encoder, result.net, result.target_scale)
    valid_values = model.predict(inputs.model_columns(data.valid)) if data.valid_rows is not None else None
    table = report.values_table(data, db.estimates(run_id), valid_values, plan.sampled_mask())
    report.write_parquet(table, plan.values_path)
    quality, quality_figures = report.quality_report(inputs, config, table)
    metrics = {
        **report.gate_metrics(result), **report.summary_metrics(table), **quality,
        "samples_stored": float(db.sample_count(plan.sampling_id, below_draw=budget)),
        "model_fits": float(db.fit_count(plan.sampling_id, below_unit=plan.n_units)),
        "new_model_fits": float(new_fits),
        "fallback_fits": float(db.fallback_count(plan.sampling_id, below_unit=plan.n_units)),
        **report.status_metrics(db.status_counts(plan.sampling_id, below_draw=budget)),
        "seconds_total": time.time() - started_at,
        "samples_per_point": float(budget), "rounds": float(max(len(rounds), 1)),
        "peak_rss_mb": peak_rss_mb(),  # the flow process: samples, network and tables all pass through it
    }
    db.log_metrics(run_id, metrics)
    uri = tracking.tracking_uri(plan.paths["root"])
    tracking.init_tracking(uri, plan.paths["root"], plan.experiment)
    logged = tracking.log_valuation_run(
        uri=uri, experiment=plan.experiment, run_name=run_id, params=report.run_params(plan, inputs),
        metrics=metrics, history=result.history, tables={"values": table},
        curves={"round_estimated_nmse": [(r.samples, r.estimated_nmse) for r in rounds],
                "round_seconds": [(r.samples, r.seconds) for r in rounds]},
        figures={**report.run_figures(table, result), **quality_figures}, model=model,
        input_example=inputs.model_columns(data.train).head(5).to_pandas(),
        tags={"amortval.run_id": run_id, "amortval.sampling_id": plan.sampling_id,
              "amortval.dataset_id": plan.dataset_id, "amortval.dataset": inputs.dataset_name,
              "gate_passed": str(bool(result.gate_passed))},
        started_at=started_at,
        dataset=tracking.TrainingTable(inputs.model_columns(data.train).to_pandas(), inputs.path,
                                       inputs.dataset_name, data.target),
        summary=report.markdown_summary(plan, inputs, metrics),
    )
    registered = _register(uri, plan, logged, result.gate_passed, metrics)
    db.set_run_status(run_id, "completed", samples=budget, mlflow_run_id=logged.run_id, model_name=registered.name,
                      model_version=registered.version, model_uri=logged.model_uri,
                      wall_seconds=time.time() - started_at, new_fits=new_fits)
    return summary(db, plan) | {"alias_set": registered.alias_set}


def _register(uri: str, plan: RunPlan, logged: tracking.LoggedRun, gate_passed: bool,
              metrics: dict) -> tracking.Registered:
    tags = {k: str(v) for k, v in metrics.items() if k.startswith("gate_")} | {
        "amortval.run_id": plan.run_id, "amortval.dataset_id": plan.dataset_id}
    return tracking.register(uri, plan.model_name, model_uri=logged.model_uri, run_id=logged.run_id,
                             model_id=logged.model_id, gate_passed=gate_passed, tags=tags)


def stored_summary(db: ValuationStore, plan: RunPlan, log: Callable[[str], None]) -> dict | None:
    """The summary of a completed run, after checking its MLflow run still exists.

    None when the tracking store lost the run (``mlflow.db`` deleted or replaced): the
    caller re-amortizes from the stored samples (no fits) and logs it anew. A model name
    other than the one recorded registers the stored network under that name too.
    """
    stored = db.run(plan.run_id) or {}
    uri = tracking.tracking_uri(plan.paths["root"])
    # The common case is settled with sqlite3 alone (no MLflow import: local_run_active says why).
    settled = (stored.get("model_name") == plan.model_name and plan.values_path.exists()
               and tracking.local_run_active(uri, stored.get("mlflow_run_id")))
    if not settled:
        tracking.init_tracking(uri, plan.paths["root"], plan.experiment)
        if not tracking.run_exists(uri, stored.get("mlflow_run_id")) or not plan.values_path.exists():
            log(f"run {plan.run_id} is complete in DuckDB but its MLflow run {stored.get('mlflow_run_id')} "
                f"or values file is missing from {uri}: re-amortizing from the stored samples (no model fits)")
            return None
        if stored.get("model_name") != plan.model_name:
            metrics = db.metrics(plan.run_id)
            logged = tracking.LoggedRun(stored["mlflow_run_id"], stored["model_uri"], None)
            registered = _register(uri, plan, logged, bool(metrics.get("gate_passed")), metrics)
            db.set_run_status(plan.run_id, "completed", model_name=registered.name, model_version=registered.version)
            log(f"registered the stored network of {plan.run_id} as {registered.uri}")
            return summary(db, plan) | {"alias_set": registered.alias_set, "reported_stored": True}
    log(f"run {plan.run_id} is already complete; reporting its stored results")
    return summary(db, plan) | {"reported_stored": True}


def completed_summary(plan: RunPlan, log: Callable[[str], None]) -> dict | None:
    """The stored summary when the run is already complete (and its MLflow run exists),
    without starting a workflow: re-reporting a finished run has nothing to orchestrate.
    None when there is work to do."""
    with ValuationStore(plan.paths["duckdb"]) as db:
        run = db.run(plan.run_id)
        if run is None or run["status"] != "completed":
            return None
        return stored_summary(db, plan, log)


def summary(db: ValuationStore, plan: RunPlan) -> dict:
    """What the CLI prints and the flow returns: ids, files, figures."""
    stored = db.run(plan.run_id) or {}
    return {
        "run_id": plan.run_id, "stop_reason": db.stop_reason(plan.run_id), "sampling_id": plan.sampling_id, "dataset_id": plan.dataset_id,
        "store": str(plan.paths["root"]), "duckdb": str(plan.paths["duckdb"]), "values_path": str(plan.values_path),
        "mlflow_uri": tracking.tracking_uri(plan.paths["root"]), "mlflow_run_id": stored.get("mlflow_run_id"),
        "model_name": stored.get("model_name"), "model_version": stored.get("model_version"),
        "experiment": plan.experiment, "n_points": plan.n_points, "n_sampled": plan.n_sampled,
        **db.metrics(plan.run_id),
    }
