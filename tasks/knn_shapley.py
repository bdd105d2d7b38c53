"""Exact KNN-Shapley in closed form (Jia et al. 2019, Theorem 1): a ground truth at any n.

For one validation point with label y, order the training points nearest first
(a_1 .. a_N, ties by row index, exactly as ``models.knn_learner`` does) and write
m_i = 1[y_{a_i} = y]. The Shapley values of the KNN utility (``KNNLearner``) are

    s_{a_N} = m_N / N * min(k, N) / k         (the farthest point counts iff |S| < k)
    s_{a_i} = s_{a_{i+1}} + (m_i - m_{i+1}) / k * min(k, i) / i        (i = N-1 .. 1)

and, the utility being a mean over validation points, the values are the mean of the
per-point ones. O(V * N log N) for the sorts: n = 10,000 takes well under a second.
"""

from __future__ import annotations

import numpy as np

from amortval.data.problem import Problem
from amortval.models.knn_learner import DEFAULT_K, neighbour_order


def knn_shapley(problem: Problem, k: int = DEFAULT_K) -> np.ndarray:
    """Exact Data Shapley values (float64, (n,)) of every training point."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = problem.n
    order = neighbour_order(problem.x_train, problem.x_valid)
    y_train = np.asarray(problem.y_train, dtype=np.int64)
    y_valid = np.asarray(problem.y_valid, dtype=np.int64)
    match = (y_train[order] == y_valid[:, None]).astype(np.float64)  # (V, N), nearest first
    i = np.arange(1, n)  # 1-based positions 1..N-1
    step = (match[:, :-1] - match[:, 1:]) / k * np.minimum(k, i) / i  # s_i - s_{i+1}
    s = np.empty_like(match)
    s[:, -1] = match[:, -1] * min(k, n) / (k * n)
    # s_i = s_N + sum_{j >= i} step_j: a reversed cumulative sum.
    s[:, :-1] = s[:, -1:] + np.cumsum(step[:, ::-1], axis=1)[:, ::-1]
    phi = np.zeros(n)
    np.add.at(phi, order.ravel(), s.ravel())
    return phi / order.shape[0]
