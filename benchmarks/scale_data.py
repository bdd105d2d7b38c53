"""Tables of the scale benchmark, written once to a cache folder (never committed).

Every table is split the same way before amortval sees it: a seeded random 20% of the
rows (at most ``VALID_CAP``) is held out, clean, as the ``--valid`` file; the rest is
the ``--data`` file, with ``FLIP`` of its labels flipped (seeded) and a boolean
``flipped`` column recording which (``--mislabeled-column``). The split is the
benchmark's own because the flow's split of ``--data`` is stratified on the labels it
reads: flipping first would send flipped labels into the validation set, and the
utility would reward them. The cap keeps one fit's cost (predicting the validation
rows) the same from 45K to 1M rows, so the growth curve measures the pipeline, not a
growing validation set.

- ``electricity``: ../shared/datasets/electricity/elec.csv, all 45,312 rows, label ``class``;
- ``adult``: every complete row (no ``?``) of adult.data and adult.test (test labels'
  trailing dot removed), label ``income`` (``benchmarks/adult.py`` reads them);
- ``synthetic-N``: N rows, 20 standard-normal features, a noisy linear label
  (logistic noise on x.w), written in chunks so 1M rows never sit in memory twice.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult import ADULT, ADULT_TEST, DATASETS, read_adult  # noqa: E402

ELECTRICITY = DATASETS / "electricity" / "elec.csv"
VALID_SHARE, VALID_CAP = 0.2, 10_000
FLIP = 0.1
MISLABELED = "flipped"
FEATURES = 20
SEED = 0


@dataclass(frozen=True)
class Table:
    name: str
    data: Path  # training rows: FLIP of labels flipped, MISLABELED column
    valid: Path  # held-out rows, clean
    target: str
    rows: int  # all rows, training and validation
    train_rows: int


def split_and_flip(frame: pl.DataFrame, target: str, name: str, folder: Path, *, seed: int = SEED) -> Table:
    """Write ``frame`` as a (flipped) training file and a clean validation file."""
    rng = np.random.default_rng(seed)
    n = frame.height
    n_valid = min(round(VALID_SHARE * n), VALID_CAP)
    order = rng.permutation(n)
    valid, train = frame[np.sort(order[:n_valid])], frame[np.sort(order[n_valid:])]
    classes = train[target].unique().sort().to_list()
    if len(classes) != 2:
        raise ValueError(f"{name}: flipping needs a binary label, {target} has {len(classes)} classes")
    flipped = np.zeros(train.height, dtype=bool)
    flipped[rng.choice(train.height, round(FLIP * train.height), replace=False)] = True
    other = pl.Series(target, train[target]).replace_strict({classes[0]: classes[1], classes[1]: classes[0]})
    train = train.with_columns(pl.when(pl.Series(flipped)).then(other).otherwise(pl.col(target)).alias(target),
                               pl.Series(MISLABELED, flipped))
    folder.mkdir(parents=True, exist_ok=True)
    train.write_parquet(folder / "train.parquet")
    valid.write_parquet(folder / "valid.parquet")
    return Table(name, folder / "train.parquet", folder / "valid.parquet", target, n, train.height)


def cached(name: str, folder: Path, target: str) -> Table | None:
    """The table written by an earlier run, if complete."""
    data, valid = folder / "train.parquet", folder / "valid.parquet"
    if not (data.exists() and valid.exists()):
        return None
    n_train = pl.scan_parquet(data).select(pl.len()).collect().item()
    n_valid = pl.scan_parquet(valid).select(pl.len()).collect().item()
    return Table(name, data, valid, target, n_train + n_valid, n_train)


def electricity(cache: Path) -> Table:
    folder = cache / "electricity"
    return cached("electricity", folder, "class") or split_and_flip(pl.read_csv(ELECTRICITY), "class",
                                                                     "electricity", folder)


def adult(cache: Path) -> Table:
    folder = cache / "adult"
    if (table := cached("adult", folder, "income")) is not None:
        return table
    both = pl.concat([read_adult(ADULT), read_adult(ADULT_TEST)])
    complete = both.filter(~pl.any_horizontal(pl.col(pl.String) == "?"))
    return split_and_flip(complete, "income", "adult", folder)


def synthetic(rows: int, cache: Path, *, chunk: int = 250_000) -> Table:
    """20 standard-normal float32 features; label 1 where x.w + logistic noise > 0."""
    name = f"synthetic-{rows}"
    folder = cache / name
    if (table := cached(name, folder, "label")) is not None:
        return table
    rng = np.random.default_rng([SEED, rows])
    w = rng.standard_normal(FEATURES)
    parts = []
    for start in range(0, rows, chunk):
        x = rng.standard_normal((min(chunk, rows - start), FEATURES)).astype(np.float32)
        y = (x @ w + rng.logistic(size=len(x)) > 0).astype(np.int64)
        parts.append(pl.DataFrame({**{f"x{j}": x[:, j] for j in range(FEATURES)}, "label": y}))
    return split_and_flip(pl.concat(parts), "label", name, folder)


def available() -> str | None:
    """None when the shared datasets are there, else what is missing."""
    missing = [str(p) for p in (ELECTRICITY, ADULT, ADULT_TEST) if not p.exists()]
    return ", ".join(missing) or None
