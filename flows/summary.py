"""What the CLI prints: a run's summary, where everything is, and the runs of a store."""

from __future__ import annotations

import json
from pathlib import Path


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def _error(nmse: float | None, se: float | None) -> str:
    """The estimated nMSE with its standard error; one over 1 (the error of giving every
    point the mean value) means the samples cannot measure it yet, and a bare number
    such as 0 would flatter."""
    if nmse is None or se is None:
        return f"nMSE {_fmt(nmse)}"
    if not se <= 1:  # also inf and nan
        return f"nMSE not measurable yet ({nmse:.3g} ± {se:.2g}; more samples per point tell)"
    return f"nMSE {nmse:.3g} ± {se:.2g}"


def print_valuation(r: dict) -> None:
    gate = "PASSED" if r.get("gate_passed") else "FAILED (champion alias not moved)"
    fallbacks = ", ".join(f"{int(v):,} {k[len('samples_'):]}" for k, v in r.items()
                          if k.startswith("samples_") and k != "samples_stored" and k != "samples_ok" and v)
    new_fits = int(r.get("new_model_fits", 0))
    reused = "" if new_fits == int(r.get("model_fits", 0)) else f"; {new_fits:,} of them computed now, the rest stored"
    if r.get("reported_stored"):
        reused = "; the run was already complete: nothing computed, stored results reported"
    lines = [
        f"amortval: valued {r.get('source')} in {r['seconds']:.1f} s  (run {r['run_id']})",
        f"  samples           {int(r.get('samples_stored', 0)):,} used  from {int(r.get('model_fits', 0)):,} model fits"
        + reused + (f"  (on {r['n_sampled']:,} sampled of {r['n_points']:,} rows; the network values all)"
                    if r.get("n_sampled", 0) < r.get("n_points", 0) else "") + (f"  (degenerate samples: {fallbacks})" if fallbacks else ""),
        f"  quality gate      {gate}: held-out MSE network {_fmt(r.get('gate_mse_network'))}"
        f" vs Monte Carlo {_fmt(r.get('gate_mse_monte_carlo'))} and constant {_fmt(r.get('gate_mse_constant'))}",
        f"  estimated error   {_error(r.get('estimated_nmse'), r.get('estimated_nmse_se'))}"
        f" at {_fmt(r.get('samples_per_point'), ',.0f')} samples per point"
        + (f", {int(r['rounds'])} rounds: {r['stop_reason']}" if r.get("stop_reason") else ""),
    ]
    if r.get("control_samples_adjusted"):
        lines.append(f"  control variate   {int(r['control_samples_adjusted']):,} small-coalition samples adjusted, "
                     f"sample variance x{r.get('control_variance_ratio', 1.0):.2f}  (--control-below)")
    if r.get("worker_peak_rss_mb"):
        lines.append(f"  Dask workers      peak RSS {', '.join(f'{mb:,.0f}' for mb in r['worker_peak_rss_mb'])} MB "
                     f"({len(r['worker_peak_rss_mb'])} workers)")
    if r.get("mislabeled_auroc_network") is not None:
        lines.append(f"  mislabeled AUROC  reported {_fmt(r.get('mislabeled_auroc_combined'), '.3f')}"
                     f", network {_fmt(r['mislabeled_auroc_network'], '.3f')}"
                     f", Monte Carlo {_fmt(r.get('mislabeled_auroc_monte_carlo'), '.3f')}")
    lines += [
        f"  DuckDB store      {_rel(r['duckdb'])}  (tables: samples, estimates, runs, batches)",
        f"  values            {_rel(r['values_path'])}" + (f"  and {r['out']}" if r.get("out") else ""),
    ]
    if r.get("mlflow_run_id"):
        alias = " @champion" if r.get("alias_set") else ""
        lines.append(f"  MLflow            run {r['mlflow_run_id']} in experiment {r.get('experiment')}"
                     f"  ({r.get('mlflow_uri', '')})")
        lines.append(f"  model             models:/{r.get('model_name')}/{r.get('model_version')}{alias}")
    if r.get("mlflow_uri", "").startswith("sqlite:"):
        lines.append(f"  look              mlflow ui --backend-store-uri {r['mlflow_uri']}")
    if r.get("source") == "demo":
        lines.append(f"  curate            amortval curate --data {_rel(r['store'])}/demo/new.parquet"
                     f" --store {_rel(r['store'])} --mislabeled-column flipped")
    lines.append(f"  runs              amortval runs --store {_rel(r['store'])}")
    print("\n".join(lines))


def print_curation(r: dict) -> None:
    lines = [
        f"amortval: scored {r['rows_scored']:,} rows with {r['model_uri']} (model {r['model_name']}, "
        f"version {r['model_version']}{', ' + r['how'] if r.get('how') else ''})",
        f"  rule              {r['rule']}: kept {r['rows_kept']:,}, dropped {r['rows_dropped']:,}",
    ]
    if "mislabeled_auroc" in r:
        lines.append(f"  known label errors AUROC {_fmt(r['mislabeled_auroc'], '.3f')}, "
                     f"{_fmt(r.get('dropped_mislabeled_precision'), '.1%')} of dropped rows were mislabeled, "
                     f"{_fmt(r.get('mislabeled_recall'), '.1%')} of mislabeled rows dropped")
    lines += [
        f"  curated           {_rel(r['curated'])}",
        f"  dropped           {_rel(r['dropped'])}  (value and reason as columns)",
        f"  scores            {_rel(r['duckdb'])}  (table scores, curation_id {r['curation_id']})",
    ]
    print("\n".join(lines))


def _open_store(store: str):
    from amortval.data.store import ValuationStore
    from amortval.errors import ConfigError
    from amortval.tasks.prepare import store_paths

    path = store_paths(store)["duckdb"]
    if not path.exists():
        raise ConfigError(f"no store at {path}; value something first (`amortval value --store {store}`)")
    return ValuationStore(path)


def print_runs(store: str, *, ids_only: bool = False) -> None:
    """One line per run: id, dataset, method, learner, samples per point, status, gate, model, wall time."""
    with _open_store(store) as db:
        runs = db.runs()
        gates = {r: db.metrics(r).get("gate_passed") for r in runs["run_id"].to_list()}
    if ids_only:
        print("\n".join(runs["run_id"].to_list()))
        return
    if runs.is_empty():
        print(f"amortval: no runs in {_rel(store)}")
        return
    header = ("run", "dataset", "method", "learner", "samples", "status", "gate", "model", "wall")
    rows = []
    for r in runs.to_dicts():
        config = json.loads(r["config"])
        gate = gates.get(r["run_id"])
        rows.append((r["run_id"], r.get("dataset") or "?", config["sampling"]["method"], config["utility"]["learner"],
                     str(r["samples"]), r["status"], "-" if gate is None else "PASSED" if gate else "FAILED",
                     f"{r['model_name']} v{r['model_version']}" if r.get("model_version") else "-",
                     "-" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.1f} s"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_show(store: str, run_id: str) -> None:
    """One run: its files, figures and full config."""
    from amortval.errors import ConfigError
    from amortval.tasks.prepare import store_paths
    from amortval.tasks.tracking import tracking_uri

    with _open_store(store) as db:
        ids = [r for r in db.runs()["run_id"].to_list() if r.startswith(run_id)]
        if len(ids) != 1:
            raise ConfigError(f"{'no run' if not ids else 'several runs'} match {run_id!r} in {_rel(store)}"
                              + (f": {', '.join(ids)}" if ids else "; `amortval runs` lists them"))
        run = db.run(ids[0])
        metrics = db.metrics(ids[0])
        dataset = db.dataset(run["dataset_id"]) or {}
    paths = store_paths(store)
    values = paths["values"] / f"{run['run_id']}.parquet"
    print(f"run         {run['run_id']}  ({run['status']})")
    print(f"dataset     {dataset.get('name')}  {dataset.get('source')}  ({dataset.get('n_rows')} training rows, "
          f"id {run['dataset_id']})")
    print(f"sampling    {run['sampling_id']}  ({run['samples']} samples per point)")
    print(f"values      {_rel(values)}" + ("" if values.exists() else "  (missing)"))
    print(f"store       {_rel(paths['duckdb'])}")
    print(f"MLflow      run {run.get('mlflow_run_id')}  ({tracking_uri(paths['root'])})")
    if run.get("model_version"):
        print(f"model       models:/{run['model_name']}/{run['model_version']}")
    if run.get("wall_seconds") is not None:
        print(f"wall time   {run['wall_seconds']:.1f} s, {int(run.get('new_fits') or 0):,} model fits computed")
    print("figures")
    for name in sorted(metrics):
        print(f"  {name:<40} {metrics[name]:.6g}")
    print("config")
    print("\n".join("  " + line for line in json.dumps(run["config"], indent=2, sort_keys=True).splitlines()))
