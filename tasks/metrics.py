"""Quality figures that need no extra dependency: ranking, agreement and error metrics.

Two families. Against a ground truth (``truth_metrics``): MSE, normalized MSE (1 - NMSE
is the explained variance the paper reports), Pearson, Spearman and sign agreement.
Downstream, how well low values find known label errors: AUROC and AUPRC.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _pair(est: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est, truth = np.asarray(est, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if est.shape != truth.shape:
        raise ValueError(f"estimate has shape {est.shape}, truth has shape {truth.shape}")
    return est, truth


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


def auprc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision of ``scores`` ranking ``positives`` first; NaN without a positive.

    AP = sum over thresholds t (distinct scores, highest first) of
    (recall_t - recall_{t-1}) * precision_t, where a threshold flags every point scoring
    >= t. Tied scores are therefore one threshold: a tied group is flagged together, so
    the result does not depend on input order (ties are neither broken optimistically
    nor by index). This is scikit-learn's ``average_precision_score``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape:
        raise ValueError(f"scores has shape {scores.shape}, positives has shape {positives.shape}")
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], positives[order]
    # Last index of each run of equal scores: where the threshold t = that score stops.
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    true_pos = np.cumsum(hit)[ends]
    precision = true_pos / (ends + 1)
    recall_gain = np.diff(true_pos, prepend=0) / n_pos
    return float(np.sum(recall_gain * precision))


def mislabeled_auroc(values: np.ndarray, mislabeled: np.ndarray) -> float:
    """How well "low value" finds the known label errors (1.0 = all of them ranked lowest)."""
    return auroc(-np.asarray(values, dtype=np.float64), mislabeled)


def mislabeled_auprc(values: np.ndarray, mislabeled: np.ndarray) -> float:
    """Average precision of "low value" at finding the known label errors (1.0 = perfect;
    a random ranking scores about the share of errors)."""
    return auprc(-np.asarray(values, dtype=np.float64), mislabeled)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than two points or a constant series."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN like ``pearson``."""
    a, b = _pair(a, b)
    if a.size < 2:
        return float("nan")
    return pearson(stats.rankdata(a), stats.rankdata(b))


def mse(est: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error, in value units squared."""
    est, truth = _pair(est, truth)
    if est.size == 0:
        return float("nan")
    return float(np.mean((est - truth) ** 2))


def nmse(est: np.ndarray, truth: np.ndarray) -> float:
    """MSE divided by the population variance of ``truth`` (NaN when that is 0).

    0 is perfect; 1 is what predicting the truth's mean for every point scores, so
    ``1 - nmse`` is the explained variance.
    """
    est, truth = _pair(est, truth)
    if est.size == 0 or truth.var() == 0:
        return float("nan")
    return mse(est, truth) / float(truth.var())


def sign_agreement(est: np.ndarray, truth: np.ndarray) -> float:
    """Share of points whose estimate has the truth's sign (helps vs hurts).

    Zero is its own sign: an estimate of exactly 0 agrees only with a truth of exactly
    0, and a truth of 0 only with an estimate of 0 (``numpy.sign`` equality).
    """
    est, truth = _pair(est, truth)
    if est.size == 0:
        return float("nan")
    return float(np.mean(np.sign(est) == np.sign(truth)))


def truth_metrics(est: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every accuracy figure of an estimate against a ground truth, by name."""
    est, truth = _pair(est, truth)
    return {
        "mse": mse(est, truth),
        "nmse": nmse(est, truth),
        "pearson": pearson(est, truth),
        "spearman": spearman(est, truth),
        "sign_agreement": sign_agreement(est, truth),
    }
