"""One coalition per draw, shared by every sampled point: P + 1 fits for P samples.

For any semivalue with size distribution p(k) (k = 0..n-1 others), unit j draws a size K
from q over 0..n (p with its support extended one size up, below) and a uniform
K-subset S of all n points, and evaluates v(S) once. Each sampled point i then gets one
sample from one more fit:

- i not in S: S is a uniform K-subset of D \\ {i} (given i not in S), and the sample is
  v(S + i) - v(S) at size K;
- i in S: S - i is a uniform (K-1)-subset of D \\ {i}, and the sample is
  v(S) - v(S - i) at size K - 1.

So i sees size k with probability r(k) = q(k) (1 - k/n) + q(k + 1) (k + 1) / n, a
uniform coalition of that size, and ``weight`` p(k) / r(k) makes ``weight * delta``
unbiased for phi_i. For Shapley (p uniform on 0..n-1), q uniform on 0..n gives r = p
exactly: every weight is 1. For a size range lo..hi below n - 1 (distributional), q is
uniform on lo..hi+1; draws of |S| = hi + 1 without the point, and of |S| = lo holding it,
fall outside the range and get weight 0, and the rest share one weight near 1 (1 + 1/L
for a range from 0 of L sizes).

The independent sampler pays two fits per sample; a permutation chain pays n + 1 fits
however few points are sampled. This one pays (P + 1) / P: the cheapest route to many
samples of a few points (a ground truth's probes, ``--points`` on a large table). Unit =
draw, as for MSR: unit j is every sampled point's j-th sample, so the units of a budget
of m samples are the first m. Different points' samples of one draw share v(S), so they
are correlated across points, never within a point.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import MASK_BUDGET, Utility
from amortval.tasks.samplers.base import SampleBatch, sample_status, unit_rng


def drawn_size_pmf(size_pmf: np.ndarray) -> np.ndarray:
    """q over 0..n for p over 0..n-1: q(k) proportional to max(p(k), p(k - 1))."""
    p = np.append(np.asarray(size_pmf, dtype=np.float64), 0.0)
    q = np.maximum(p, np.concatenate([[0.0], p[:-1]]))
    return q / q.sum()


def seen_size_pmf(drawn: np.ndarray) -> np.ndarray:
    """r(k), k = 0..n-1: the size a given point's sample has when |S| ~ ``drawn`` (0..n)."""
    n = len(drawn) - 1
    k = np.arange(n)
    return drawn[:-1] * (1 - k / n) + drawn[1:] * (k + 1) / n


class SharedSampler:
    def __init__(self, n: int, size_pmf: np.ndarray, points: np.ndarray | None = None):
        if len(size_pmf) != n:
            raise ValueError(f"size distribution over {len(size_pmf)} sizes for {n} points (want 0..n-1)")
        self.n = n
        self.points = np.arange(n) if points is None else np.asarray(points, dtype=np.int64)
        self.drawn = drawn_size_pmf(size_pmf)
        seen = seen_size_pmf(self.drawn)
        self.weights = np.divide(size_pmf, seen, out=np.zeros(n), where=seen > 0)
        self.fits_per_unit = len(self.points) + 1.0

    def n_units(self, samples: int) -> int:
        return samples

    def coalitions(self, units: range, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Each unit's shared coalition S (bool, units x n) and its size K."""
        n = self.n
        masks = np.zeros((len(units), n), dtype=bool)
        sizes = np.empty(len(units), dtype=np.int64)
        for row, u in enumerate(units):
            rng = unit_rng(seed, int(u))
            k = sizes[row] = rng.choice(n + 1, p=self.drawn)
            keys = rng.random(n)  # k smallest random keys = a uniform k-subset
            if k == n:
                masks[row] = True
            elif k:
                masks[row, np.argpartition(keys, k)[:k]] = True
        return masks, sizes

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        points, n_points = self.points, len(self.points)
        draws = np.arange(units.start, units.stop)
        shared, sizes = self.coalitions(units, seed)
        v_shared, s_shared = utility.evaluate(shared)
        # every (draw, point) pair: S with that point toggled, in chunks of MASK_BUDGET booleans
        pairs = len(draws) * n_points
        v_toggled, s_toggled = np.empty(pairs), np.empty(pairs, dtype=np.int8)
        step = max(1, MASK_BUDGET // max(self.n, 1))
        for start in range(0, pairs, step):
            index = np.arange(start, min(pairs, start + step))
            masks = shared[index // n_points]
            masks[np.arange(len(index)), points[index % n_points]] ^= True
            v_toggled[index], s_toggled[index] = utility.evaluate(masks)
        inside = shared[:, points].ravel()
        row = np.repeat(np.arange(len(draws)), n_points)
        v_s, s_s = v_shared[row], s_shared[row]
        cardinality = sizes[row] - inside
        return SampleBatch(
            point=np.tile(points, len(draws)).astype(np.int32),
            draw=draws[row].astype(np.int32),
            cardinality=cardinality.astype(np.int32),
            delta=np.where(inside, v_s - v_toggled, v_toggled - v_s),
            weight=self.weights[cardinality],
            status=sample_status(np.where(inside, s_toggled, s_s), np.where(inside, s_s, s_toggled)),
            n_fits=len(draws) + pairs,
            n_fallbacks=int(np.count_nonzero(s_shared)) + int(np.count_nonzero(s_toggled)),
        )
