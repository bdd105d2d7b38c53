"""Permutation chains: one fit per sample (Shapley), re-weighted for Beta Shapley.

A chain draws a permutation and evaluates v on its n+1 prefixes; point pi[j] gets the
sample v(pi[:j+1]) - v(pi[:j]) with coalition size j. Every point gets one sample per
chain for n+1 fits, versus 2 fits per sample with independent coalitions. Size j is
uniform on {0..n-1}, which is exactly Shapley; other semivalues re-weight by n p(j).
Unit = chain = draw: chain j is every point's j-th sample.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, sample_status, unit_rng
from amortval.tasks.semivalues import permutation_weights


class PermutationSampler:
    def __init__(self, n: int, size_pmf: np.ndarray):
        self.n = n
        self.fits_per_unit = float(n + 1)
        self.weights = permutation_weights(size_pmf)

    def n_units(self, samples: int) -> int:
        return samples

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        n = self.n
        parts: list[SampleBatch] = []
        for chain in units:
            perm = unit_rng(seed, chain).permutation(n)
            values, status = utility.evaluate_prefixes(perm)
            size = np.arange(n)
            parts.append(
                SampleBatch(
                    point=perm.astype(np.int32),
                    draw=np.full(n, chain, dtype=np.int32),
                    cardinality=size.astype(np.int32),
                    delta=values[1:] - values[:-1],
                    weight=self.weights[size],
                    status=sample_status(status[:-1], status[1:]),
                    n_fits=n + 1,
                    n_fallbacks=int(np.count_nonzero(status)),
                )
            )
        return concat(parts)


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
