"""The seeded stratified split that carves validation rows out of --data when no
--valid file is given, and the rule for what it must leave to train on.

A split must leave at least ``MIN_TRAIN_ROWS`` training rows and ``MIN_CLASS_TRAIN_ROWS``
per class. Below 10 rows there are too few distinct subsets for sampled marginal
contributions (or a network trained on them) to say anything a user could act on; a
class with a single training row has that row's value confounded with whether the
learner sees the class at all. A ``valid_fraction`` of 0.999 on 1,000 rows (2 left)
is therefore refused with the count, instead of running on nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from amortval.errors import ConfigError, DataValidationError
from amortval.tasks.streams import stream

MIN_TRAIN_ROWS = 10
MIN_CLASS_TRAIN_ROWS = 2


def stratified_split(labels: Sequence, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> (train_idx, valid_idx), both sorted int64.

    Each class with >= 2 rows sends ``round(valid_fraction * n_c)`` rows (clamped to
    1..n_c-1) to validation, so every such class appears in both parts; a class with
    a single row stays in training. The total can therefore differ slightly from
    ``valid_fraction * n``. Deterministic in ``seed``.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    rng = stream(seed, "split")
    classes = sorted(set(labels))
    index = {v: i for i, v in enumerate(classes)}
    codes = np.array([index[v] for v in labels], dtype=np.int64)
    valid_parts = []
    for code in range(len(classes)):
        members = np.flatnonzero(codes == code)
        if members.size < 2:
            continue
        take = min(max(round(valid_fraction * members.size), 1), members.size - 1)
        valid_parts.append(rng.permutation(members)[:take])
    valid_idx = np.sort(np.concatenate(valid_parts)) if valid_parts else np.empty(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(codes)), valid_idx)
    return train_idx.astype(np.int64), valid_idx.astype(np.int64)


def check_training_rows(train_labels: Sequence, n_valid: int, valid_fraction: float, *, n_classes: int,
                        name: str) -> None:
    """DataValidationError unless the split left validation rows and enough training rows.

    ``train_labels`` are the labels of the rows the split kept for training; the
    minimums are ``MIN_TRAIN_ROWS`` overall and ``MIN_CLASS_TRAIN_ROWS`` per class.
    """
    n_train = len(train_labels)
    if n_valid == 0 or len(set(train_labels)) < 2:
        raise DataValidationError(
            f"{name}: too few rows per class to split off a validation set "
            f"({n_train + n_valid} rows, {n_classes} classes); pass a validation file"
        )
    counts = Counter(train_labels)
    fewest, fewest_count = min(counts.items(), key=lambda item: item[1])
    if n_train < MIN_TRAIN_ROWS or fewest_count < MIN_CLASS_TRAIN_ROWS:
        raise DataValidationError(
            f"{name}: valid_fraction {valid_fraction:g} leaves {n_train} training rows (class {fewest!r}: "
            f"{fewest_count}); at least {MIN_TRAIN_ROWS} training rows and {MIN_CLASS_TRAIN_ROWS} per class "
            "are needed: lower --valid-fraction or pass a validation file (--valid)"
        )
