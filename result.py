"""What ``amortval.value`` returns: the values of one run, with its metadata and files.

``ValuationResult.values`` has one row per input row (polars): ``row``, ``split``,
``label``, ``value`` (the reported value: network and Monte Carlo combined), ``stderr``
and ``samples`` (of the Monte Carlo mean), ``network_value``, ``monte_carlo_value`` and
``sampled`` (whether the row has Monte Carlo samples of its own; validation rows split off
the input are scored by the network only).

Results merge (``a.merge(b)`` or ``a + b``) when they estimate the same values of the same
rows: the same sampling identity but for the seed, whose draws are then independent, so
per row the sample counts add and the Monte Carlo means, network values and reported
values are averaged weighted by those counts (the networks equally). Two runs of the same
seed share their draws: merging them would count the same samples twice, so it is
refused; extend the run with a larger ``samples`` instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

_RENAMES = {"mc_stderr": "stderr", "mc_count": "samples", "amortized_value": "network_value",
            "mc_value": "monte_carlo_value"}


@dataclass(frozen=True)
class ValuationResult:
    run_id: str
    sampling_id: str
    dataset_id: str
    store: str
    values_path: str
    mlflow_uri: str
    mlflow_run_id: str | None
    model_name: str | None
    model_version: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None  # why sampling stopped (the stopping rule that held)
    merged: tuple[ValuationResult, ...] = ()  # the results a merged one was made of
    table: pl.DataFrame | None = field(default=None, repr=False)  # a merged result's values

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> ValuationResult:
        names = set(cls.__dataclass_fields__) - {"metrics", "merged", "table"}
        metrics = {k: float(v) for k, v in summary.items()
                   if k not in names and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return cls(**{k: summary.get(k) for k in names}, metrics=metrics)

    @functools.cached_property
    def values(self) -> pl.DataFrame:
        if self.table is not None:
            return self.table
        table = pl.read_parquet(self.values_path).rename(_RENAMES, strict=False)
        table = table.with_columns((pl.col("samples").fill_null(0) > 0).alias("sampled"))
        first = ["row", "split", "label", "value", "stderr", "samples", "network_value", "monte_carlo_value", "sampled"]
        return table.select(first + [c for c in table.columns if c not in first])

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.model_name}/{self.model_version}" if self.model_version else None

    @property
    def gate_passed(self) -> bool:
        return bool(self.metrics.get("gate_passed"))

    def to_pandas(self):
        return self.values.to_pandas()

    def lowest(self, k: int = 10) -> pl.DataFrame:
        """The k rows valued lowest (most likely to hurt the model), lowest first."""
        return self.values.sort("value").head(k)

    def highest(self, k: int = 10) -> pl.DataFrame:
        return self.values.sort("value", descending=True).head(k)

    @property
    def rounds(self) -> pl.DataFrame:
        """The run's rounds: samples per point, fits, seconds and estimated error after each."""
        from amortval.data.store import ValuationStore

        with ValuationStore(Path(self.store) / "amortval.duckdb") as db:
            return db.rounds(self.run_id)

    def plot(self, test: Any = None, *, fractions: Any = None):
        """Value distribution per class (known label errors marked when the run had them);
        with ``test`` (a labelled path or frame with the training columns), also the
        point-removal curve: test accuracy of the utility's learner retrained without the
        lowest- or highest-valued training rows. Returns the matplotlib figure(s)."""
        from amortval.tasks.plots import value_distribution_figure

        table = self.values.filter(pl.col("split") == "train") if "split" in self.values.columns else self.values
        flags = table["mislabeled"].fill_null(False).to_numpy() if "mislabeled" in table.columns else None
        distribution = value_distribution_figure(table["value"].to_numpy(), table["label"].to_list(), flags)
        if test is None:
            return distribution
        from amortval.tasks.removal_plot import removal_figure

        return distribution, removal_figure(self, test, fractions)

    def merge(self, other: ValuationResult) -> ValuationResult:
        """The two results as one: counts add (see the module docstring)."""
        from amortval.tasks.merge import merge_results

        return merge_results(self, other)

    __add__ = merge

    def __repr__(self) -> str:
        gate = "passed" if self.gate_passed else "failed"
        if self.merged:
            return f"ValuationResult(merged {' + '.join(r.run_id for r in self.merged)}: {self.values.height:,} rows)"
        return (f"ValuationResult({self.run_id}: {self.values.height:,} rows, gate {gate}, "
                f"model {self.model_uri}, values {self.values_path})")


@dataclass(frozen=True)
class CurationResult:
    curation_id: str
    model_uri: str
    model_name: str
    model_version: str
    curated: str
    dropped: str
    rule: str
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> CurationResult:
        names = set(cls.__dataclass_fields__) - {"metrics"}
        metrics = {k: float(v) for k, v in summary.items() if k not in names and isinstance(v, (int, float))}
        return cls(**{k: summary[k] for k in names}, metrics=metrics)

    @property
    def kept(self) -> pl.DataFrame:
        return pl.read_parquet(self.curated)

    @property
    def dropped_rows(self) -> pl.DataFrame:
        return pl.read_parquet(self.dropped)
