"""Merging two valuation results of the same values: counts add.

Two runs estimate the same values when everything in their sampling identity but the seed
agrees: the dataset (content and schema), the utility and the semivalue with its
parameters, the sampler and the sampled rows' count. Different seeds draw independent
samples, so per row the merged Monte Carlo mean is the count-weighted mean of the two,
the counts add and the standard error follows; the network value is the mean of the two
networks' (independent ensembles); the reported value is the count-weighted mean of the
two reported values (equal weights where neither run sampled the row). The same seed
draws the same samples, and merging would count them twice: refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from amortval.data.store import ValuationStore
from amortval.errors import ConfigError


def _identity(result) -> dict:
    with ValuationStore(Path(result.store) / "amortval.duckdb") as db:
        stored = db.sampling(result.sampling_id)
    if stored is None:
        raise ConfigError(f"sampling {result.sampling_id} of run {result.run_id} is not in store {result.store}")
    return stored


def _without_seed(identity: dict) -> dict:
    sampling = {k: v for k, v in identity.get("sampling", {}).items() if k != "seed"}
    return {**identity, "sampling": sampling}


def merge_results(a, b):
    """``a`` and ``b`` (ValuationResult) as one result (see the module docstring)."""
    first, second = _identity(a), _identity(b)
    if first == second:
        raise ConfigError(f"runs {a.run_id} and {b.run_id} share their sampling (the same seed draws the same "
                          "samples): merging would count them twice; extend one run with a larger samples instead")
    if _without_seed(first) != _without_seed(second):
        differ = sorted(k for k in set(first) | set(second) if k != "sampling" and first.get(k) != second.get(k))
        differ += sorted(f"sampling.{k}" for k in set(first.get("sampling", {})) | set(second.get("sampling", {}))
                         if k != "seed" and first["sampling"].get(k) != second["sampling"].get(k))
        hint = ("; without --valid the seed also draws the validation split, so the utility differs: give both "
                "runs the same --valid file") if "dataset" in differ else ""
        raise ConfigError(f"runs {a.run_id} and {b.run_id} estimate different values ({', '.join(differ)} "
                          f"differ); only runs that differ in their seed alone merge{hint}")
    left, right = a.values.sort("row"), b.values.sort("row")
    if left["row"].to_list() != right["row"].to_list() or left["label"].to_list() != right["label"].to_list():
        raise ConfigError(f"runs {a.run_id} and {b.run_id} do not value the same rows")
    n1, n2 = (t["samples"].fill_null(0).to_numpy().astype(np.float64) for t in (left, right))
    total = n1 + n2
    w1 = np.divide(n1, total, out=np.full(total.shape, 0.5), where=total > 0)

    def mixed(column: str, weight: np.ndarray) -> np.ndarray:
        x1, x2 = (t[column].cast(pl.Float64).fill_null(0.0).to_numpy() for t in (left, right))
        return weight * x1 + (1 - weight) * x2

    se1, se2 = (t["stderr"].cast(pl.Float64).fill_null(0.0).to_numpy() for t in (left, right))
    stderr = np.divide(np.sqrt((n1 * se1) ** 2 + (n2 * se2) ** 2), total, out=np.zeros(total.shape), where=total > 0)
    sampled = total > 0
    table = left.with_columns(
        pl.Series("value", mixed("value", w1)),
        pl.Series("stderr", stderr),
        pl.Series("samples", total.astype(np.int64)),
        pl.Series("network_value", mixed("network_value", np.full(total.shape, 0.5))),
        pl.Series("monte_carlo_value", np.where(sampled, mixed("monte_carlo_value", w1), np.nan)).fill_nan(None),
        pl.Series("sampled", sampled),
    ).with_columns(pl.when(pl.col("sampled")).then(pl.col("stderr")).otherwise(None).alias("stderr"))
    parts = (a.merged or (a,)) + (b.merged or (b,))
    return replace(a, run_id="+".join(r.run_id for r in parts), model_version=None, mlflow_run_id=None,
                   metrics={}, stop_reason=None, merged=parts, table=table)
