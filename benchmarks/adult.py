"""UCI adult as the paper uses it: one-hot categoricals, standardized numerics,
20% of training labels flipped, a 100-point validation set (Covert et al. 2024).

Read from ``../shared/datasets/adult`` beside the project (never committed, never
downloaded). ``adult_problem`` returns the training/validation Problem the utility
uses, a second Problem whose validation arrays are a clean held-out *test* set (for
point removal and curation gain), and the indices of the flipped training labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from amortval.data.encoding import TabularEncoder
from amortval.data.problem import Problem

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ADULT = DATASETS / "adult" / "adult.data"
ADULT_TEST = DATASETS / "adult" / "adult.test"  # first line a UCI comment, labels end in "."
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
           "native_country", "income"]
NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


@dataclass(frozen=True)
class AdultSplit:
    problem: Problem  # train (n, flipped labels) + 100-point validation set
    test: Problem  # same train, validation arrays = a clean test set
    flipped: np.ndarray  # bool (n,)


def read_adult(path: Path = ADULT) -> pl.DataFrame:
    """adult.data or adult.test as typed columns; ``?`` (missing) kept as a value."""
    if not path.exists():
        raise FileNotFoundError(f"UCI adult not found at {path} (see ../shared/datasets/README.md)")
    raw = pl.read_csv(path, has_header=False, new_columns=COLUMNS, comment_prefix="|",
                      infer_schema=False).drop_nulls("income")  # a blank last line
    return raw.with_columns(pl.col(pl.String).str.strip_chars()).with_columns(
        pl.col(NUMERIC).cast(pl.Int64), pl.col("income").str.strip_chars_end("."))


def adult_frames(n: int, *, seed: int = 0, n_valid: int = 100, n_test: int = 1000,
                 flip_fraction: float = 0.2) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Raw (unencoded) train with flipped labels, validation and test rows, and the flips:
    what a user would hand ``amortval value --data --valid`` (benchmarks/peers.py does)."""
    rng = np.random.default_rng(seed)
    raw = read_adult()
    rows = raw[rng.permutation(raw.height)[: n + n_valid + n_test].tolist()]
    train, valid, test = rows.head(n), rows.slice(n, n_valid), rows.tail(n_test)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, int(round(flip_fraction * n)), replace=False)] = True
    other = {"<=50K": ">50K", ">50K": "<=50K"}
    labels = [other[v] if f else v for v, f in zip(train["income"].to_list(), flipped)]
    return train.with_columns(pl.Series("income", labels)), valid, test, flipped


def adult_problem(n: int, *, seed: int = 0, n_valid: int = 100, n_test: int = 1000,
                  flip_fraction: float = 0.2) -> AdultSplit:
    train, valid, test, flipped = adult_frames(n, seed=seed, n_valid=n_valid, n_test=n_test,
                                               flip_fraction=flip_fraction)
    encoder = TabularEncoder.fit(train, "income")
    x, y = encoder.transform(train), encoder.labels(train)
    problem = Problem(x, y, encoder.transform(valid), encoder.labels(valid), encoder.n_classes)
    test_problem = Problem(x, y, encoder.transform(test), encoder.labels(test), encoder.n_classes)
    return AdultSplit(problem, test_problem, flipped)
