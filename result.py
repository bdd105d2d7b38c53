"""What ``amortval.value`` returns: the values of one run, with its metadata and files.

``ValuationResult.values`` has one row per input row (polars): ``row``, ``split``,
``label``, ``value`` (the reported value: network and Monte Carlo combined), ``stderr``
and ``samples`` (of the Monte Carlo mean), ``network_value``, ``monte_carlo_value`` and
``sampled`` (whether the row has Monte Carlo samples of its own; validation rows split off
the input are scored by the network only).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
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

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> ValuationResult:
        names = set(cls.__dataclass_fields__) - {"metrics"}
        metrics = {k: float(v) for k, v in summary.items()
                   if k not in names and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return cls(**{k: summary.get(k) for k in names}, metrics=metrics)

    @functools.cached_property
    def values(self) -> pl.DataFrame:
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

    def plot(self):
        """Value distribution per class (known label errors marked when the run had them)."""
        from amortval.tasks.plots import value_distribution_figure

        table = self.values
        flags = table["mislabeled"].fill_null(False).to_numpy() if "mislabeled" in table.columns else None
        return value_distribution_figure(table["value"].to_numpy(), table["label"].to_list(), flags)

    def __repr__(self) -> str:
        gate = "passed" if self.gate_passed else "failed"
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
