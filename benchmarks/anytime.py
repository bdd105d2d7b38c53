"""Anytime valuation: is the estimated error (no ground truth) close to the true one?

    python benchmarks/anytime.py --json anytime.json            # full (~40 min, 2 cores)
    python benchmarks/anytime.py --json anytime.json --quick    # KNN n=1,000, 3 seeds (~3 min)

For every case (utility, n) and seed, the rounds of a run with the default stopping rule
are replayed on one sample matrix: after each doubling of the samples per point
(2, 4, 8, ...) the network is trained exactly as a run trains it (``tasks.amortize``),
and its *estimated* normalized error (``tasks/error_estimate.py``, from held-out samples
only) is compared with the *true* one against the ground truth:

- KNN utility, UCI adult, n = 1,000 and 5,000: exact KNN-Shapley values (closed form);
- logistic regression, n = 250: a many-sample Monte Carlo truth (stored, computed once),
  its own noise reported from its two halves.

Per round it records the estimate, its standard error and the true nMSE; per seed where
``--target-error`` (default 0.2; met when estimate + one standard error <= target) would
stop, the true nMSE there, and the fixed budget (smallest m of the same grid) whose true
nMSE is at most that. Prints a table, writes JSON records and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import sample_matrix, truth_for  # noqa: E402
from adult import ADULT, adult_problem  # noqa: E402

from amortval.tasks.amortize import amortize  # noqa: E402
from amortval.tasks.config import DEFAULT_TARGET_ERROR, AmortizationConfig, RunConfig  # noqa: E402
from amortval.tasks.metrics import mislabeled_auroc, truth_metrics  # noqa: E402
from amortval.tasks.runtime import pin_threads  # noqa: E402

FULL = [("knn", 1000, 64, None), ("logreg", 250, 64, 2000), ("knn", 5000, 32, None)]  # utility, n, max m, truth m
QUICK = [("knn", 1000, 64, None)]
SEEDS, QUICK_SEEDS = 10, 3
FACTOR = 1.5  # the estimate should be within this factor of the truth


def rounds_for(max_m: int, first: int) -> list[int]:
    grid, m = [], first
    while m < max_m:
        grid.append(m)
        m *= 2
    return grid + [max_m]


def run_seed(split, truth: np.ndarray, learner: str, max_m: int, seed: int, target: float) -> dict:
    started = time.perf_counter()
    matrix = sample_matrix(split.problem, learner, max_m, seed)
    sampling_s = time.perf_counter() - started
    n = split.problem.n
    rounds = []
    for m in rounds_for(max_m, RunConfig().stopping.first_round):
        frame = pl.DataFrame({"point": np.repeat(np.arange(n), m), "draw": np.tile(np.arange(m), n),
                              "value": matrix[:, :m].ravel()})
        began = time.perf_counter()
        result = amortize(split.problem.x_train, split.problem.y_train, split.problem.n_classes, frame,
                          config=AmortizationConfig(), seed=seed)
        true = truth_metrics(result.values, truth)
        rounds.append({
            "m": m, "estimated_nmse": result.error.nmse, "estimated_se": result.error.nmse_se,
            "true_nmse": true["nmse"], "true_pearson": true["pearson"],
            "network_estimated_nmse": result.error.network_nmse,
            "network_true_nmse": truth_metrics(result.network_values, truth)["nmse"],
            "mc_true_nmse": truth_metrics(matrix[:, :m].mean(axis=1), truth)["nmse"],
            "auroc": mislabeled_auroc(result.values, split.flipped), "gate_passed": result.gate_passed,
            "amortize_s": time.perf_counter() - began,
        })
    stop = next((r for r in rounds if r["estimated_nmse"] + r["estimated_se"] <= target), rounds[-1])
    reached = next((r for r in rounds if r["true_nmse"] <= stop["true_nmse"]), stop)
    return {"seed": seed, "sampling_s": sampling_s, "rounds": rounds, "stopped_at_m": stop["m"],
            "stopped_met_target": stop["estimated_nmse"] + stop["estimated_se"] <= target,
            "true_nmse_at_stop": stop["true_nmse"], "fixed_m_for_same_true_error": reached["m"]}


def within(estimate: float, truth: float, se: float) -> tuple[bool, bool]:
    """(within FACTOR of the truth, within FACTOR or two standard errors)."""
    ratio_ok = bool(truth > 0 and np.isfinite(estimate) and 1 / FACTOR <= estimate / truth <= FACTOR)
    return ratio_ok, ratio_ok or bool(abs(estimate - truth) <= 2 * se)


def summarize(case: dict, target: float) -> dict:
    seeds = case["seeds"]
    per_round = {}
    for s in seeds:
        for r in s["rounds"]:
            ok, ok_se = within(r["estimated_nmse"], r["true_nmse"], r["estimated_se"])
            per_round.setdefault(r["m"], []).append((r["estimated_nmse"], r["true_nmse"], ok, ok_se))
    return {
        "rounds": [{"m": m, "estimated_median": float(np.median([v[0] for v in rows])),
                    "true_median": float(np.median([v[1] for v in rows])),
                    "within_factor": sum(v[2] for v in rows), "within_factor_or_2se": sum(v[3] for v in rows),
                    "seeds": len(rows)} for m, rows in sorted(per_round.items())],
        "stops_with_true_nmse_le_0.25": sum(s["true_nmse_at_stop"] <= 0.25 for s in seeds),
        "seeds": len(seeds),
        "median_stop_m": float(np.median([s["stopped_at_m"] for s in seeds])),
        "mean_stop_m": float(np.mean([s["stopped_at_m"] for s in seeds])),
        # what a fixed budget needs to be as safe without the estimate: the smallest m of the
        # grid whose true nMSE is at most the target in at least 9 of 10 seeds
        "fixed_m_safe_in_90pct": next((m for m, rows in sorted(per_round.items())
                                       if np.mean([v[1] <= target for v in rows]) >= 0.9), None),
        "median_fixed_m_same_error": float(np.median([s["fixed_m_for_same_true_error"] for s in seeds])),
        "target": target,
    }


def print_table(cases: list[dict]) -> None:
    print(f"\n{'case':<16}{'m':>5}{'est. nMSE':>11}{'true nMSE':>11}{'within 1.5x':>13}{'or 2 SE':>9}")
    for case in cases:
        for r in case["summary"]["rounds"]:
            print(f"{case['case']:<16}{r['m']:>5}{r['estimated_median']:>11.3f}{r['true_median']:>11.3f}"
                  f"{r['within_factor']:>8}/{r['seeds']:<4}{r['within_factor_or_2se']:>5}/{r['seeds']}")
    print(f"\n{'case':<16}{'target':>7}{'stops with true <= 0.25':>25}{'mean m used':>13}"
          f"{'fixed m safe in 9/10':>22}")
    for case in cases:
        s = case["summary"]
        print(f"{case['case']:<16}{s['target']:>7}{s['stops_with_true_nmse_le_0.25']:>20}/{s['seeds']:<4}"
              f"{s['mean_stop_m']:>13.1f}{str(s['fixed_m_safe_in_90pct']):>22}")


def figure(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.6), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for s in case["seeds"]:
            ms = [r["m"] for r in s["rounds"]]
            ax.plot(ms, [r["true_nmse"] for r in s["rounds"]], color="black", alpha=0.35, lw=1)
            ax.errorbar(ms, [r["estimated_nmse"] for r in s["rounds"]], yerr=[r["estimated_se"] for r in s["rounds"]],
                        color="tab:blue", alpha=0.35, lw=1, capsize=2)
        ax.axhline(case["summary"]["target"], color="tab:red", ls="--", lw=1)
        ms = sorted({r["m"] for s in case["seeds"] for r in s["rounds"]})
        ax.set(xscale="log", xlabel="samples per point", title=case["case"], ylim=(0, None))
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.minorticks_off()
    axes[0][0].set_ylabel("nMSE: true (black), estimated (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the records here")
    parser.add_argument("--quick", action="store_true", help="KNN n=1,000 with 3 seeds only")
    parser.add_argument("--store", default="bench-store/anytime", help="where the logistic-regression truth is kept")
    parser.add_argument("--plot", help="PNG of estimated vs true error per round")
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET_ERROR)
    parser.add_argument("--resummarize", action="store_true", help="recompute the summaries and table of --json")
    parser.add_argument("--cases", help="only these cases, e.g. knn:5000,logreg:250")
    parser.add_argument("--seeds", type=int, help=f"seeds per case (default {SEEDS}, --quick {QUICK_SEEDS})")
    parser.add_argument("--append", action="store_true", help="add the cases to those already in --json")
    args = parser.parse_args(argv)
    if args.resummarize:
        record = json.loads(Path(args.json).read_text())
        for case in record["cases"]:
            case["summary"] = summarize(case, case["summary"]["target"])
        Path(args.json).write_text(json.dumps(record, indent=1, default=float))
        print_table(record["cases"])
        if args.plot:
            figure(record["cases"], Path(args.plot))
        return 0
    if not ADULT.exists():
        print(f"skipped: UCI adult not found at {ADULT} (see ../shared/datasets/README.md)")
        return 0
    pin_threads()
    cases = json.loads(Path(args.json).read_text())["cases"] if args.append and Path(args.json).exists() else []
    chosen = QUICK if args.quick else FULL
    if args.cases:
        wanted = {tuple(c.split(":")) for c in args.cases.split(",")}
        chosen = [c for c in FULL if (c[0], str(c[1])) in wanted]
    for learner, n, max_m, truth_m in chosen:
        tag = f"{learner} n={n}"
        split = adult_problem(n, seed=0)
        started = time.perf_counter()
        truth, info = truth_for(learner, split, truth_m, Path(args.store))
        print(f"[{tag}] truth ({info['kind']}) in {time.perf_counter() - started:.0f} s", flush=True)
        seeds = []
        for seed in range(args.seeds or (QUICK_SEEDS if args.quick else SEEDS)):
            seeds.append(run_seed(split, truth, learner, max_m, seed, args.target))
            s = seeds[-1]
            print(f"[{tag}] seed {seed}: " + "  ".join(
                f"m={r['m']} est {r['estimated_nmse']:.3f}+-{r['estimated_se']:.3f} true {r['true_nmse']:.3f}"
                for r in s["rounds"]) + f"  -> stops at m={s['stopped_at_m']} (true {s['true_nmse_at_stop']:.3f})",
                flush=True)
        case = {"case": tag, "utility": learner, "n": n, "truth": info, "seeds": seeds}
        case["summary"] = summarize(case, args.target)
        cases.append(case)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # after every case: a long run keeps its part
        Path(args.json).write_text(json.dumps({"benchmark": "anytime", "load_average": os.getloadavg(),
                                               "cases": cases}, indent=1, default=float))
    print_table(cases)
    if args.plot:
        figure(cases, Path(args.plot))
    print(json.dumps({"benchmark": "anytime", **{c["case"]: c["summary"] for c in cases}}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
