"""Maximum sample reuse for Data Banzhaf (Wang & Jia 2023): one fit, a sample per point.

Each shared coalition S includes every point independently with probability 1/2 and is
evaluated once. For point i, ``2 (v(S) - c) * (+1 if i in S else -1)`` is an unbiased
sample of phi_i = E[v | i in S] - E[v | i not in S] for any constant c; centring on
c = v(D) removes most of the variance the raw utility level would add. The row stores
``delta = v(S) - c`` and ``weight = +-2``, and the coalition size |S \\ {i}|.
"""

from __future__ import annotations

import math

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch


class MSRSampler:
    def __init__(self, n: int, samples: int, batch_fits: int):
        self.n = n
        self.samples = samples
        self.subsets_per_batch = max(1, batch_fits)
        self.n_batches = math.ceil(samples / self.subsets_per_batch)

    def run(self, utility: Utility, batch: int, rng: np.random.Generator) -> SampleBatch:
        n = self.n
        start = batch * self.subsets_per_batch
        draws = np.arange(start, min(self.samples, start + self.subsets_per_batch))
        masks = rng.random((len(draws), n)) < 0.5
        values, status = utility.evaluate(masks)
        centre = utility.full_value()
        sizes = masks.sum(axis=1)
        return SampleBatch(
            point=np.tile(np.arange(n, dtype=np.int32), len(draws)),
            draw=np.repeat(draws, n).astype(np.int32),
            cardinality=(sizes[:, None] - masks).ravel().astype(np.int32),
            delta=np.repeat(values - centre, n),
            weight=np.where(masks, 2.0, -2.0).ravel(),
            status=np.repeat(status, n).astype(np.int8),
            n_fits=len(draws) + 1,
            n_fallbacks=int(np.count_nonzero(status)),
        )
