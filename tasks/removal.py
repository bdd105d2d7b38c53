"""Point removal and curation gain, measured with real refits of the utility's learner.

The downstream test of a valuation (Ghorbani & Zou 2019, Covert et al. 2024): drop the
lowest-valued points and retrain; a good valuation gains (or loses least) accuracy,
while dropping the highest-valued points should hurt most. Accuracy here is
``models.utility``'s v(S), degenerate-subset policy included, so the curves are on the
same scale as the values.

**The score must come from data the values never saw.** ``Utility`` scores on the
problem's *validation* arrays, which the valuation itself optimized against; pass a
``Problem`` whose ``x_valid``/``y_valid`` are a held-out test set, e.g.
``dataclasses.replace(problem, x_valid=x_test, y_valid=y_test)``.

The refits are independent: ``workers`` threads evaluate them (one thread per fit, as in
the sampling; the utility is shared, as a process's batches share it). On a million rows
a run's 25 XGBoost refits of up to a million rows each were three minutes on one thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from amortval.data.problem import Problem
from amortval.models.utility import Utility, make_utility


def evaluate(utility: Utility, masks: np.ndarray, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``utility.evaluate(masks)`` with the masks split over ``workers`` threads; the same
    values and statuses in the same order."""
    chunks = np.array_split(np.arange(len(masks)), max(1, min(int(workers), len(masks))))
    if len(chunks) <= 1:
        return utility.evaluate(masks)
    with ThreadPoolExecutor(len(chunks), thread_name_prefix="amortval-refit") as pool:
        parts = list(pool.map(lambda rows: utility.evaluate(masks[rows]), chunks))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def removal_counts(fractions: np.ndarray, n: int) -> np.ndarray:
    """Points removed for each fraction: floor(f * n), with a 1e-9 tolerance so float
    error in f * n (0.29 * 100 = 28.999...) does not drop a point."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size == 0:
        raise ValueError(f"fractions must be a non-empty 1-D sequence, got shape {fractions.shape}")
    if not np.all((fractions >= 0) & (fractions <= 1)):
        raise ValueError(f"fractions must lie in [0, 1], got {fractions.tolist()}")
    return np.floor(fractions * n + 1e-9).astype(np.int64)


def removal_masks(values: np.ndarray, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training masks (F, n) after removing the lowest / the highest ``floor(f n)`` values.

    Ties are broken by index in both directions: among equal values the point with the
    smaller index is removed first, so masks are a pure function of the values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("values must be a 1-D array of finite numbers (one per training point)")
    n = values.size
    counts = removal_counts(fractions, n)
    index = np.arange(n)
    lowest_first = np.lexsort((index, values))  # last key is the primary one
    highest_first = np.lexsort((index, -values))
    drop_rank = np.arange(n)[None, :] < counts[:, None]  # (F, n): True for the first k ranks
    low, high = np.ones((counts.size, n), dtype=bool), np.ones((counts.size, n), dtype=bool)
    low[:, lowest_first] = ~drop_rank
    high[:, highest_first] = ~drop_rank
    return low, high


def removal_curves(problem: Problem, learner: str, values: np.ndarray, fractions: np.ndarray,
                   *, seed: int, knn_k: int = 5, workers: int = 1) -> dict:
    """Test accuracy after removing the lowest- and the highest-valued fractions.

    ``problem.x_valid``/``y_valid`` must be the held-out test set (module docstring);
    ``seed`` and ``knn_k`` define the utility as in a run.
    Every retraining is one batch of masks through the utility, so the batched learners
    fit all of them together. Returns ``fractions``, ``removed`` (counts),
    ``low_removed`` and ``high_removed`` (accuracies, float64 arrays) and ``full``
    (accuracy with every point; equals both curves at fraction 0).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (problem.n,):
        raise ValueError(f"values has shape {values.shape}, the problem has {problem.n} training points")
    fractions = np.asarray(fractions, dtype=np.float64)
    low, high = removal_masks(values, fractions)
    full = np.ones((1, problem.n), dtype=bool)
    utility = make_utility(learner, problem, seed, knn_k=knn_k)
    accuracy, _ = evaluate(utility, np.concatenate([full, low, high]), workers)
    k = fractions.size
    return {
        "fractions": fractions,
        "removed": removal_counts(fractions, problem.n),
        "low_removed": accuracy[1 : 1 + k],
        "high_removed": accuracy[1 + k :],
        "full": float(accuracy[0]),
    }


def curation_gain(problem: Problem, learner: str, keep: np.ndarray, *, seed: int, knn_k: int = 5,
                  workers: int = 1, full: float | None = None) -> dict:
    """Test accuracy of the learner trained on every point vs on the ``keep`` mask.

    Returns ``all``, ``kept`` (accuracies), ``gain`` (kept - all: positive when the
    curation helped) and ``n_kept``. Score on a held-out test set (module docstring).
    """
    keep = np.asarray(keep)
    if keep.shape != (problem.n,) or keep.dtype != bool:
        raise ValueError(f"keep must be a boolean mask of shape ({problem.n},), got {keep.dtype} {keep.shape}")
    utility = make_utility(learner, problem, seed, knn_k=knn_k)
    if full is None:  # ``full``: the every-point accuracy a removal curve already refitted
        accuracy, _ = evaluate(utility, np.stack([np.ones(problem.n, dtype=bool), keep]), workers)
    else:
        accuracy = np.array([full, utility.evaluate(keep[None])[0][0]])
    return {"all": float(accuracy[0]), "kept": float(accuracy[1]),
            "gain": float(accuracy[1] - accuracy[0]), "n_kept": int(keep.sum())}
