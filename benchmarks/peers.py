"""Side by side with pyDVL (issue 13): time to a good answer, same split, same utility, same truth.

    pip install -e ".[bench]"                                                       # pyDVL 0.10
    python benchmarks/peers.py --json benchmarks/results/peers_quick.json --quick   # n = 1,000
    python benchmarks/peers.py --json benchmarks/results/peers.json                 # n = 1,000 and 5,000

Data: UCI adult from ../shared/datasets (20% of training labels flipped, seeded; a 100-row
validation set), written as the two files every tool values (``peers_setup.py``). Truth:
amortval's many-sample Monte Carlo truth of the same Shapley value for 100 seeded probe
rows (``tasks/ground_truth.py``, stored in DuckDB under ``--store`` and reused), its own
noise from two independent halves. Every curve point is (seconds, Pearson and nMSE on the
probes against the truth, flip AUROC over all rows); a tool's ``seconds_to_target`` is the
first time from which Pearson >= 0.9 and nMSE <= 0.2 hold at every later point.

Runs, one after another, 2 processes each:
- **amortval** ``amortval value --learner logreg --samples m`` for m in 1, 2, 5, 10, 20, 50
  (``--m-grid``),
  each a whole process on a fresh store, start-up included (``--target-error off`` too
  when the CLI has that option, so m is the budget); ``fixed_overhead_s`` is the same
  command run again (nothing to compute: the run is re-reported).
- **bare loop** (the floor): the same permutation fits in 2 spawned processes with no
  store, network or tracking; plain Monte Carlo values after every permutation.
- **pyDVL, matched utility** (``peers_pydvl.py``): TMC-Shapley (default truncation) and
  permutation Shapley (no truncation), ``n_jobs=2``, recorded after every permutation.
- **pyDVL, stock**: TMC-Shapley with scikit-learn's ``LogisticRegression()``: another game,
  so its curve is scored against its own final values, and by flip AUROC.

Each pyDVL run and the bare loop stop at ``--cap`` seconds of wall time (180 with
``--quick``, 900 otherwise), or, with ``--cap-speedup k``, the matched pyDVL runs at k times
amortval's seconds to target: a null ``seconds_to_target`` means "not within the cap", so
a speed-up of at least k was measured (``derive`` adds an extrapolation for the
untruncated run). For pyDVL and the bare loop
``fixed_overhead_s`` is the intercept of seconds against permutations (process start-up,
imports, pickling). The load average is recorded around every run: the machine may be
shared. ``--replot`` recomputes the derived figures, the table and the plot from --json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYTHONWARNINGS", "ignore")  # pyDVL's workers: sklearn convergence chatter

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult import ADULT  # noqa: E402

M_GRID = (1, 2, 5, 10, 20, 50)
TOOLS = {"amortval", "bare-loop", "pydvl"}  # --tools names ("pydvl": all of pyDVL's runs)
QUICK_N, FULL_N = (1000,), (1000, 5000)
# Samples per probe: the truth's own nMSE falls as 1/samples; 4,000 gave 0.014 at n = 1,000
# (800,000 fits, ~15 min on 2 cores). At n = 5,000 the signal is smaller and a fit ~10x
# dearer (87 fits/s per core measured): 10,000 samples are ~2M fits, hours. Trials: 200.
TRUTH_SAMPLES = {1000: 4000, 5000: 10000}
# The truth's sampler: the default (one coalition shared by the probes, 101 fits a draw)
# except at n = 1,000, whose committed results were judged against independent pairs.
TRUTH_SAMPLER = {1000: "independent"}
RESULTS = Path(__file__).resolve().parent / "results"


def load() -> float:
    return os.getloadavg()[0]


def amortval_command(case, m: int, store: Path, fixed_budget: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("amortval")
    return [str(exe), "value", "--data", str(case.train), "--target", "income", "--valid", str(case.valid),
            "--learner", "logreg", "--samples", str(m), "--store", str(store), *fixed_budget]


def fixed_budget_flags() -> list[str]:
    """``--target-error off`` when this amortval stops on an error target by default."""
    exe = Path(sys.executable).with_name("amortval")
    text = subprocess.run([str(exe), "value", "--help"], capture_output=True, text=True).stdout
    return ["--target-error", "off"] if "--target-error" in text else []


STAGES = {"prefect_server_up": "Starting temporary server", "flow_started": "Beginning flow run",
          "planned": "- plan:", "sampled": "- sampling:", "amortized": "- amortization:",
          "flow_finished": "Finished in state", "exited": None}


def stage_times(log_path: Path, started: float, seconds: float) -> dict:
    """Seconds from the process's start to the last log line of each stage (the CLI stamps
    its lines with the local wall clock); ``exited`` is the whole process."""
    day = time.strftime("%Y-%m-%d ", time.localtime(started))
    found = {}
    for line in log_path.read_text(errors="replace").splitlines():
        for name, marker in STAGES.items():
            if marker and marker in line and line[:2].isdigit():
                stamp = time.mktime(time.strptime(day + line[:8], "%Y-%m-%d %H:%M:%S")) + float("0" + line[8:12])
                found[name] = round(stamp - started, 2)
    return {**found, "exited": round(seconds, 2)}


def timed(argv: list[str], log_path: Path) -> float:
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}; see {log_path}")
    return seconds


def amortval_record(case, store: Path, grid: tuple[int, ...] = M_GRID) -> dict:
    import polars as pl

    flags = fixed_budget_flags()
    curve, runs = [], []
    for m in grid:
        folder = store / f"amortval-n{case.n}-m{m}"
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        before, wall = load(), time.time()
        seconds = timed(amortval_command(case, m, folder, flags), folder.with_suffix(".log"))
        (values_file,) = (folder / "values").glob("*.parquet")
        table = pl.read_parquet(values_file).filter(pl.col("split") == "train").sort("row")
        pearson, nmse, auroc = case.scores(table["value"].to_numpy())
        curve.append((seconds, pearson, nmse, auroc))
        runs.append({"m": m, "seconds": seconds, "pearson": pearson, "nmse": nmse, "auroc": auroc,
                     "stages_s": stage_times(folder.with_suffix(".log"), wall, seconds),
                     "load_before": before, "load_after": load()})
        print(f"  amortval m={m}: {seconds:.1f} s  pearson {pearson:.3f}  nmse {nmse:.3f}  auroc {auroc:.3f}", flush=True)
    again = [timed(amortval_command(case, grid[-1], store / f"amortval-n{case.n}-m{grid[-1]}", flags),
                   store / f"amortval-n{case.n}-rereport{i}.log") for i in range(3)]
    print(f"  amortval re-report of a finished run: {', '.join(f'{s:.2f}' for s in again)} s", flush=True)
    from peers_setup import seconds_to_target

    return {"tool": "amortval", "n": case.n, "seconds_to_target": seconds_to_target(curve), "curve": curve,
            "fixed_overhead_s": min(again), "fixed_overhead_runs_s": again, "runs": runs,
            "command": " ".join(amortval_command(case, 0, Path("STORE"), flags)).replace("--samples 0", "--samples M")}


def _chain(problem_path: str, seed: int, unit: int) -> tuple[np.ndarray, np.ndarray]:
    from amortval.tasks.marginals import cached_utility
    from amortval.tasks.config import RunConfig
    from amortval.tasks.samplers import make_sampler

    utility = cached_utility(problem_path, "logreg", seed, 5)
    sampler = make_sampler(RunConfig.from_options(seed=seed).sampling, utility.n)
    rows = sampler.run(utility, range(unit, unit + 1), seed)
    return rows.point, rows.weight * rows.delta


def bare_loop(case, cap: float, seed: int) -> dict:
    """Permutation chains of amortval's utility and sampler (the run's own draws) in two
    spawned processes; plain Monte Carlo values after every chain."""
    from amortval.tasks.runtime import pin_threads

    total, count = np.zeros(case.n), np.zeros(case.n)
    curve, times = [], []
    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=pin_threads) as pool:
        pending = [pool.submit(_chain, str(case.problem_path), seed, u) for u in range(M_GRID[-1])]
        for future in as_completed(pending):
            point, value = future.result()
            np.add.at(total, point, value)
            np.add.at(count, point, 1)
            t = time.perf_counter() - started
            times.append(t)
            curve.append((t, *case.scores(total / np.maximum(count, 1))))
            if t > cap:
                for other in pending:
                    other.cancel()
                break
    return {"tool": "bare-loop", "n": case.n, "curve": curve, "permutations": len(times)}


def _overhead(times: list[float]) -> float | None:
    """Intercept of the least-squares line through (k, seconds at the k-th permutation): the
    start-up a run pays before its steady rate (workers, imports, pickling)."""
    if len(times) < 3:
        return None
    k = np.arange(1, len(times) + 1)
    slope, intercept = np.polyfit(k, np.asarray(times), 1)
    return float(intercept)


def derive(records: list[dict]) -> list[dict]:
    """Figures computed from the curves (also by ``--replot``): time to target, overhead, and
    for pyDVL's untruncated permutation run an extrapolation: plain permutation Monte Carlo
    is the same estimator as the bare loop, whose nMSE falls as c / k over k permutations,
    so it needs k* = c / 0.2 permutations; at its own measured seconds per permutation."""
    from peers_setup import NMSE_TARGET, seconds_to_target

    floors = {r["n"]: r for r in records if r["tool"] == "bare-loop"}
    for r in records:
        times = [c[0] for c in r["curve"]]
        if r["tool"] != "pydvl-stock-tmc":
            r["seconds_to_target"] = seconds_to_target(r["curve"])
        if r["tool"] != "amortval":
            r["fixed_overhead_s"] = _overhead(times)
            r["first_result_s"] = times[0]
        floor = floors.get(r["n"])
        if r["tool"] == "pydvl-permutation" and floor is not None and len(times) >= 2:
            k = np.arange(1, len(floor["curve"]) + 1)
            c = float(np.median(np.array([e for _, _, e, _ in floor["curve"]])[k >= 10] * k[k >= 10]))
            per_permutation = (times[-1] - times[0]) / (len(times) - 1)
            r["extrapolated"] = {"permutations_needed": c / NMSE_TARGET, "seconds_per_permutation": per_permutation,
                                 "seconds_to_nmse_target": times[0] + per_permutation * (c / NMSE_TARGET - 1)}
    return records


def matched_cap(records: list[dict], n: int, cap: float, speedup: float | None) -> float:
    """Wall cap of the matched pyDVL runs: ``speedup`` times amortval's seconds to target at
    this n when asked and reached, so a pyDVL run still short of the target at its cap has
    measured a speed-up of at least ``speedup``; else ``cap``."""
    reached = [r["seconds_to_target"] for r in records if r["tool"] == "amortval" and r["n"] == n]
    if speedup and reached and reached[0] is not None:
        return speedup * reached[0]
    return cap


def pydvl_records(case, cap: float, seed: int, stock_cap: float) -> list[dict]:
    import peers_pydvl

    records = []
    for run in [*peers_pydvl.matched_runs(case.problem, cap, seed), peers_pydvl.stock_run(case.problem, stock_cap, seed)]:
        stock = run.tool == "pydvl-stock-tmc"
        if stock:  # another game: scored against its own final values (Pearson, nMSE) and by AUROC
            final = run.snapshots[-1]
            from amortval.tasks.metrics import mislabeled_auroc, nmse, pearson

            curve = [(t, pearson(v, final), nmse(v, final), mislabeled_auroc(v, case.flipped))
                     for t, v in zip(run.times, run.snapshots)]
            shift = dict(zip(("pearson_vs_truth", "nmse_vs_truth", "auroc"), case.scores(final)))
        else:
            curve = [(t, *case.scores(v)) for t, v in zip(run.times, run.snapshots)]
            shift = {}
        last = curve[-1]
        records.append({"tool": run.tool, "n": case.n, "seconds_to_target": None, "curve": curve, **run.settings,
                        "reference": "own final values" if stock else "amortval truth", **shift})
        print(f"  {run.tool}: {len(run.times)} permutations in {run.times[-1]:.0f} s; last pearson {last[1]:.3f} "
              f"nmse {last[2]:.3f} auroc {last[3]:.3f}", flush=True)
    return records


def table(records: list[dict]) -> str:
    rows = ["| tool | n | seconds to target | fixed overhead (s) | last point: seconds, Pearson, nMSE, flip AUROC |",
            "| --- | --- | --- | --- | --- |"]
    for r in records:
        t, p, e, a = r["curve"][-1]
        if r["tool"] == "pydvl-stock-tmc":  # another game: its final values against the truth
            target = "— (another game)"
            p, e = r["pearson_vs_truth"], r["nmse_vs_truth"]
        elif r["seconds_to_target"] is not None:
            target = f"**{r['seconds_to_target']:.1f}**"
        else:
            target = f"not within {t:.0f}"
            if "extrapolated" in r:
                target += f" (≈ {r['extrapolated']['seconds_to_nmse_target']:,.0f} extrapolated)"
        overhead = f"{r['fixed_overhead_s']:.1f}" if r.get("fixed_overhead_s") is not None else "—"
        rows.append(f"| {r['tool']} | {r['n']:,} | {target} | {overhead} | {t:.0f}, {p:.3f}, {e:.3f}, {a:.3f} |")
    return "\n".join(rows)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["n"] for r in records})
    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 4 * len(sizes)), squeeze=False)
    for row, n in zip(axes, sizes):
        for r in (r for r in records if r["n"] == n and r["tool"] != "pydvl-stock-tmc"):
            curve = np.array(r["curve"], dtype=float)
            style = {"marker": "o"} if r["tool"] == "amortval" else {}
            row[0].plot(curve[:, 0], curve[:, 1], label=r["tool"], **style)
            row[1].plot(curve[:, 0], curve[:, 2], label=r["tool"], **style)
            for run in r.get("runs", []):  # amortval: one whole process per budget m
                for ax, y in ((row[0], run["pearson"]), (row[1], run["nmse"])):
                    ax.annotate(f"m={run['m']}", (run["seconds"], y), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        row[0].axhline(0.9, color="grey", ls=":")
        row[1].axhline(0.2, color="grey", ls=":")
        row[0].set(xscale="log", ylabel="Pearson vs truth (probes)", xlabel="wall seconds", title=f"adult n = {n:,}")
        row[1].set(xscale="log", yscale="log", ylabel="nMSE vs truth (probes)", xlabel="wall seconds",
                   title=f"adult n = {n:,}")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="output file (records, settings, load)")
    parser.add_argument("--quick", action="store_true", help="n = 1,000 only, pyDVL runs capped at 180 s")
    parser.add_argument("--cap", type=float, help="wall seconds per pyDVL run and bare loop (default 180 quick, 900)")
    parser.add_argument("--cap-speedup", type=float,
                        help="cap each matched pyDVL run at this many times amortval's seconds to target instead "
                             "(a run still short of the target then measures at least that speed-up); the stock "
                             "run keeps --cap")
    parser.add_argument("--store", default=str(Path(__file__).resolve().parent / ".store" / "peers"),
                        help="folder for the data files, truths and amortval stores")
    parser.add_argument("--sizes", help="comma-separated n (default: 1000 with --quick, else 1000,5000)")
    parser.add_argument("--m-grid", default=",".join(map(str, M_GRID)),
                        help="amortval's budgets, samples per point (comma-separated; default %(default)s)")
    parser.add_argument("--tools", default=",".join(sorted(TOOLS)),
                        help="tools to run (comma-separated; default %(default)s); with fewer, the other tools' "
                             "records already in --json are kept, so one tool can be rerun after a change")
    parser.add_argument("--replot", action="store_true", help="recompute the derived figures, table and plot of --json")
    args = parser.parse_args()
    tools = {t.strip() for t in args.tools.split(",")}
    if not tools <= TOOLS:
        parser.error(f"--tools: unknown {sorted(tools - TOOLS)}; choose from {', '.join(sorted(TOOLS))}")
    out = Path(args.json)
    if args.replot:
        saved = json.loads(out.read_text())
        saved["records"] = derive(saved["records"])
        print(table(saved["records"]))
        plot(saved["records"], RESULTS / saved["figure"])
        out.write_text(json.dumps(saved, indent=1))
        return 0
    if importlib.util.find_spec("pydvl") is None:
        print('peers: skipped: pyDVL is not installed (pip install -e ".[bench]")')
        return 0
    if not ADULT.exists():
        print(f"peers: skipped: UCI adult not found at {ADULT} (see ../shared/datasets/README.md)")
        return 0
    from amortval.tasks.runtime import pin_threads
    from peers_setup import prepare_case

    pin_threads()
    cap = args.cap or (180.0 if args.quick else 900.0)
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (QUICK_N if args.quick else FULL_N)
    store = Path(args.store)
    grid = tuple(int(m) for m in args.m_grid.split(","))
    started, records, truths = time.perf_counter(), [], {}
    saved = json.loads(out.read_text()) if out.exists() and tools != TOOLS else {}
    # A record's --tools name: its own for amortval and the bare loop, "pydvl" for pyDVL's runs.
    records.extend(r for r in saved.get("records", [])
                   if not (r["n"] in sizes and (r["tool"] if r["tool"] in TOOLS else "pydvl") in tools))
    for n in sizes:
        print(f"[adult n={n:,}] truth ({TRUTH_SAMPLES.get(n, 200)} samples per probe)", flush=True)
        case = prepare_case(n, store, TRUTH_SAMPLES.get(n, 200), sampler=TRUTH_SAMPLER.get(n))
        truths[n] = case.truth_info
        print(f"  truth: pearson {case.truth_info['truth_pearson']:.3f}, nmse {case.truth_info['truth_nmse']:.3f} "
              f"(its own noise, from two halves)", flush=True)
        for name, job in (("amortval", lambda: [amortval_record(case, store, grid)]),
                          ("bare-loop", lambda: [bare_loop(case, cap, 0)]),
                          ("pydvl", lambda: pydvl_records(case, matched_cap(records, n, cap, args.cap_speedup), 0, cap))):
            if name not in tools:
                continue
            before = load()
            print(f"[adult n={n:,}] {name} (load {before:.2f})", flush=True)
            for record in job():
                records.append({**record, "load_before": before, "load_after": load()})
    records = derive(records)
    print(table(records))
    figure = RESULTS / f"{out.stem}.png"
    plot(records, figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "benchmarks/peers.py", *sys.argv[1:]])
    result = {
        "records": records, "truth": {str(n): t for n, t in truths.items()}, "quick": args.quick, "cap_s": cap,
        "targets": {"pearson": 0.9, "nmse": 0.2}, "cpu_count": os.cpu_count(), "seconds": time.perf_counter() - started,
        "figure": figure.name, "command": command}
    if saved:  # a rerun of some tools: the file's settings stay those of the runs it keeps
        result = {**saved, "records": records, "truth": {**saved.get("truth", {}), **result["truth"]},
                  "reruns": [*saved.get("reruns", []), {"command": command, "seconds": result["seconds"]}]}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
