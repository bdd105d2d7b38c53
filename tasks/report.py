"""What a valuation run reports: the per-row values table, parameters, metrics, figures.

One row per input row, in input order: the row index in the --data file, whether the
row was valued ("train") or used to measure the utility ("valid"), the Monte Carlo
estimate with its standard error and sample count, the network's (amortized) value, and
``value``: the reported value, the network and Monte Carlo combined by their variances
(tasks/amortize.py). ``sampled`` says whether the row got Monte Carlo samples: with
``--points`` only a seeded subset of the training rows does, and the others (like the
validation rows split off the input, which were never valued) have no Monte Carlo
estimate: the network scores them like any unseen point, and that is their ``value``.
Comparisons with the Monte Carlo estimates use the sampled rows only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from matplotlib.figure import Figure

from amortval.data.tabular import TabularData
from amortval.errors import storage_errors
from amortval.models.utility import STATUS_NAMES
from amortval.tasks import plots
from amortval.tasks.amortize import AmortizationResult
from amortval.tasks.config import RunConfig
from amortval.tasks.knn_shapley import knn_shapley
from amortval.tasks.metrics import mislabeled_auprc, mislabeled_auroc, pearson, truth_metrics
from amortval.tasks.removal import curation_gain, removal_curves
from amortval.tasks.marginals import learner_seed
from amortval.tasks.prepare import Inputs


def values_table(
    data: TabularData,
    estimates: pl.DataFrame,
    amortized_valid: np.ndarray | None,
    sampled: np.ndarray | None = None,
) -> pl.DataFrame:
    """One row per input row of --data, in input order (see the module docstring).
    ``sampled``: which training points got samples (None: all of them)."""
    est = estimates.sort("point")
    n_train = data.train.height
    train = pl.DataFrame(
        {
            "row": np.asarray(data.train_rows, dtype=np.int64),
            "split": ["train"] * n_train,
            "label": [str(v) for v in data.train[data.target].to_list()],
            "sampled": np.ones(n_train, dtype=bool) if sampled is None else np.asarray(sampled, dtype=bool),
            "mc_value": est["mc_value"],  # null, not NaN, where a row has no samples
            "mc_stderr": est["mc_stderr"],
            "mc_count": est["mc_count"].fill_null(0).cast(pl.Int64),
            "amortized_value": est["amortized_value"].to_numpy(),
            "value": est["combined_value"].to_numpy(),
        }
    )
    if data.mislabeled is not None:
        train = train.with_columns(pl.Series("mislabeled", np.asarray(data.mislabeled, dtype=bool)))
    if data.valid_rows is None or amortized_valid is None:
        return train.sort("row")
    n_valid = len(data.valid_rows)
    valid = pl.DataFrame(
        {
            "row": np.asarray(data.valid_rows, dtype=np.int64),
            "split": ["valid"] * n_valid,
            "label": [str(v) for v in data.valid[data.target].to_list()],
            "sampled": np.zeros(n_valid, dtype=bool),
            "mc_value": pl.Series([None] * n_valid, dtype=pl.Float64),
            "mc_stderr": pl.Series([None] * n_valid, dtype=pl.Float64),
            "mc_count": pl.Series([0] * n_valid, dtype=pl.Int64),
            "amortized_value": np.asarray(amortized_valid, dtype=np.float64),
            "value": np.asarray(amortized_valid, dtype=np.float64),
        }
    )
    return pl.concat([train, valid], how="diagonal").sort("row")


def run_params(plan, inputs: Inputs) -> dict:
    """What MLflow shows as the run's parameters: the data, its shape, and the config
    (nested parts flattened by the tracking module: ``sampling.samples``)."""
    problem = inputs.problem
    return {
        "run_id": plan.run_id,
        "sampling_id": plan.sampling_id,
        "dataset_id": plan.dataset_id,
        "data": inputs.source,
        "valid": inputs.valid_source or f"split of data ({len(problem.y_valid)} rows)",
        "target": inputs.data.target,
        "n_points": problem.n,
        "n_sampled": plan.n_sampled,
        "n_valid": len(problem.y_valid),
        "n_features": problem.n_features,
        "n_classes": problem.n_classes,
        "allow_missing": inputs.data.allow_missing,
        "encode": inputs.data.encode,
        **plan.config.model_dump(mode="json", exclude={"inputs", "workers", "runner", "out", "store"}),
    }


def gate_metrics(result: AmortizationResult) -> dict[str, float]:
    return {
        "gate_mse_network": result.gate_mse_network,
        "gate_mse_monte_carlo": result.gate_mse_monte_carlo,
        "gate_mse_constant": result.gate_mse_constant,
        "gate_passed": float(result.gate_passed),
        "estimated_nmse": result.error.nmse,
        "estimated_nmse_se": result.error.nmse_se,
        "estimated_network_nmse": result.error.network_nmse,
        "estimated_nmse_sampled": result.error.nmse_sampled,
        "estimated_nmse_unsampled": result.error.nmse_unsampled,
        "estimated_true_variance": result.error.true_variance,
        "best_epoch": float(result.best_epoch),
        "amortization_lr_mean": float(np.mean(result.fold_lrs)),
        "control_variance_ratio": result.control.variance_ratio,
        "control_samples_adjusted": float(result.control.samples_adjusted),
        "network_error_estimate": result.network_error,
        "combine_weight_mean": float(np.mean(result.combine_weight)),
        "amortization_folds": float(result.n_folds),
        "seconds_amortization": result.seconds,
    }


def status_metrics(counts: dict[str, int]) -> dict[str, float]:
    """``samples_<status>`` for every status, zeros included, so runs compare column by column."""
    return {f"samples_{status}": float(counts.get(status, 0)) for status in STATUS_NAMES}


def run_figures(table: pl.DataFrame, result: AmortizationResult) -> dict[str, Figure]:
    """Values per class, network vs Monte Carlo, and the training curve."""
    train = table.filter(pl.col("split") == "train")
    flags = train["mislabeled"].to_numpy() if "mislabeled" in train.columns else None
    sampled = train.filter(pl.col("sampled"))
    sampled_flags = sampled["mislabeled"].to_numpy() if flags is not None else None
    return {
        "value_distribution": plots.value_distribution_figure(train["amortized_value"].to_numpy(),
                                                              train["label"].to_list(), flags),
        "network_vs_monte_carlo": plots.network_vs_monte_carlo_figure(
            sampled["mc_value"].to_numpy(), sampled["mc_stderr"].to_numpy(), sampled["amortized_value"].to_numpy(),
            sampled_flags
        ),
        "training_curve": plots.training_curve_figure(result.history, result.best_epoch),
    }


def summary_metrics(table: pl.DataFrame) -> dict[str, float]:
    """Agreement of network and Monte Carlo; label-error detection when flips are known."""
    train = table.filter(pl.col("split") == "train")
    sampled = train.filter(pl.col("sampled"))
    out = {"pearson_network_vs_monte_carlo": pearson(sampled["mc_value"].to_numpy(),
                                                     sampled["amortized_value"].to_numpy())}
    if "mislabeled" in train.columns:
        # Monte Carlo values exist on the sampled rows only; the network's on every row
        for name, column, rows in (("network", "amortized_value", train), ("monte_carlo", "mc_value", sampled),
                                   ("combined", "value", train)):
            values, flags = rows[column].to_numpy(), rows["mislabeled"].to_numpy()
            out[f"mislabeled_auroc_{name}"] = mislabeled_auroc(values, flags)
            out[f"mislabeled_auprc_{name}"] = mislabeled_auprc(values, flags)
    return out


REMOVAL_FRACTIONS = np.round(np.arange(0.0, 0.51, 0.05), 2)


def quality_report(inputs: Inputs, config: RunConfig, table: pl.DataFrame) -> tuple[dict[str, float], dict[str, Figure]]:
    """Downstream quality, when something to measure it against exists.

    - Known label errors (``--mislabeled-column``): point removal (retrain without the
      lowest / highest valued fractions) and curation gain (retrain on the points valued
      >= 0), scored on the validation set -- the utility's own set, so the curves show
      what the values optimize, not an unbiased test accuracy (benchmarks/accuracy.py
      uses a separate test set).
    - An exact ground truth (the KNN utility with Data Shapley: Jia et al.'s closed
      form): MSE, normalized MSE, Pearson, Spearman and sign agreement of the reported,
      network and Monte Carlo values.
    """
    problem, metrics, figures = inputs.problem, {}, {}
    points = pl.DataFrame({"row": np.asarray(inputs.data.train_rows, dtype=np.int64), "point": np.arange(problem.n)})
    train = points.join(table.filter(pl.col("split") == "train"), on="row").sort("point")
    estimators = {"reported": train["value"].to_numpy(), "network": train["amortized_value"].to_numpy()}
    if train["sampled"].all():  # per-row Monte Carlo values exist only when every row was sampled
        estimators["monte_carlo"] = train["mc_value"].to_numpy()
    if "mislabeled" in train.columns:
        learner, seed, knn_k = config.utility.learner, learner_seed(config.sampling.seed), config.utility.knn_k
        workers = config.thread_count  # the flow's own threads: its batches are done
        curves = {name: removal_curves(problem, learner, values, REMOVAL_FRACTIONS, seed=seed, knn_k=knn_k,
                                       workers=workers)
                  for name, values in estimators.items() if name != "network"}
        figures["point_removal"] = plots.removal_curves_figure(curves)
        for name, curve in curves.items():
            metrics[f"removal_low10_accuracy_{name}"] = float(curve["low_removed"][2])  # 10% removed
        gain = curation_gain(problem, learner, estimators["reported"] >= 0, seed=seed, knn_k=knn_k, workers=workers,
                             full=curves["reported"]["full"])
        metrics.update({"curation_accuracy_all": gain["all"], "curation_accuracy_kept": gain["kept"],
                        "curation_gain": gain["gain"], "curation_kept": float(gain["n_kept"])})
    if config.utility.learner == "knn" and config.sampling.method == "shapley":
        truth = knn_shapley(problem, config.utility.knn_k)
        for name, values in estimators.items():
            metrics.update({f"truth_{key}_{name}": v for key, v in truth_metrics(values, truth).items()})
    return metrics, figures


def markdown_summary(plan, inputs: Inputs, metrics: dict[str, float]) -> str:
    """The run at a glance, as the MLflow run's ``summary.md``: what was valued, how well, where."""
    config = plan.config
    gate = "passed" if metrics.get("gate_passed") else "failed (champion alias not moved)"
    lines = [
        f"# {plan.run_id}", "",
        f"- **Data**: {inputs.source} ({inputs.problem.n:,} training points, {len(inputs.problem.y_valid):,} "
        f"validation rows, target `{inputs.data.target}`)",
        f"- **Method**: {config.sampling.method} with the {config.utility.learner} utility, "
        f"{plan.samples} samples per point (sampler {config.sampling.sampler_name}, seed {config.sampling.seed})",
        f"- **Estimated error** (nMSE, no ground truth): {metrics.get('estimated_nmse', float('nan')):.3g}"
        + (f" after {int(metrics['rounds'])} rounds; {metrics.get('stop_reason', '')}" if "rounds" in metrics else ""),
        f"- **Model fits**: {int(metrics.get('model_fits', 0)):,} behind these samples, "
        f"{int(metrics.get('new_model_fits', 0)):,} computed by this run",
        f"- **Quality gate**: {gate}; held-out MSE network {metrics.get('gate_mse_network', float('nan')):.4g} "
        f"vs Monte Carlo {metrics.get('gate_mse_monte_carlo', float('nan')):.4g} "
        f"and constant {metrics.get('gate_mse_constant', float('nan')):.4g}",
    ]
    if "mislabeled_auroc_combined" in metrics:
        lines.append(f"- **Known label errors found** (AUROC): reported {metrics['mislabeled_auroc_combined']:.3f}, "
                     f"network {metrics['mislabeled_auroc_network']:.3f}, "
                     f"Monte Carlo {metrics['mislabeled_auroc_monte_carlo']:.3f}")
    lines += [f"- **Values**: `tables/values.parquet` (also `{plan.values_path.name}` in the store's `values/`)", "",
              "## Figures", ""]
    figures = ["value_distribution", "network_vs_monte_carlo", "training_curve"]
    if "mislabeled_auroc_combined" in metrics:
        figures.append("point_removal")
    lines += [f"![{name}](figures/{name}.png)" for name in figures]
    return "\n".join(lines) + "\n"


def export_values(values_path: str | Path, out: str | None) -> None:
    """Copy the run's values table to ``--out`` (atomically), when asked for."""
    if out:
        write_parquet(pl.read_parquet(values_path), out)


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write atomically: a killed run never leaves a torn output file, a failed write no temp
    file; a full disk or read-only place is a ``StorageError`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes never share a temp file
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            frame.write_parquet(tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path
