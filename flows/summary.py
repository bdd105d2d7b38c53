"""What the CLI prints at the end of a run: where everything is and how good it is."""

from __future__ import annotations

from pathlib import Path


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def print_valuation(r: dict) -> None:
    gate = "PASSED" if r.get("gate_passed") else "FAILED (champion alias not moved)"
    fallbacks = ", ".join(f"{int(v):,} {k[len('samples_'):]}" for k, v in r.items()
                          if k.startswith("samples_") and k != "samples_stored" and k != "samples_ok" and v)
    lines = [
        f"amortval: valued {r.get('source')} in {r['seconds']:.1f} s  (run {r['run_id']})",
        f"  samples stored    {int(r.get('samples_stored', 0)):,}  from {int(r.get('model_fits', 0)):,} model fits"
        + (f"  (degenerate subsets: {fallbacks})" if fallbacks else ""),
        f"  quality gate      {gate}: held-out MSE network {_fmt(r.get('gate_mse_network'))}"
        f" vs Monte Carlo {_fmt(r.get('gate_mse_monte_carlo'))}",
    ]
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
        lines.append(f"  MLflow            run {r['mlflow_run_id']}, model version {r.get('model_version')}{alias}"
                     f"  ({r.get('mlflow_uri', '')})")
    if r.get("mlflow_uri", "").startswith("sqlite:"):
        lines.append(f"  look              mlflow ui --backend-store-uri {r['mlflow_uri']}")
    if r.get("source") == "demo":
        lines.append(f"  curate            amortval curate --data {_rel(r['store'])}/demo/new.parquet"
                     f" --store {_rel(r['store'])} --mislabeled-column flipped")
    print("\n".join(lines))


def print_curation(r: dict) -> None:
    lines = [
        f"amortval: scored {r['rows_scored']:,} rows with {r['model_uri']} (version {r['model_version']})",
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
