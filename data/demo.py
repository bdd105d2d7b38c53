"""Built-in demo: a synthetic loan-approval table with a known share of flipped labels.

Generated in code from a seed (no files shipped) so ``amortval value`` runs with no
flags and the mislabeled-point detection metrics have ground truth. The clean label is
a noisy logistic function of the applicant's features, learnable to roughly 85-90%
accuracy by a logistic regression; then exactly ``round(flip_fraction * n)`` labels
in the train and new parts are flipped (column ``flipped``), while validation stays
clean because the utility is measured on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

DEMO_TARGET = "label"
DEMO_FLIP_COLUMN = "flipped"
LABELS = ("approved", "denied")
REGIONS = ("north", "south", "west")
_REGION_P = (0.4, 0.35, 0.25)
_REGION_EFFECT = {"north": 0.4, "south": -0.5, "west": 0.0}
# Sharpness of the clean rule: larger -> less label noise before flipping. Chosen so
# a logistic regression on the clean labels reaches ~85-90% validation accuracy.
_SCALE = 2.0


@dataclass(frozen=True)
class DemoData:
    """Train / validation / new rows; ``clean_*`` keep the labels before flipping."""

    train: pl.DataFrame
    valid: pl.DataFrame
    new: pl.DataFrame
    clean_train: np.ndarray
    clean_new: np.ndarray


def _applicants(rng: np.random.Generator, n: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Features and the clean label (str array) of n applicants."""
    age = rng.integers(21, 76, size=n)
    income = np.round(np.exp(rng.normal(10.9, 0.45, size=n)), -2)
    debt_ratio = np.round(rng.beta(2.0, 5.0, size=n), 4)
    credit_years = np.round(rng.uniform(0.0, 1.0, size=n) * (age - 18), 1)
    late_payments = rng.poisson(0.8, size=n)
    loan_amount = np.round(np.exp(rng.normal(9.6, 0.6, size=n)), -2)
    region = rng.choice(np.array(REGIONS), size=n, p=_REGION_P)

    # Fixed centers/scales (not sample statistics) so every part follows the same rule.
    score = (
        1.2 * (np.log(income) - 10.9) / 0.45
        - 1.4 * (debt_ratio - 0.286) / 0.16
        + 0.3 * (age - 48.0) / 16.0
        + 0.7 * (credit_years - 15.0) / 10.0
        - 0.9 * (late_payments - 0.8) / 0.9
        - 0.8 * (np.log(loan_amount) - 9.6) / 0.6
        + np.vectorize(_REGION_EFFECT.get)(region)
    )
    noise = rng.logistic(size=n)
    approved = _SCALE * score + noise > 0.0
    frame = pl.DataFrame({
        "income": income,
        "debt_ratio": debt_ratio,
        "age": age.astype(np.int64),
        "credit_years": credit_years,
        "late_payments": late_payments.astype(np.int64),
        "loan_amount": loan_amount,
        "region": region.astype(str),
    })
    return frame, np.where(approved, LABELS[0], LABELS[1])


def _part(seed_seq: np.random.SeedSequence, n: int, flip_fraction: float) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed_seq)
    frame, clean = _applicants(rng, n)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=round(flip_fraction * n), replace=False)] = True
    label = np.where(flipped, np.where(clean == LABELS[0], LABELS[1], LABELS[0]), clean)
    frame = frame.with_columns(
        pl.Series(DEMO_TARGET, label.astype(str), dtype=pl.String),
        pl.Series(DEMO_FLIP_COLUMN, flipped, dtype=pl.Boolean),
    )
    return frame, clean.astype(str)


def make_demo(
    seed: int = 0,
    n_train: int = 500,
    n_valid: int = 100,
    n_new: int = 300,
    flip_fraction: float = 0.2,
) -> DemoData:
    """Deterministic in ``seed``; each part has its own child seed, so sizes are independent."""
    if not 0.0 <= flip_fraction <= 1.0:
        raise ValueError(f"flip_fraction must be in [0, 1], got {flip_fraction}")
    train_ss, valid_ss, new_ss = np.random.SeedSequence(seed).spawn(3)
    train, clean_train = _part(train_ss, n_train, flip_fraction)
    valid, _ = _part(valid_ss, n_valid, 0.0)
    new, clean_new = _part(new_ss, n_new, flip_fraction)
    return DemoData(train=train, valid=valid, new=new, clean_train=clean_train, clean_new=clean_new)


def write_demo(directory: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write train/valid/new Parquet files atomically (tmp file, then rename); return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    demo = make_demo(seed)
    paths = {}
    for part, frame in (("train", demo.train), ("valid", demo.valid), ("new", demo.new)):
        path = directory / f"{part}.parquet"
        tmp = directory / f".{part}.parquet.{os.getpid()}.tmp"
        frame.write_parquet(tmp)
        tmp.replace(path)
        paths[part] = path
    return paths
