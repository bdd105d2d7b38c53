"""Quality figures that need no extra dependency: ranking and agreement metrics."""

from __future__ import annotations

import numpy as np
from scipy import stats


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` ranking ``positives`` first (ties averaged).

    Computed as the Mann-Whitney U statistic; NaN when one class is absent.
    """
    positives = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mislabeled_auroc(values: np.ndarray, mislabeled: np.ndarray) -> float:
    """How well "low value" finds the known label errors (1.0 = all of them ranked lowest)."""
    return auroc(-np.asarray(values, dtype=np.float64), mislabeled)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than two points or a constant series."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
