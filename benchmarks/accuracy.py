"""Accuracy benchmark: amortized vs plain Monte Carlo against ground truth on UCI adult.

    python benchmarks/accuracy.py --json accuracy.json            # full (~20 min, 2 cores)
    python benchmarks/accuracy.py --json accuracy.json --quick    # KNN n=1,000, m in {1, 10}

Data: UCI adult from ../shared/datasets/adult (one-hot categoricals, standardized
numerics, 20% of training labels flipped, a 100-point validation set, a 1,000-point clean
test set for point removal). Ground truths: exact KNN-Shapley (closed form) for the KNN
utility; a many-sample Monte Carlo truth, stored in DuckDB and computed once, for the
logistic-regression utility.

For every (utility, n, m): plain Monte Carlo (mean of the first m samples of each point)
and the amortized estimate (``tasks.amortize`` on the same m samples per point, held-out
ones included: equal total samples) are scored against the truth. The
sample-efficiency ratio is m'/m, where m' is the number of samples per point plain Monte
Carlo needs to reach the amortized nMSE at m, interpolated on a log-log scale along a
Monte Carlo curve measured up to ``mc_curve_max`` samples per point; when the amortized
error is below the curve's end, m' is the curve's end and ``ratio_exceeds_curve`` is
true (the ratio is then a lower bound). Prints a table, writes one JSON file and plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult import ADULT, adult_problem  # noqa: E402

from amortval.data.problem import Problem  # noqa: E402
from amortval.data.store import ValuationStore  # noqa: E402
from amortval.models.utility import make_utility  # noqa: E402
from amortval.tasks import plots  # noqa: E402
from amortval.tasks.amortize import amortize  # noqa: E402
from amortval.tasks.config import AmortizationConfig, RunConfig  # noqa: E402
from amortval.tasks.ground_truth import TruthSpec, halves_agreement, load_or_compute_truth  # noqa: E402
from amortval.tasks.knn_shapley import knn_shapley  # noqa: E402
from amortval.tasks.metrics import mislabeled_auprc, mislabeled_auroc, truth_metrics  # noqa: E402
from amortval.tasks.removal import curation_gain, removal_curves  # noqa: E402
from amortval.tasks.runtime import pin_threads  # noqa: E402
from amortval.tasks.marginals import learner_seed  # noqa: E402
from amortval.tasks.samplers import make_sampler, plan_segments  # noqa: E402

M_GRID = (1, 2, 5, 10, 25, 50)
FULL = [  # utility, n, Monte Carlo curve length, truth samples per point
    ("knn", 1000, 1000, None),
    ("knn", 5000, 500, None),
    ("logreg", 250, 500, 2000),
]
QUICK = [("knn", 1000, 1000, None)]
QUICK_M = (1, 10)
REMOVAL_AT_M = 10
FRACTIONS = np.round(np.arange(0.0, 0.51, 0.05), 2)
SAMPLE_SEED, TRUTH_SEED = 0, 1_000_003


def sample_matrix(problem: Problem, learner: str, samples: int, seed: int = SAMPLE_SEED,
                  sizes: np.ndarray | None = None) -> np.ndarray:
    """(n, samples) permutation samples of the run with this seed; column j is permutation j
    (the run's draws). ``sizes``, an (n, samples) int array, receives each sample's
    cardinality (what a run's stored samples carry, and the control variate reads)."""
    config = RunConfig.from_options(learner=learner, samples=samples, seed=seed)
    utility = make_utility(learner, problem, learner_seed(seed), knn_k=config.utility.knn_k)
    sampler = make_sampler(config.sampling, problem.n)
    out = np.zeros((problem.n, samples))
    for units in plan_segments(sampler, samples, config.sampling.batch_fits):
        rows = sampler.run(utility, units, seed)
        out[rows.point, rows.draw] = rows.weight * rows.delta
        if sizes is not None:
            sizes[rows.point, rows.draw] = rows.cardinality
    return out


def truth_for(learner: str, split, truth_samples: int | None, store_dir: Path) -> tuple[np.ndarray, dict]:
    if learner == "knn":
        return knn_shapley(split.problem, RunConfig().utility.knn_k), {"kind": "exact closed form"}
    store_dir.mkdir(parents=True, exist_ok=True)
    problem_path = split.problem.save(store_dir / f"{split.problem.fingerprint}.npz")
    spec = TruthSpec(probes=tuple(range(split.problem.n)), samples=truth_samples, seed=TRUTH_SEED, learner=learner)
    with ValuationStore(store_dir / "truth.duckdb") as store:
        frame = load_or_compute_truth(store, str(problem_path), spec, workers=os.cpu_count() or 1,
                                      progress=lambda *a: print("  truth:", *a, flush=True))
    frame = frame.sort("point")
    return frame["value"].to_numpy(), {"kind": f"Monte Carlo, {truth_samples} samples per point",
                                       **halves_agreement(frame)}


def efficiency_ratio(target: float, m: int, curve_m: np.ndarray, curve_nmse: np.ndarray) -> tuple[float, bool]:
    """m'/m with m' where the Monte Carlo curve reaches ``target`` (log-log interpolation)."""
    if target <= curve_nmse[-1]:
        return float(curve_m[-1] / m), True
    if target >= curve_nmse[0]:
        return float(curve_m[0] / m), False
    lm, le = np.log(curve_m), np.log(curve_nmse)
    # The curve falls (almost) monotonically: interpolate on its running minimum.
    le = np.minimum.accumulate(le)
    i = int(np.searchsorted(-le, -math.log(target)))
    t = (math.log(target) - le[i - 1]) / (le[i] - le[i - 1]) if le[i] != le[i - 1] else 0.0
    return float(math.exp(lm[i - 1] + t * (lm[i] - lm[i - 1])) / m), False


def samples_frame(matrix: np.ndarray, m: int, sizes: np.ndarray) -> pl.DataFrame:
    """The first m draws as a run's samples frame, with their cardinalities."""
    n = matrix.shape[0]
    return pl.DataFrame({"point": np.repeat(np.arange(n), m), "draw": np.tile(np.arange(m), n),
                         "value": matrix[:, :m].ravel(), "cardinality": sizes[:, :m].ravel()})


def run_case(learner: str, n: int, curve_max: int, truth_samples: int | None, ms: tuple[int, ...],
             args: argparse.Namespace, stages: list[dict]) -> tuple[list[dict], dict]:
    tag = f"{learner} n={n}"
    started = time.perf_counter()
    split = adult_problem(n, seed=0)
    truth, truth_info = truth_for(learner, split, truth_samples, Path(args.store))
    stages.append({"case": tag, "stage": "ground truth", "seconds": time.perf_counter() - started})
    print(f"[{tag}] ground truth ({truth_info['kind']}) in {stages[-1]['seconds']:.1f} s", flush=True)

    started = time.perf_counter()
    sizes = np.zeros((split.problem.n, max(curve_max, max(ms))), dtype=np.int64)
    matrix = sample_matrix(split.problem, learner, sizes.shape[1], sizes=sizes)
    stages.append({"case": tag, "stage": f"Monte Carlo samples ({matrix.shape[1]} per point)",
                   "seconds": time.perf_counter() - started})
    print(f"[{tag}] {matrix.size:,} samples in {stages[-1]['seconds']:.1f} s", flush=True)
    curve_m = np.unique(np.round(np.geomspace(1, matrix.shape[1], 25)).astype(int))
    curve = np.array([truth_metrics(matrix[:, :k].mean(axis=1), truth)["nmse"] for k in curve_m])
    mc_auroc_curve = {int(k): mislabeled_auroc(matrix[:, :k].mean(axis=1), split.flipped) for k in curve_m}

    records, amortized_at = [], {}
    for m in ms:
        started = time.perf_counter()
        result = amortize(split.problem.x_train, split.problem.y_train, split.problem.n_classes,
                          samples_frame(matrix, m, sizes), config=AmortizationConfig(), seed=0)
        seconds = time.perf_counter() - started
        mc = matrix[:, :m].mean(axis=1)
        mc_q, am_q, net_q = (truth_metrics(v, truth) for v in (mc, result.values, result.network_values))
        ratio, exceeds = efficiency_ratio(am_q["nmse"], m, curve_m, curve)
        records.append({
            "utility": learner, "n": n, "m": m,
            "mc_nmse": mc_q["nmse"], "mc_pearson": mc_q["pearson"],
            "amortized_nmse": am_q["nmse"], "amortized_pearson": am_q["pearson"],
            "mc_auroc": mislabeled_auroc(mc, split.flipped), "amortized_auroc": mislabeled_auroc(result.values, split.flipped),
            "sample_efficiency_ratio": ratio, "seconds": seconds,
            "ratio_exceeds_curve": exceeds, "network_nmse": net_q["nmse"], "network_pearson": net_q["pearson"],
            "mc_spearman": mc_q["spearman"], "amortized_spearman": am_q["spearman"],
            "mc_sign_agreement": mc_q["sign_agreement"], "amortized_sign_agreement": am_q["sign_agreement"],
            "mc_auprc": mislabeled_auprc(mc, split.flipped), "amortized_auprc": mislabeled_auprc(result.values, split.flipped),
            "combine_weight_mean": float(result.combine_weight.mean()), "fold_epochs": result.fold_epochs,
            "fold_lrs": result.fold_lrs,
            "gate_passed": result.gate_passed,
        })
        amortized_at[m] = result.values
        stages.append({"case": tag, "stage": f"amortize m={m}", "seconds": seconds})
        r = records[-1]
        print(f"[{tag}] m={m:3d}  nMSE MC {r['mc_nmse']:.3f}  amortized {r['amortized_nmse']:.3f} "
              f"(network {r['network_nmse']:.3f})  ratio {'>' if exceeds else ''}{ratio:.1f}  "
              f"AUROC MC {r['mc_auroc']:.3f} amortized {r['amortized_auroc']:.3f}  {seconds:.1f} s", flush=True)

    started = time.perf_counter()
    m_rm = REMOVAL_AT_M if REMOVAL_AT_M in amortized_at else max(amortized_at)
    estimators = {"exact / truth": truth, f"Monte Carlo m={m_rm}": matrix[:, :m_rm].mean(axis=1),
                  f"amortized m={m_rm}": amortized_at[m_rm]}
    curves = {label: removal_curves(split.test, learner, v, FRACTIONS, seed=0) for label, v in estimators.items()}
    gains = {label: curation_gain(split.test, learner, v >= 0, seed=0) for label, v in estimators.items()}
    stages.append({"case": tag, "stage": "point removal and curation", "seconds": time.perf_counter() - started})
    downstream = {
        "truth": truth_info,
        "mc_curve": {"m": curve_m.tolist(), "nmse": curve.tolist()},
        "mc_auroc_curve": mc_auroc_curve,
        "removal": {label: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}
                    for label, c in curves.items()},
        "curation_gain": gains,
    }
    if args.plots:
        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        slug = f"{learner}_n{n}"
        fig = plots.removal_curves_figure(curves)
        fig.suptitle(f"Point removal, adult, {learner} utility, n={n} (test accuracy)")
        fig.savefig(out / f"removal_{slug}.png", dpi=110, bbox_inches="tight")
        nmse_figure(records, curve_m, curve, tag).savefig(out / f"nmse_{slug}.png", dpi=110, bbox_inches="tight")
    return records, downstream


def nmse_figure(records: list[dict], curve_m: np.ndarray, curve: np.ndarray, tag: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.subplots()
    ax.loglog(curve_m, curve, color="tab:gray", label="plain Monte Carlo")
    ms = [r["m"] for r in records]
    ax.loglog(ms, [r["amortized_nmse"] for r in records], "o-", color="tab:blue", label="amortized (reported)")
    ax.loglog(ms, [r["network_nmse"] for r in records], "s--", color="tab:cyan", label="network alone")
    ax.set_xlabel("samples per point (all counted)")
    ax.set_ylabel("normalized MSE vs ground truth")
    ax.set_title(f"adult, {tag}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def print_table(records: list[dict]) -> None:
    head = f"{'utility':8} {'n':>5} {'m':>3} {'MC nMSE':>8} {'amort':>7} {'net':>7} {'ratio':>7} " \
           f"{'MC r':>6} {'am r':>6} {'MC AUC':>7} {'am AUC':>7} {'sec':>6}"
    print(head)
    print("-" * len(head))
    for r in records:
        ratio = f"{'>' if r['ratio_exceeds_curve'] else ''}{r['sample_efficiency_ratio']:.1f}"
        print(f"{r['utility']:8} {r['n']:5d} {r['m']:3d} {r['mc_nmse']:8.3f} {r['amortized_nmse']:7.3f} "
              f"{r['network_nmse']:7.3f} {ratio:>7} {r['mc_pearson']:6.3f} {r['amortized_pearson']:6.3f} "
              f"{r['mc_auroc']:7.3f} {r['amortized_auroc']:7.3f} {r['seconds']:6.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the records to this JSON file")
    parser.add_argument("--quick", action="store_true", help="KNN utility, n=1,000, m in {1, 10} (< 5 minutes)")
    parser.add_argument("--store", default="benchmarks/.store", help="folder for the ground-truth DuckDB store")
    parser.add_argument("--plots", default="benchmarks/results", help="folder for the figures ('' for none)")
    args = parser.parse_args(argv)
    if not ADULT.exists():
        print(f"benchmark needs UCI adult at {ADULT} (see ../shared/datasets/README.md); nothing run", file=sys.stderr)
        return 2
    pin_threads()
    started = time.perf_counter()
    stages: list[dict] = []
    records, downstream = [], {}
    for learner, n, curve_max, truth_samples in (QUICK if args.quick else FULL):
        ms = QUICK_M if args.quick else M_GRID
        recs, info = run_case(learner, n, curve_max, truth_samples, ms, args, stages)
        records += recs
        downstream[f"{learner}_n{n}"] = info
    print()
    print_table(records)
    print()
    for s in stages:
        print(f"  {s['case']:14} {s['stage']:40} {s['seconds']:8.1f} s")
    payload = {"records": records, "quick": args.quick, "seconds": time.perf_counter() - started,
               "stages": stages, "details": downstream,
               "command": "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=1, default=float))
    print(json.dumps({"records": len(records), "json": str(args.json), "seconds": round(payload["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
