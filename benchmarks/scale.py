"""Scale benchmark (issue 9): the whole pipeline on large tables under one budget rule.

    python benchmarks/scale.py --quick --json benchmarks/results/scale_quick.json   # electricity only
    python benchmarks/scale.py --json benchmarks/results/scale.json                 # every case
    python benchmarks/scale.py --cases synthetic-10000-xgboost --json benchmarks/results/scale.json
    python benchmarks/scale.py --replot --json benchmarks/results/scale.json        # table and plot only
    python benchmarks/scale.py --quick --sampler shared --samples 4 --json OUT.json  # another sampler or budget

Each case runs ``amortval value`` (as the Python API, in its own process, on a fresh store)
with the XGBoost utility (the 1M rows also with logreg), ``--method distributional``
(|S| < 1,000), 10% of training labels flipped and passed as ``--mislabeled-column``
(``scale_data.py``), and times the whole pipeline: samples, network, a value for every
row, MLflow. Then, outside the timed run: probe quality against a stored many-sample truth
and a plain label-error reference (``scale_quality.py``).

**Budget rule** (the same at every size): the CLI's own defaults for ``--points``
(``min(training rows, AUTO_POINTS)``, 10,000: ``tasks/config.py``) and ``--samples 2``. A
distributional sample of a sampled row costs about 2 - P/n fits of at most 1,000 rows
whatever the table (a block evaluates the prefixes just before and at its sampled rows,
shared by neighbours both sampled), so a 45K-row table has ~34K fits: about 4 minutes of
sampling at the 130-160 fits/s measured on 2 cores, which leaves room for amortizing
(~30 s) and recording within 10 minutes. ``--points 2500`` is the budget the earlier
records used (a quarter of the fits; probe Pearson 0.44-0.64 on the 45K tables, against
0.887-0.913 at 10,000). The rest of the pipeline grows with the rows (reading,
the network's pretraining and scoring of every row, point-removal refits): that is what
the growth plot shows.

Cases: electricity (45,312 rows), UCI adult (45,222 complete rows), synthetic 10K / 100K /
1M rows (20 features); the 1M table with logreg and XGBoost on a local Dask cluster
reached by address with 1 then 2 workers. ``--json`` keeps other cases' records already in
the file (and a case's records at other ``--points``), so cases can be run one at a time
into one file. Each record carries the machine
load (1-minute load average) before and after its run: timings on a shared machine are
inflated by whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from amortval.tasks.config import AUTO_POINTS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data  # noqa: E402
from scale_cluster import local_cluster  # noqa: E402
from scale_quality import probe_quality, reference_auroc, time_breakdown  # noqa: E402

SAMPLES, MAX_SIZE, SEED = 2, 1_000, 0
# Samples per probe of the stored truth, sized so that its own nMSE (from its two halves)
# is <= 0.05: electricity's is 0.016 at 2,500 (252,500 fits with the shared-coalition
# sampler, 26 min on 2 cores); adult's marginal contributions are noisier against the spread
# of its values (0.14 at 2,500), 0.004 at 7,000 (707,000 fits, 86 min).
DEFAULT_TRUTH_SAMPLES = 2500
TRUTH_SAMPLES = {"adult": 7000}


@dataclass(frozen=True)
class Case:
    dataset: str
    learner: str = "xgboost"
    dask_workers: int = 0  # 0: the thread runner in the flow process

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.learner}" + (f"-dask{self.dask_workers}" if self.dask_workers else "")


CASES = [Case("electricity"), Case("adult"), Case("synthetic-10000"), Case("synthetic-100000"),
         *(Case("synthetic-1000000", learner, workers) for learner in ("logreg", "xgboost") for workers in (1, 2))]
QUICK = ["electricity-xgboost"]
GROWTH = ("electricity-xgboost", "synthetic-10000-xgboost", "synthetic-100000-xgboost",
          "synthetic-1000000-xgboost-dask2")

# Runs in a child process: its own peak RSS, Prefect and MLflow state, as a user's run.
CHILD = """
import json, sys, time
from amortval.api import run
from amortval.tasks.config import RunConfig
called = time.time()
summary = run(RunConfig.from_options(**json.loads(sys.argv[1])))
summary.update(called_at=called, returned_at=time.time())
open(sys.argv[2], "w").write(json.dumps(summary, default=str))
"""


def table(dataset: str, cache: Path) -> scale_data.Table:
    if dataset.startswith("synthetic-"):
        return scale_data.synthetic(int(dataset.split("-")[1]), cache)
    return {"electricity": scale_data.electricity, "adult": scale_data.adult}[dataset](cache)


def environment(cache: Path) -> dict[str, str]:
    """The CLI's environment (one thread per fit, no telemetry, a patient temporary
    Prefect API) with a Prefect home of the benchmark's own."""
    from amortval.flows.cli import ENVIRONMENT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, **ENVIRONMENT, "PREFECT_HOME": str(cache / "prefect-home"), "PYTHONUNBUFFERED": "1"}


def run_case(case: Case, args: argparse.Namespace) -> tuple[dict, Path, str]:
    """The timed run and what needs no truth; returns (record, values file, problem file)."""
    cache = Path(args.cache)
    data = table(case.dataset, cache / "tables")
    store = cache / "runs" / case.name
    shutil.rmtree(store, ignore_errors=True)  # a fresh store: every fit is computed, none reused
    store.mkdir(parents=True)
    options = {"data": str(data.data), "valid": str(data.valid), "target": data.target,
               "mislabeled_column": scale_data.MISLABELED, "learner": case.learner, "method": "distributional",
               "max_size": MAX_SIZE, "points": min(data.train_rows, args.points), "samples": args.samples,
               "seed": SEED, "store": str(store)}
    if args.sampler:
        options["sampler"] = args.sampler
    env = environment(cache)
    print(f"[{case.name}] {data.rows:,} rows ({data.train_rows:,} valued), load {os.getloadavg()[0]:.2f}",
          flush=True)
    cluster = local_cluster(case.dask_workers, store / "cluster", env) if case.dask_workers else nullcontext()
    with cluster as address:
        if address:
            options["dask_address"] = address
        load_before, popen = os.getloadavg()[0], time.time()
        with open(store / "run.log", "w") as log:
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options), str(store / "summary.json")],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        exited, load_after = time.time(), os.getloadavg()[0]
    if done.returncode != 0:
        raise RuntimeError(f"{case.name} failed; see {store / 'run.log'}")
    summary = json.loads((store / "summary.json").read_text())
    values = pl.read_parquet(summary["values_path"])
    stages = time_breakdown(store, summary["run_id"], popen=popen, called=summary["called_at"],
                            returned=summary["returned_at"], exited=exited, flow_seconds=summary["seconds"],
                            amortization=summary["seconds_amortization"])
    wall, fits = exited - popen, int(summary["model_fits"])
    print(f"[{case.name}] {fits:,} fits in {wall:.0f} s (sampling {stages['sampling_s']:.0f} s, amortization "
          f"{stages['amortization_s']:.0f} s, record {stages['record_s']:.0f} s), load {load_after:.2f}", flush=True)
    problem_path = str(store / "problems" / f"{summary['dataset_id']}.npz")
    train = values.filter(pl.col("split") == "train").sort("row")
    record = {
        "case": case.name, "dataset": case.dataset, "rows": data.rows, "train_rows": data.train_rows,
        "learner": case.learner, "method": "distributional", "runner": f"dask-{case.dask_workers}"
        if case.dask_workers else "threads", "points_sampled": int(summary["n_sampled"]),
        "samples_per_point": args.samples, "points_cap": args.points, "sampler": args.sampler or "distributional",
        "fits": fits, "samples_stored": int(summary["samples_stored"]),
        "wall_s": wall, "fits_per_s": fits / wall, "sampling_fits_per_s": fits / stages["sampling_s"],
        "peak_rss_mb": summary["peak_rss_mb"], "worker_peak_rss_mb": summary.get("worker_peak_rss_mb"),
        "flip_auroc": summary["mislabeled_auroc_combined"], "flip_auroc_network": summary["mislabeled_auroc_network"],
        "flip_auroc_monte_carlo": summary["mislabeled_auroc_monte_carlo"],
        "flip_auroc_reference": reference_auroc(problem_path, train["mislabeled"].to_numpy(), seed=SEED),
        "gate_passed": bool(summary["gate_passed"]), "stages": stages,
        "load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(),
    }
    return record, Path(summary["values_path"]), problem_path


def add_probe_quality(record: dict, values: Path, problem_path: str, args: argparse.Namespace) -> None:
    """Probe metrics against the stored truth (computed now if it is not stored yet)."""
    samples = args.truth_samples or TRUTH_SAMPLES.get(record["dataset"], DEFAULT_TRUTH_SAMPLES)
    print(f"[{record['case']}] probe truth, {samples} samples per probe", flush=True)
    record |= probe_quality(pl.read_parquet(values), problem_path, learner=record["learner"], run_seed=SEED,
                            truth_samples=samples, truth_store=Path(args.cache) / "truth.duckdb")
    print(f"[{record['case']}] probes: Pearson {record['probe_pearson']:.3f}, nMSE {record['probe_nmse']:.3f}; "
          f"truth's own nMSE {record['truth_nmse']:.3f}", flush=True)


def points_cap(record: dict) -> int:
    """The record's ``--points`` cap (2,500 for records made before it was recorded)."""
    return int(record.get("points_cap", 2_500))


def print_table(records: list[dict]) -> None:
    head = (f"{'case':32} {'rows':>9} {'points':>6} {'m':>2} {'fits':>7} {'wall s':>7} {'fits/s':>7} {'RSS MB':>7} "
            f"{'probe r':>7} {'nMSE':>6} {'flipAUC':>7} {'ref AUC':>7} {'truth nMSE':>10} {'load':>5}")
    print(head + "\n" + "-" * len(head))
    for r in records:
        probe = {k: format(r[k], f) if r.get(k) is not None else "n/a"
                 for k, f in (("probe_pearson", ".3f"), ("probe_nmse", ".2f"), ("truth_nmse", ".2f"))}
        print(f"{r['case']:32} {r['rows']:9,} {r['points_sampled']:6,} {r['samples_per_point']:2} {r['fits']:7,} "
              f"{r['wall_s']:7.0f} {r['fits_per_s']:7.1f} {r['peak_rss_mb']:7.0f} {probe['probe_pearson']:>7} "
              f"{probe['probe_nmse']:>6} {r['flip_auroc']:7.3f} {r['flip_auroc_reference']:7.3f} "
              f"{probe['truth_nmse']:>10} {(r['load_before'] + r['load_after']) / 2:5.1f}")


def growth_figure(records: list[dict]):
    """Wall time against rows for the cases of the growth curve that were measured, one
    line per budget (``--points`` cap): records from before the cap was recorded used 2,500."""
    from matplotlib.figure import Figure

    chosen = sorted((r for r in records if r["case"] in GROWTH), key=lambda r: r["rows"])
    if len(chosen) < 2:
        return None
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    caps = sorted({points_cap(r) for r in chosen})
    for cap, marker in zip(caps, "os^"):
        group = [r for r in chosen if points_cap(r) == cap]
        rows, wall = np.array([r["rows"] for r in group]), np.array([r["wall_s"] for r in group])
        ax.loglog(rows, wall, marker + "-", color="tab:blue", alpha=1.0 if cap == caps[-1] else 0.45,
                  label=f"whole pipeline, --points min(n, {cap:,})")
        for stage, color in (("sampling_s", "tab:orange"), ("amortization_s", "tab:green")):
            ax.loglog(rows, [r["stages"][stage] for r in group], marker + "--", color=color, markersize=4,
                      alpha=1.0 if cap == caps[-1] else 0.45, label=f"{stage.removesuffix('_s')} ({cap:,})")
        for n, w, name in ((r["rows"], r["wall_s"], r["case"]) for r in group):
            ax.annotate(name.split("-xgboost")[0], (n, w), textcoords="offset points", xytext=(4, -10), fontsize=7)
    grid = np.array([r["rows"] for r in chosen])
    ax.loglog(grid, chosen[0]["wall_s"] * grid / grid[0], ":", color="tab:gray", label="linear in rows")
    ax.set_xlabel("rows in the table")
    ax.set_ylabel("wall time, s (2 cores)")
    ax.set_title(f"XGBoost utility, --samples {SAMPLES}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write (merge) one record per case into this JSON file")
    parser.add_argument("--quick", action="store_true", help="electricity only (< 15 minutes once its truth is stored)")
    parser.add_argument("--cases", nargs="+", choices=[c.name for c in CASES], help="run only these cases")
    parser.add_argument("--truth-samples", type=int,
                        help=f"samples per probe of the stored truth (default {DEFAULT_TRUTH_SAMPLES:,}; "
                        + ", ".join(f"{k} {v:,}" for k, v in TRUTH_SAMPLES.items())
                        + "): a new count is a new truth, computed once")
    parser.add_argument("--samples", type=int, default=SAMPLES,
                        help=f"samples per sampled row (default {SAMPLES}: the budget rule)")
    parser.add_argument("--points", type=int, default=AUTO_POINTS,
                        help=f"sampled rows per table, at most (default {AUTO_POINTS:,}, the CLI's: the budget rule)")
    parser.add_argument("--sampler", choices=("distributional", "shared"),
                        help="Monte Carlo sampler of the runs (default: distributional's own blocks)")
    parser.add_argument("--skip-truth", action="store_true",
                        help="time the runs only: no probe truth (probe columns stay empty)")
    parser.add_argument("--cache", default="benchmarks/.store/scale", help="tables, run stores, the truth store")
    parser.add_argument("--plots", default="benchmarks/results", help="folder for the growth plot ('' for none)")
    parser.add_argument("--replot", action="store_true", help="redraw the table and plot from --json; run nothing")
    args = parser.parse_args(argv)
    names = [] if args.replot else QUICK if args.quick else args.cases or [c.name for c in CASES]
    cases = [c for c in CASES if c.name in names]
    missing = scale_data.available()
    if missing and any(not c.dataset.startswith("synthetic-") for c in cases):
        print(f"scale benchmark skipped: {missing} not found (see ../shared/datasets/README.md)", file=sys.stderr)
        return 0
    started = time.perf_counter()
    out = Path(args.json)
    kept = json.loads(out.read_text())["records"] if out.exists() else []
    # One record per case and budget: a run replaces its own case's record at its --points.
    records = [r for r in kept if r["case"] not in names or points_cap(r) != args.points]

    def save() -> None:
        records.sort(key=lambda r: ([c.name for c in CASES].index(r["case"]), points_cap(r)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"records": records, "budget": {"samples": args.samples,
                                   "max_size": MAX_SIZE, "seed": SEED}}, indent=1, default=float))

    # Every timed run first, each saved at once; then the truths (hours when not stored yet).
    measured = []
    for case in cases:
        record, values, problem_path = run_case(case, args)
        records.append(record)
        measured.append((record, values, problem_path))
        save()
    for record, values, problem_path in [] if args.skip_truth else measured:
        add_probe_quality(record, values, problem_path, args)
        save()
    print()
    print_table(records)
    fig = growth_figure(records) if args.plots else None
    if fig is not None:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(args.plots) / "scale_growth.png", dpi=110, bbox_inches="tight")
    print(json.dumps({"records": len(records), "cases_run": len(cases), "json": str(out),
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
