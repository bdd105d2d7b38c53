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
"""

from __future__ import annotations

import functools
import math

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, sample_status, unit_rng
from amortval.tasks.samplers.permutation import concat
from amortval.tasks.semivalues import size_range
from amortval.tasks.streams import stream

# Booleans of the masks built at once (as in models/utility.py's prefix chains): ~16 MB.
_MASK_BUDGET = 1 << 24


@functools.lru_cache(maxsize=8)
def draw_permutation(seed: int, n: int, draw: int) -> np.ndarray:
    """pi_j, shared by every block of draw j (read-only: it is cached per process)."""
    perm = stream(seed, "draw_permutations", draw).permutation(n)
    perm.setflags(write=False)
    return perm


class DistributionalSampler:
    def __init__(self, n: int, min_size: int, max_size: int):
        self.n = n
        self.lo, hi = size_range(n - 1, min_size, max_size)
        self.block = hi - self.lo + 1  # L
        self.blocks = math.ceil(n / self.block)  # B
        self.fits_per_unit = float(self.block + 1)

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
        values, status = self._evaluate(utility, [order for order, _ in chains])
        parts = []
        for k, (u, (order, keep)) in enumerate(zip(units, chains)):
            v = values[k * (size + 1):(k + 1) * (size + 1)]
            s = status[k * (size + 1):(k + 1) * (size + 1)]
            parts.append(SampleBatch(
                point=order[lo + keep].astype(np.int32),
                draw=np.full(len(keep), u // self.blocks, dtype=np.int32),
                cardinality=(lo + keep).astype(np.int32),
                delta=(v[1:] - v[:-1])[keep],
                weight=np.ones(len(keep)),
                status=sample_status(s[:-1], s[1:])[keep],
                n_fits=size + 1,
                n_fallbacks=int(np.count_nonzero(s)),
            ))
        return concat(parts)

    def _evaluate(self, utility: Utility, orders: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """v and status of the L + 1 prefixes lo..lo+L of every order, all units in one
        stream of mask chunks (so small blocks still fill the learner's batches)."""
        n, lo, size = self.n, self.lo, self.block
        per_unit = size + 1
        total = len(orders) * per_unit
        step = max(1, _MASK_BUDGET // max(n, 1))
        rank = np.arange(lo + size)
        values, status = [], []
        for start in range(0, total, step):
            stop = min(total, start + step)
            masks = np.zeros((stop - start, n), dtype=bool)
            for k in range(start // per_unit, (stop - 1) // per_unit + 1):
                first, last = max(start, k * per_unit), min(stop, (k + 1) * per_unit)
                lengths = lo + np.arange(first - k * per_unit, last - k * per_unit)
                masks[first - start:last - start][:, orders[k]] = rank[None, :] < lengths[:, None]
            v, s = utility.evaluate(masks)
            values.append(v)
            status.append(s)
        return np.concatenate(values), np.concatenate(status)
