"""Maximum sample reuse for Data Banzhaf (Wang & Jia 2023): one fit, a sample per point.

Each shared coalition S includes every point independently with probability 1/2 and is
evaluated once. For point i, ``2 (v(S) - c) * (+1 if i in S else -1)`` is an unbiased
sample of phi_i = E[v | i in S] - E[v | i not in S] for any constant c; centring on
c = v(D) removes most of the variance the raw utility level would add. The row stores
``delta = v(S) - c`` and ``weight = +-2``, and the coalition size |S \\ {i}|.
Unit = subset = draw: subset j is every point's j-th sample.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, unit_rng


class MSRSampler:
    def __init__(self, n: int):
        self.n = n
        self.fits_per_unit = 1.0

    def n_units(self, samples: int) -> int:
        return samples

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        n = self.n
        draws = np.arange(units.start, units.stop)
        masks = np.stack([unit_rng(seed, int(u)).random(n) < 0.5 for u in draws])
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
