"""The per-row values table and the run's summary figures.

One row per input row, in input order: the row index in the --data file, whether the
row was valued ("train") or used to measure the utility ("valid"), the Monte Carlo
estimate with its standard error and sample count, and the amortized value. Validation
rows split off the input have no Monte Carlo estimate (they were never valued) but the
network scores them like any unseen point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from amortval.tasks.metrics import mislabeled_auroc, pearson


def values_table(
    *,
    train_rows: np.ndarray,
    estimates: pl.DataFrame,
    amortized_train: np.ndarray,
    valid_rows: np.ndarray | None,
    amortized_valid: np.ndarray | None,
    labels_train: list,
    labels_valid: list | None,
    mislabeled: np.ndarray | None,
) -> pl.DataFrame:
    est = estimates.sort("point")
    train = pl.DataFrame(
        {
            "row": np.asarray(train_rows, dtype=np.int64),
            "split": ["train"] * len(train_rows),
            "label": [str(v) for v in labels_train],
            "mc_value": est["mc_value"].to_numpy(),
            "mc_stderr": est["mc_stderr"].to_numpy(),
            "mc_count": est["mc_count"].cast(pl.Int64).to_numpy(),
            "amortized_value": np.asarray(amortized_train, dtype=np.float64),
        }
    )
    if mislabeled is not None:
        train = train.with_columns(pl.Series("mislabeled", np.asarray(mislabeled, dtype=bool)))
    frames = [train]
    if valid_rows is not None and amortized_valid is not None:
        valid = pl.DataFrame(
            {
                "row": np.asarray(valid_rows, dtype=np.int64),
                "split": ["valid"] * len(valid_rows),
                "label": [str(v) for v in labels_valid or []],
                "mc_value": pl.Series([None] * len(valid_rows), dtype=pl.Float64),
                "mc_stderr": pl.Series([None] * len(valid_rows), dtype=pl.Float64),
                "mc_count": pl.Series([0] * len(valid_rows), dtype=pl.Int64),
                "amortized_value": np.asarray(amortized_valid, dtype=np.float64),
            }
        )
        frames.append(valid)
    return pl.concat(frames, how="diagonal").sort("row")


def summary_metrics(table: pl.DataFrame) -> dict[str, float]:
    """Agreement of network and Monte Carlo; label-error detection when flips are known."""
    train = table.filter(pl.col("split") == "train")
    mc, net = train["mc_value"].to_numpy(), train["amortized_value"].to_numpy()
    out = {"pearson_network_vs_monte_carlo": pearson(mc, net)}
    if "mislabeled" in train.columns:
        flags = train["mislabeled"].to_numpy()
        out["mislabeled_auroc_network"] = mislabeled_auroc(net, flags)
        out["mislabeled_auroc_monte_carlo"] = mislabeled_auroc(mc, flags)
    return out


def write_parquet(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write atomically: a killed run never leaves a torn output file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path
