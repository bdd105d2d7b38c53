"""Slow: the whole pipeline on real tabular data from ../shared/datasets (skipped if absent).

Adult is read the way a user would hand it over (a CSV with a header, string
categoricals), with 20% of training labels flipped as in Covert et al. 2024, so the
detection AUROC of known label errors checks that the values mean something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from amortval.flows.curation import curate_dataset
from valuing import value as run_flow

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real dataset not present: {path} (see ../shared/datasets/README.md)")
    return path


def flip(frame: pl.DataFrame, target: str, fraction: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    flags = np.zeros(frame.height, dtype=bool)
    flags[rng.choice(frame.height, int(fraction * frame.height), replace=False)] = True
    classes = sorted(frame[target].unique().to_list())
    other = {classes[0]: classes[1], classes[1]: classes[0]}
    labels = [other[v] if f else v for v, f in zip(frame[target].to_list(), flags)]
    return frame.with_columns(pl.Series(target, labels), pl.Series("flipped", flags))


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    raw = pl.read_csv(need(DATASETS / "adult" / "adult.data"), has_header=False, new_columns=ADULT_COLUMNS)
    numeric = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
    raw = raw.with_columns(pl.col(pl.String).str.strip_chars()).with_columns(pl.col(numeric).cast(pl.Int64))
    sample = raw.sample(1100, seed=0, shuffle=True)
    root = tmp_path_factory.mktemp("adult")
    flip(sample.head(1000), "income", 0.2, seed=0).write_csv(root / "train.csv")
    sample.tail(100).write_parquet(root / "valid.parquet")
    flip(raw.sample(500, seed=1), "income", 0.2, seed=1).write_parquet(root / "new.parquet")
    return root


def test_adult_logreg_shapley_values_find_flipped_labels(adult, tmp_path):
    result = run_flow(data=str(adult / "train.csv"), target="income", valid=str(adult / "valid.parquet"),
                           samples=10, seed=0, store=str(tmp_path), mislabeled_column="flipped")
    assert result["samples_stored"] == 1000 * 10
    assert result["gate_passed"] == 1.0
    assert result["mislabeled_auroc_network"] > 0.75, result
    assert result["mislabeled_auroc_network"] > result["mislabeled_auroc_monte_carlo"]
    curated = curate_dataset(data=str(adult / "new.parquet"), store=str(tmp_path), drop_fraction=0.2,
                             mislabeled_column="flipped")
    assert curated["mislabeled_auroc"] > 0.7, curated
    assert curated["dropped_mislabeled_precision"] > 0.4  # 2x the 20% base rate


@pytest.mark.parametrize("learner,method", [("xgboost", "banzhaf"), ("mlp", "beta")])
def test_electricity_other_learners_and_semivalues(learner, method, tmp_path):
    raw = pl.read_csv(need(DATASETS / "electricity" / "elec.csv"))
    sample = raw.sample(400, seed=0, shuffle=True)
    flip(sample.head(300), "class", 0.2, seed=0).write_parquet(tmp_path / "train.parquet")
    sample.tail(100).write_parquet(tmp_path / "valid.parquet")
    samples = 200 if method == "banzhaf" else 8  # MSR: one fit gives every point a sample
    result = run_flow(data=str(tmp_path / "train.parquet"), target="class", valid=str(tmp_path / "valid.parquet"),
                           learner=learner, method=method, samples=samples, seed=0, store=str(tmp_path / "store"),
                           mislabeled_column="flipped")
    assert result["samples_stored"] == 300 * samples
    assert result["mislabeled_auroc_network"] > 0.6, result
