"""Value a dataset: inputs -> begin -> rounds of (batches -> amortize -> stop?) -> record.

Workers only compute (one Prefect task = one batch of Monte Carlo units); this process
is the single DuckDB writer and commits each finished batch with its done-marker, so
re-running the same command resumes a killed run exactly where it stopped, and a larger
``--samples`` computes only the draws the store does not hold yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run

from amortval.data.store import ValuationStore
from amortval.errors import AmortvalError
from amortval.flows.interrupt import reclaim_sigterm
from amortval.flows.runners import batch_runner, batch_slots, check_cluster, worker_peak_rss_mb
from amortval.tasks.config import RunConfig
from amortval.tasks.marginals import BatchSpec, evaluate_batch
from amortval.tasks.paths import check_run_paths
from amortval.tasks.prepare import load_inputs
from amortval.tasks.batch_sizes import BatchSizer
from amortval.tasks.progress import Progress
from amortval.tasks.amortize import AmortizationResult
from amortval.tasks.record import amortize_run, record, stored_summary
from amortval.tasks.report import export_values
from amortval.tasks.run_plan import RunPlan, begin, describe, pending, plan_run, seconds_per_fit
from amortval.tasks.stopping import Round, first_samples, make_round, next_samples, round_line, stop_reason
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


evaluate_batch_task = task(evaluate_batch, name="evaluate-batch", cache_policy=NO_CACHE, retries=2,
                           retry_condition_fn=_retry_unless_user_error)
amortize_task = task(amortize_run, name="amortize", cache_policy=NO_CACHE)
record_task = task(record, name="record", cache_policy=NO_CACHE)


def run_batches(db: ValuationStore, plan: RunPlan, todo: list[range]) -> tuple[int, list[float] | None]:
    """Submit the pending unit ranges in batches sized by work; commit each batch as soon as
    it finishes. Returns the fits and the Dask workers' peak RSS in MB (None on threads)."""
    logger, config = get_run_logger(), plan.config
    workers = config.thread_count
    logger.info(describe(plan, todo, seconds_per_fit(db, plan), workers))
    if not todo:
        return 0, None
    progress = Progress("sampling", plan.n_units, unit="units", already_done=plan.n_units - sum(map(len, todo)),
                        log=logger.info)
    with batch_runner(config.runner, workers, config.dask_address) as pool:
        workers = batch_slots(pool, workers)
        batches = BatchSizer(todo, workers=workers)

        def submit() -> set:
            units = batches.next()
            return set() if units is None else {pool.submit(evaluate_batch_task, {"spec": BatchSpec(
                plan.sampling_id, units.start, units.stop, str(plan.problem_path), config.utility, config.sampling)})}

        # A bounded window of batches in flight: memory stays flat however large the budget.
        in_flight = set().union(*(submit() for _ in range(2 * workers)))
        while in_flight:
            finished, _ = wait(in_flight, timeout=progress.every_s)
            if not finished:
                progress.heartbeat()
                continue
            for future in finished:
                in_flight.remove(future)
                result = future.result()
                db.commit_batch(plan.sampling_id, result.start, result.stop, result.samples, n_fits=result.n_fits,
                                n_fallbacks=result.n_fallbacks, seconds=result.seconds, run_id=plan.run_id)
                batches.observe(result.stop - result.start, result.seconds)
                progress.update(result.stop - result.start, samples=len(result.samples), fits=result.n_fits,
                                fallback_fits=result.n_fallbacks)
                in_flight |= submit()
        worker_rss = worker_peak_rss_mb(pool)
    progress.close()
    return progress.counts.get("fits", 0), worker_rss


@flow(name="value-dataset")
def value_dataset(config: RunConfig = RunConfig(), amortize_only: bool = False) -> dict:
    """Estimate every training point's value, amortize, register the valuation network.

    ``config`` holds every option (``tasks/config.py``); a deployment passes only the
    options it changes. ``amortize_only`` retrains from stored samples and refuses to fit.
    """
    started = time.time()
    reclaim_sigterm()  # under the CLI: TERM stops within seconds, even with a long batch in flight
    pin_threads()
    config = RunConfig.build(config)
    check_run_paths(config.store, config.out, [config.inputs.data, config.inputs.valid])
    inputs = load_inputs(config.inputs, seed=config.sampling.seed, store=config.store)
    plan = plan_run(config, inputs)
    if not amortize_only:
        check_cluster(config.dask_address, plan.problem_path)
    logger = get_run_logger()
    with ValuationStore(plan.paths["duckdb"]) as db:
        summary, worker_rss = None, None
        if begin(db, plan, inputs) == "completed":
            summary = stored_summary(db, plan, logger.info)
        if summary is None:
            done = sample_in_rounds(db, plan, inputs, started, amortize_only)
            worker_rss = done.worker_rss
            summary = record_task(db, done.plan, inputs, done.result, started_at=started, new_fits=done.new_fits,
                                  rounds=done.rounds, stop_reason=done.reason)
    export_values(summary["values_path"], config.out)
    return {**summary, "source": inputs.source, "out": config.out, "flow_run_id": str(flow_run.id),
            "seconds": time.time() - started, "warnings": list(inputs.data.warnings),
            "worker_peak_rss_mb": worker_rss}


@dataclass
class Sampled:
    plan: RunPlan  # at the budget reached
    result: AmortizationResult  # of the last round
    rounds: list[Round]
    reason: str
    new_fits: int = 0
    worker_rss: list[float] | None = None


def sample_in_rounds(db: ValuationStore, plan: RunPlan, inputs, started: float, amortize_only: bool) -> Sampled:
    """Rounds of growing budgets (tasks/stopping.py): sample what the round adds, amortize
    on all draws so far, estimate the error, stop when the rules say so. Without a rule
    this is one round at ``--samples``."""
    logger, config = get_run_logger(), plan.config
    samples, rounds, new_fits, worker_rss = first_samples(config), [], 0, None
    pretrained: dict = {}  # each fold network's pretraining, done in round 1, reused after
    while True:
        current, began = plan.at(samples), time.time()
        fits, rss = run_batches(db, current, pending(db, current, stored_only=amortize_only))
        new_fits, worker_rss, sampled = new_fits + fits, rss or worker_rss, time.time()
        epochs, on_epoch = _epoch_progress(logger, current)
        result = amortize_task(db, current, inputs, progress=on_epoch, pretrained=pretrained)
        epochs.close()
        rounds.append(make_round(rounds, samples, db.fit_count(plan.sampling_id, below_unit=current.n_units),
                                 time.time() - started, sampled - began, time.time() - sampled,
                                 result.values, result.error.nmse, result.error.nmse_se))
        reason = stop_reason(config, rounds)
        logger.info(round_line(config, rounds, reason))
        if reason is not None:
            return Sampled(current, result, rounds, reason, new_fits, worker_rss)
        samples = next_samples(config, rounds)


def _epoch_progress(logger, plan: RunPlan) -> tuple[Progress, Callable[[dict], None]]:
    """Amortization progress (folds x learning rates x regression epochs) and its per-epoch
    callback; the per-epoch lines go to debug level only (``--verbose``): 5 folds x 2 rates x
    11 epochs would bury the progress. With fewer draws than folds, each draw is a fold (tasks/amortize.py)."""
    amortization, samples = plan.config.amortization, plan.samples
    folds = min(amortization.folds, samples) if samples >= 2 else amortization.folds
    total = folds * amortization.lr_tries * (amortization.epochs + 1)
    progress = Progress("amortization", total, unit="epochs", log=logger.info, steps=4)

    def epoch(h: dict) -> None:
        logger.debug("amortization fold %(fold)d lr %(lr).2g epoch %(epoch)d: train MSE %(train_mse).3g, "
                     "held-out MSE %(heldout_mse).3g", h)
        progress.update(1)

    return progress, epoch
