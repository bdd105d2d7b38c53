"""The Python entry point: ``amortval.value``, ``amortval.curate``, ``amortval.load``.

The same path as the command line, from the same ``RunConfig``: options are the CLI's
(``samples=20``, ``epochs=5``, ``learner="xgboost"``); input is validated before any work;
a finished run is reported without starting a workflow. ``data`` may also be a polars or
pandas DataFrame: it is written once to ``<store>/inputs/<content hash>/<name>.parquet``,
so the same frame names the same dataset (and run) every time.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amortval.result import CurationResult, ValuationResult


def value(data: Any = None, target: str | None = None, *, name: str = "frame", stop: Any = None,
          **options: Any) -> ValuationResult:
    """Value every row of ``data`` (a CSV/Parquet path, a polars or pandas frame, or None for
    the built-in demo); returns the finished run as a ``ValuationResult``.

    ``stop``: a stopping rule composed with ``|`` and ``&`` from ``amortval.stopping``
    (``TargetError(0.1) | TimeBudget(600)``); without it the options' rules apply
    (``target_error``, ``time_budget``, ``until_stable``), capped by ``samples``."""
    from amortval.tasks.config import RunConfig

    if stop is not None:
        from amortval.tasks.stopping import Rule

        if not isinstance(stop, Rule):
            from amortval.errors import ConfigError

            raise ConfigError(f"stop must be a rule from amortval.stopping (got {type(stop).__name__})")
        options["rule"] = repr(stop)
    store = options.get("store", RunConfig.model_fields["store"].default)
    config = RunConfig.from_options(data=_as_path(data, store, name), target=target, **options)
    return ValuationResult.from_summary(run(config))


def run(config, *, amortize_only: bool = False, planned: Callable | None = None) -> dict:
    """Validate (before any work), report a finished run as it is, else run the flow.

    ``planned(plan)`` is called once the run's plan is known (the CLI uses it to say,
    when interrupted, how many batches are stored)."""
    from amortval.data.store import ensure_store_free
    from amortval.tasks.paths import check_free_space, check_run_paths
    from amortval.tasks.prepare import load_inputs, store_paths

    check_run_paths(config.store, config.out, [config.inputs.data, config.inputs.valid])
    if config.dask_address and not amortize_only:  # before the demo or the problem file is written
        from amortval.flows.runners import check_cluster

        check_cluster(config.dask_address)
    inputs = load_inputs(config.inputs, seed=config.sampling.seed, store=config.store)
    for warning in inputs.data.warnings:
        print(f"amortval: warning: {warning}", file=sys.stderr)
    ensure_store_free(store_paths(config.store)["duckdb"])  # a held store fails here, before Prefect starts
    started = time.time()
    from amortval.tasks.run_plan import plan_run, storage_needed, stored_status

    check_free_space(config.store, storage_needed(config, inputs))
    plan = plan_run(config, inputs)
    if planned is not None:
        planned(plan)
    if stored_status(plan) == "completed":  # nothing to compute: report without starting a workflow
        from amortval.tasks.record import completed_summary

        done = completed_summary(plan, log=lambda line: print(f"amortval: {line}", file=sys.stderr))
        if done is not None:
            if config.out:  # the report module loads matplotlib and torch: only when there is a copy to write
                from amortval.tasks.report import export_values

                export_values(done["values_path"], config.out)
            return {**done, "source": inputs.source, "out": config.out, "seconds": time.time() - started}
    from amortval.flows.valuation import value_dataset

    return value_dataset(config=config, amortize_only=amortize_only)


def curate(data: Any, *, store: str | None = None, name: str = "frame", **options: Any) -> CurationResult:
    """Score ``data`` (path or frame) with the registered network of its dataset; see
    ``amortval curate --help`` for the options (``threshold``, ``drop_fraction``, ``model_name``...)."""
    from amortval.flows.curation import curate_dataset
    from amortval.tasks.config import RunConfig

    store = store or RunConfig.model_fields["store"].default
    return CurationResult.from_summary(curate_dataset(data=_as_path(data, store, name), store=store, **options))


def load(run_id: str, *, store: str | None = None) -> ValuationResult:
    """A finished run of a store, by id (or unique prefix)."""
    from amortval.data.store import ValuationStore
    from amortval.errors import ConfigError
    from amortval.tasks.config import RunConfig
    from amortval.tasks.prepare import store_paths
    from amortval.tasks.tracking import tracking_uri

    paths = store_paths(store or RunConfig.model_fields["store"].default)
    if not paths["duckdb"].exists():
        raise ConfigError(f"no store at {paths['duckdb']}")
    with ValuationStore(paths["duckdb"]) as db:
        ids = [r for r in db.runs()["run_id"].to_list() if r.startswith(run_id)]
        if len(ids) != 1:
            raise ConfigError(f"{'no run' if not ids else 'several runs'} match {run_id!r} in {paths['root']}")
        stored, metrics = db.run(ids[0]), db.metrics(ids[0])
        stop_reason = db.stop_reason(ids[0])
    if stored["status"] != "completed":
        raise ConfigError(f"run {ids[0]} is {stored['status']}, not completed; re-run `amortval value` to finish it")
    return ValuationResult.from_summary({
        **metrics, "run_id": stored["run_id"], "sampling_id": stored["sampling_id"],
        "dataset_id": stored["dataset_id"], "store": str(paths["root"]),
        "values_path": str(paths["values"] / f"{stored['run_id']}.parquet"),
        "mlflow_uri": tracking_uri(paths["root"]), "mlflow_run_id": stored["mlflow_run_id"],
        "model_name": stored["model_name"], "model_version": stored["model_version"], "config": stored["config"],
        "stop_reason": stop_reason})


def _as_path(data: Any, store: str, name: str) -> str | None:
    """A path for ``data``: as given, or a frame written once under its content hash."""
    if data is None or isinstance(data, (str, Path)):
        return None if data is None else str(data)
    from amortval.data.encoding import as_polars

    frame = as_polars(data)
    digest = hashlib.sha256()
    digest.update(str(frame.schema).encode())
    digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    path = Path(store).expanduser().resolve() / "inputs" / digest.hexdigest()[:16] / f"{name}.parquet"
    if not path.exists():
        from amortval.tasks.report import write_parquet

        write_parquet(frame, path)
    return str(path)
