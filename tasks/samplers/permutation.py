"""Permutation chains: one fit per sample (Shapley), re-weighted for Beta Shapley.

A chain draws a permutation and evaluates v on its n+1 prefixes; point pi[j] gets the
sample v(pi[:j+1]) - v(pi[:j]) with coalition size j. Every point gets one sample per
chain for n+1 fits, versus 2 fits per sample with independent coalitions. Size j is
uniform on {0..n-1}, which is exactly Shapley; other semivalues re-weight by n p(j).
Unit = chain = draw: chain j is every point's j-th sample.

Sampled points (``--points``): the chain still orders all n rows (coalitions come from
the whole table), but only the prefixes around the sampled rows are evaluated, at most
two fits per sampled row instead of n + 1 per chain; each sampled row's sample is the
one the full chain would give it.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, evaluate_prefixes, sample_status, unit_rng
from amortval.tasks.semivalues import permutation_weights


class PermutationSampler:
    def __init__(self, n: int, size_pmf: np.ndarray, points: np.ndarray | None = None):
        self.n = n
        self.points = None if points is None else np.asarray(points, dtype=np.int64)
        # a sampled row needs the prefixes before and after it: 2P fits, fewer when adjacent
        self.fits_per_unit = float(n + 1 if points is None else min(n + 1, 2 * len(self.points)))
        self.weights = permutation_weights(size_pmf)

    def n_units(self, samples: int) -> int:
        return samples

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        n = self.n
        parts: list[SampleBatch] = []
        for chain in units:
            perm = unit_rng(seed, chain).permutation(n)
            if self.points is None:
                values, status = utility.evaluate_prefixes(perm)
                size = np.arange(n)
                parts.append(self._samples(chain, perm, size, values[:-1], values[1:], status[:-1], status[1:],
                                           fits=status))
                continue
            position = np.empty(n, dtype=np.int64)
            position[perm] = np.arange(n)
            size = np.sort(position[self.points])  # chain order: bit-identical rows to a full chain's
            lengths = np.union1d(size, size + 1)
            values, status = evaluate_prefixes(utility, [perm], [lengths])
            before, after = np.searchsorted(lengths, size), np.searchsorted(lengths, size + 1)
            parts.append(self._samples(chain, perm[size], size, values[before], values[after],
                                       status[before], status[after], fits=status))
        return concat(parts)

    def _samples(self, chain: int, point: np.ndarray, size: np.ndarray, v_without: np.ndarray,
                 v_with: np.ndarray, s_without: np.ndarray, s_with: np.ndarray, *,
                 fits: np.ndarray) -> SampleBatch:
        """Rows of the sampled points; ``fits`` is the status of every evaluated prefix."""
        return SampleBatch(
            point=point.astype(np.int32),
            draw=np.full(len(point), chain, dtype=np.int32),
            cardinality=size.astype(np.int32),
            delta=v_with - v_without,
            weight=self.weights[size],
            status=sample_status(s_without, s_with),
            n_fits=len(fits),
            n_fallbacks=int(np.count_nonzero(fits)),
        )


def concat(parts: list[SampleBatch]) -> SampleBatch:
    """One SampleBatch from several (a batch of chains, of blocks...)."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return SampleBatch(
        point=cat("point"),
        draw=cat("draw"),
        cardinality=cat("cardinality"),
        delta=cat("delta"),
        weight=cat("weight"),
        status=cat("status"),
        n_fits=sum(p.n_fits for p in parts),
        n_fallbacks=sum(p.n_fallbacks for p in parts),
    )
