"""What the scale benchmark measures around a finished run: probe quality against a stored
Monte Carlo truth, a plain label-error reference, and where the wall time went.

- **Probe truth**: ``PROBES`` seeded rows among the run's sampled training rows get a
  many-sample truth of the same estimand (Distributional Shapley, same size range, same
  utility seed), drawn on one coalition per draw shared by the probes (101 fits a draw)
  and another seed than the run's, stored in DuckDB once per (data, spec) and reused.
  Its own noise comes from its two halves (``halves_agreement``).
- **Reference AUROC**: out-of-fold (5 folds) XGBoost confidence in the observed label,
  with the utility's own settings; lower confidence = more likely flipped.
- **Timing**: from timestamps the benchmark takes around the run and those the store
  keeps (run created, each batch finished, the amortization's own seconds).
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

import numpy as np
import polars as pl
import xgboost as xgb

from amortval.data.problem import load_problem
from amortval.data.store import ValuationStore
from amortval.data.truth_store import truth_info
from amortval.models.xgboost_learner import PARAMS, ROUNDS
from amortval.tasks.ground_truth import TruthSpec, halves_agreement, load_or_compute_truth
from amortval.tasks.metrics import mislabeled_auroc, truth_metrics
from amortval.tasks.samplers import sampled_points

PROBES = 100
TRUTH_SEED = 1_000_003  # the truth's draws: a seed no judged run uses


def probe_points(values: pl.DataFrame, seed: int, count: int = PROBES) -> np.ndarray:
    """The first ``count`` rows the run's ``points`` stream picks: sampled in any run of that
    seed with at least ``count`` sampled rows (a smaller ``--points`` picks a prefix of a
    larger one's rows), so the probes and their stored truth outlive a change of budget.
    A training row's point index is its row: validation rows come as a separate file."""
    train = values.filter(pl.col("split") == "train").sort("row")
    probes = sampled_points(seed, train.height, count)
    if not train["sampled"].to_numpy()[probes].all():
        raise RuntimeError(f"probe rows must be sampled rows: the run sampled fewer than {count} rows")
    return probes


def probe_quality(values: pl.DataFrame, problem_path: str, *, learner: str, run_seed: int, truth_samples: int,
                  truth_store: Path, log=print) -> dict:
    """Reported, network and Monte Carlo values of the probes against the stored truth."""
    probes = probe_points(values, run_seed)
    spec = TruthSpec(probes=tuple(int(p) for p in probes), samples=truth_samples, seed=TRUTH_SEED,
                     learner=learner, method="distributional", sampler="shared", utility_seed=run_seed,
                     batch_fits=400)  # batches of ~10 s, so both cores stay busy to the end
    truth_store.parent.mkdir(parents=True, exist_ok=True)
    with ValuationStore(truth_store) as store:
        truth = load_or_compute_truth(store, problem_path, spec, workers=os.cpu_count() or 1,
                                      progress=lambda *a: log(" ", *a))
        info = truth_info(store, spec.truth_id(load_problem(problem_path)))
    truth = truth.sort("point")
    rows = values.filter(pl.col("split") == "train").join(truth.select(pl.col("point").alias("row"), "value"),
                                                          on="row", suffix="_truth").sort("row")
    target = rows["value_truth"].to_numpy()
    reported = truth_metrics(rows["value"].to_numpy(), target)
    network = truth_metrics(rows["amortized_value"].to_numpy(), target)
    monte_carlo = truth_metrics(rows["mc_value"].to_numpy(), target)
    noise = halves_agreement(truth)
    return {"probes": len(probes), "truth_samples": truth_samples,
            "probe_pearson": reported["pearson"], "probe_nmse": reported["nmse"],
            "probe_spearman": reported["spearman"], "probe_pearson_network": network["pearson"],
            "probe_pearson_monte_carlo": monte_carlo["pearson"], "probe_nmse_monte_carlo": monte_carlo["nmse"],
            "truth_nmse": noise["truth_nmse"], "truth_pearson": noise["truth_pearson"],
            "truth_fits": info["n_fits"], "truth_seconds": info["seconds"]}


def reference_auroc(problem_path: str, flipped: np.ndarray, *, seed: int, folds: int = 5) -> float:
    """AUROC of out-of-fold XGBoost confidence in each training row's observed label."""
    problem = load_problem(problem_path)
    x, y = problem.x_train, problem.y_train
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    confidence = np.empty(len(y))
    params = dict(PARAMS, nthread=os.cpu_count() or 1, seed=seed)
    params.update({"objective": "binary:logistic"} if problem.n_classes == 2 else
                  {"objective": "multi:softprob", "num_class": problem.n_classes})
    for f in range(folds):
        train, held = fold != f, fold == f
        booster = xgb.train(params, xgb.DMatrix(x[train], label=y[train]), num_boost_round=ROUNDS)
        prob = booster.predict(xgb.DMatrix(x[held]))
        if prob.ndim == 1:
            prob = np.stack([1 - prob, prob], axis=1)
        confidence[held] = prob[np.arange(held.sum()), y[held]]
    return mislabeled_auroc(confidence, flipped)


def time_breakdown(store: Path, run_id: str, *, popen: float, called: float, returned: float, exited: float,
                   flow_seconds: float, amortization: float) -> dict:
    """Seconds per stage: start (interpreter, imports, input checks, Prefect's temporary
    server, the flow run, reading and encoding the table, the problem file: up to the
    run's row in the store), sampling (to the last batch committed; ``sampling_compute_s``
    is the batches' own seconds summed over workers), amortization (the network's
    training), record (estimates, values table, point-removal refits, MLflow run and
    model, the flow's end), exit (the process ending, Prefect's temporary server with it).
    ``flow_s`` is the flow's own duration, as it reports it."""
    with ValuationStore(store / "amortval.duckdb") as db:
        row = db.query("SELECT r.created_at AS created, max(b.finished_at) AS last, sum(b.seconds) AS compute, "
                       "count(*) AS batches FROM runs r JOIN batches b ON b.run_id = r.run_id "
                       "WHERE r.run_id = ? GROUP BY r.created_at", [run_id]).row(0, named=True)
    created, last = (row[k].replace(tzinfo=UTC).timestamp() for k in ("created", "last"))
    return {"start_s": created - popen, "sampling_s": last - created, "sampling_compute_s": float(row["compute"]),
            "batches": int(row["batches"]), "amortization_s": amortization,
            "record_s": returned - last - amortization, "exit_s": exited - returned,
            "imports_s": called - popen, "flow_s": flow_seconds}
