"""The k-nearest-neighbour utility of Jia et al. (2019), exact and fast on any subset.

For a validation point (x, y) and a training subset S, let a_1, a_2, ... be the points of
S ordered by Euclidean distance to x (encoded features; ties broken by row index, lowest
first). The utility is

    v(S) = mean over validation points of  (1/k) * #{ j <= min(k, |S|) : y_{a_j} = y }

so v(S) is defined on *every* subset: the empty set scores 0 and a one-class subset is
scored by its neighbours like any other. That is the definition Jia et al.'s closed-form
Shapley values (``tasks/knn_shapley.py``) are exact for, so this learner needs no
degenerate-subset fallback (``defined_on_every_subset``); the utility still records each
subset's status (empty, one_class, ...) so runs count them like every other learner.

No model is fitted: each validation point's training order is computed once, and a
subset's score is read off that order. Two entry points:

- ``fit_score(masks)`` scans each validation point's order in growing blocks until
  every subset has found its k neighbours (a random half of the data needs ~2k ranks);
- ``prefix_scores(perm)`` walks a permutation chain and keeps, per validation point,
  the ranks of the k nearest points seen so far: the n+1 prefix values of a chain cost
  O(n * k) per validation point instead of n scans.
"""

from __future__ import annotations

import numpy as np

from amortval.data.problem import Problem

DEFAULT_K = 5
_FIRST_BLOCK = 32
_BLOCK_ELEMENTS = 1 << 22  # masks x validation x block booleans gathered at once (~4 MB)


def neighbour_order(x_train: np.ndarray, x_valid: np.ndarray) -> np.ndarray:
    """(V, n) training indices of each validation point, nearest first, ties by index.

    Distances are summed per element in float64 (no ||a||^2 - 2ab + ||b||^2 shortcut), so
    duplicate training rows get bit-equal distances and the tie rule decides their order.
    """
    xt = np.asarray(x_train, dtype=np.float64)
    order = np.empty((len(x_valid), len(xt)), dtype=np.int64)
    for v, point in enumerate(np.asarray(x_valid, dtype=np.float64)):
        dist = np.square(xt - point).sum(axis=1)
        order[v] = np.argsort(dist, kind="stable")
    return order


class KNNLearner:
    """Jia et al.'s KNN utility on ``problem``'s validation set (see the module docs)."""

    defined_on_every_subset = True

    def __init__(self, problem: Problem, k: int = DEFAULT_K):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.n = problem.n
        self.order = neighbour_order(problem.x_train, problem.x_valid)  # (V, n)
        n_valid = self.order.shape[0]
        # rank[v, i]: position of training point i in validation point v's order.
        self.rank = np.empty_like(self.order)
        np.put_along_axis(self.rank, self.order, np.arange(self.n)[None, :], axis=1)
        y_train = np.asarray(problem.y_train, dtype=np.int64)
        y_valid = np.asarray(problem.y_valid, dtype=np.int64)
        # match[v, r]: the r-th nearest training point of v has v's label.
        self.match = y_train[self.order] == y_valid[:, None]
        self._scale = 1.0 / (self.k * n_valid)

    def fit_score(self, masks: np.ndarray) -> np.ndarray:
        """masks bool (B, n) -> v(S) float64 (B,) for any subsets, the empty one included."""
        masks = np.asarray(masks, dtype=bool)
        n_masks, n_valid = masks.shape[0], self.order.shape[0]
        found = np.zeros((n_masks, n_valid), dtype=np.int64)  # neighbours found so far
        hits = np.zeros((n_masks, n_valid), dtype=np.int64)  # ... that match the label
        need = np.minimum(self.k, masks.sum(axis=1))[:, None]  # neighbours each subset can give
        active = np.arange(n_masks)
        start, width = 0, _FIRST_BLOCK
        while active.size and start < self.n:
            stop = min(self.n, start + width)
            rows = max(1, _BLOCK_ELEMENTS // (n_valid * (stop - start)))
            for lo in range(0, active.size, rows):
                idx = active[lo:lo + rows]
                member = masks[idx][:, self.order[:, start:stop]]  # (b, V, block)
                rank_in_s = found[idx][:, :, None] + np.cumsum(member, axis=2)
                counted = member & (rank_in_s <= self.k)
                found[idx] += counted.sum(axis=2)
                hits[idx] += (counted & self.match[None, :, start:stop]).sum(axis=2)
            # Still searching: fewer than min(k, |S|) neighbours found for some validation point.
            active = active[(found[active] < need[active]).any(axis=1)]
            start, width = stop, 2 * width
        return hits.sum(axis=1) * self._scale

    def prefix_scores(self, perm: np.ndarray) -> np.ndarray:
        """v of the n+1 prefixes of ``perm`` (float64), from empty to the full set."""
        k, n_valid = self.k, self.order.shape[0]
        best = np.full((n_valid, k), self.n, dtype=np.int64)  # ranks of the k nearest so far
        # match padded with a False column: the sentinel rank n never counts as a hit.
        match = np.concatenate([self.match, np.zeros((n_valid, 1), dtype=bool)], axis=1)
        # (n, V), row t: each validation point's rank of the t-th arriving point.
        ranks = np.ascontiguousarray(self.rank[:, np.asarray(perm)].T)
        out = np.empty(len(perm) + 1, dtype=np.float64)
        out[0] = 0.0
        total = 0
        for t in range(len(perm)):
            r = ranks[t]
            closer = r < best[:, -1]
            if closer.any():
                v = np.flatnonzero(closer)
                total -= int(match[v, best[v, -1]].sum())
                total += int(match[v, r[v]].sum())
                best[v, -1] = r[v]
                best[v] = np.sort(best[v], axis=1)
            out[t + 1] = total
        return out * self._scale
