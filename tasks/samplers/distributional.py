"""Distributional Shapley by permutation blocks: about one fit per sample, O(max_size) rows each.

Distributional Shapley (Ghorbani, Kim & Zou 2020) draws |S| uniformly from
{lo..hi} = {min_size..max_size-1} (clipped, ``size_range``) and S uniformly of that size
from the pool without i. Independent coalitions cost 2 fits per sample and a permutation
chain costs n + 1 fits of up to n rows; both waste the point of the method when
max_size << n. Here draw j is a random permutation pi_j of the n points cut into
B = ceil(n / L) blocks of L = hi - lo + 1 points. Block b draws a context C of lo points
uniformly from the pool outside the block and evaluates the chain C, C + p_1, ...,
C + p_1..p_L (L + 1 fits of at most max_size rows); point p_t gets the sample
v(C + p_1..p_t) - v(C + p_1..p_{t-1}) with |S| = lo + t - 1 and weight 1. Since pi_j is
uniform, p_t's position t is uniform on 1..L and S is a uniform subset of that size of
the pool without p_t: exactly the semivalue's sampling distribution.

The last block of a permutation holds r = n mod L < L points when L does not divide n.
It is padded with L - r filler points drawn from outside the block and the context, and
the r real points take uniformly random positions among the L chain positions; only
the real points' samples are kept. Without the padding their sizes would stop at lo + r - 1.

Units: unit u = j * B + b is block b of draw j, so ``n_units(m) = m * B``, the units of a
budget are a prefix of any larger one's, and every point gets exactly one sample per
draw (its ``draw`` is j). pi_j comes from the ``draw_permutations`` stream indexed by j
(cached: consecutive units share it); the context, fillers and positions from the
unit's own stream. Fits per sample: B (L + 1) / n, about 1 + 1/L when L divides n.

Sampled points (``--points``, P of the n rows): the blocks are exactly the ones above,
but a block evaluates only the prefixes just before and at its sampled points, and keeps
only their samples. Each sampled point's sample is the one the full sampler gives it, so
the estimator stays exact; a sample costs between 1 + 1/L fits (P = n) and 2 (P << n,
where a sampled point's neighbours in the chain are rarely sampled too).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, evaluate_prefixes, sample_status, unit_rng
from amortval.tasks.samplers.permutation import concat
from amortval.tasks.semivalues import size_range
from amortval.tasks.streams import stream

@functools.lru_cache(maxsize=8)
def draw_permutation(seed: int, n: int, draw: int) -> np.ndarray:
    """pi_j, shared by every block of draw j (read-only: it is cached per process)."""
    perm = stream(seed, "draw_permutations", draw).permutation(n)
    perm.setflags(write=False)
    return perm


class DistributionalSampler:
    def __init__(self, n: int, min_size: int, max_size: int, points: np.ndarray | None = None):
        self.n = n
        self.lo, hi = size_range(n - 1, min_size, max_size)
        self.block = hi - self.lo + 1  # L
        self.blocks = math.ceil(n / self.block)  # B
        self.sampled = None
        if points is None:
            self.fits_per_unit = float(self.block + 1)
        else:  # expected prefixes per block: two per sampled point, at most L + 1
            self.sampled = np.zeros(n, dtype=bool)
            self.sampled[np.asarray(points)] = True
            self.fits_per_unit = float(min(self.block + 1, 1 + 2 * self.block * len(points) / n))

    def n_units(self, samples: int) -> int:
        return samples * self.blocks

    def chain(self, unit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit u's evaluation order (context, then the L chain points) and the chain
        positions (0..L-1) holding the block's real points."""
        n, lo, size = self.n, self.lo, self.block
        draw, b = divmod(int(unit), self.blocks)
        perm = draw_permutation(int(seed), n, draw)
        start = b * size
        real = perm[start:start + size]
        r = len(real)
        rng = unit_rng(seed, unit)
        # lo + (L - r) distinct positions of pi_j outside the block: context, then fillers.
        outside = rng.choice(n - r, size=lo + size - r, replace=False)
        outside[outside >= start] += r
        picked = perm[outside]
        if r == size:
            return np.concatenate([picked, real]), np.arange(size)
        slots = rng.permutation(size)
        chain = np.empty(size, dtype=perm.dtype)
        chain[slots[:r]] = real
        chain[slots[r:]] = picked[lo:]
        return np.concatenate([picked[:lo], chain]), np.sort(slots[:r])

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        lo, size = self.lo, self.block
        chains = [self.chain(u, seed) for u in units]
        if self.sampled is not None:  # keep the sampled points' positions only
            chains = [(order, keep[self.sampled[order[lo + keep]]]) for order, keep in chains]
        # prefixes lo + t (before the point at position t) and lo + t + 1 (with it)
        positions = [np.union1d(keep, keep + 1) if self.sampled is not None else np.arange(size + 1)
                     for _, keep in chains]
        values, status = evaluate_prefixes(utility, [order for order, _ in chains], [lo + p for p in positions])
        parts, offset = [], 0
        for u, (order, keep), evaluated in zip(units, chains, positions):
            v, s = values[offset:offset + len(evaluated)], status[offset:offset + len(evaluated)]
            offset += len(evaluated)
            before, after = np.searchsorted(evaluated, keep), np.searchsorted(evaluated, keep + 1)
            parts.append(SampleBatch(
                point=order[lo + keep].astype(np.int32),
                draw=np.full(len(keep), u // self.blocks, dtype=np.int32),
                cardinality=(lo + keep).astype(np.int32),
                delta=v[after] - v[before],
                weight=np.ones(len(keep)),
                status=sample_status(s[before], s[after]),
                n_fits=len(evaluated),
                n_fallbacks=int(np.count_nonzero(s)),
            ))
        return concat(parts)
