"""Maximum sample reuse for Data Banzhaf (Wang & Jia 2023): one fit, a sample per point.

Each shared coalition S includes every point independently with probability 1/2 and is
evaluated once. For point i, ``2 (v(S) - c) * (+1 if i in S else -1)`` is an unbiased
sample of phi_i = E[v | i in S] - E[v | i not in S] for any constant c; centring on
c = v(D) removes most of the variance the raw utility level would add. The row stores
``delta = v(S) - c`` and ``weight = +-2``, and the coalition size |S \\ {i}|.
Unit = subset = draw: subset j is every point's j-th sample. With sampled points
(``--points``) only their rows are kept: a subset costs one fit however many rows it serves.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, unit_rng


class MSRSampler:
    def __init__(self, n: int, points: np.ndarray | None = None):
        self.n = n
        self.points = None if points is None else np.asarray(points, dtype=np.int64)
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
        points = np.arange(n) if self.points is None else self.points
        kept = masks[:, points]
        return SampleBatch(
            point=np.tile(points.astype(np.int32), len(draws)),
            draw=np.repeat(draws, len(points)).astype(np.int32),
            cardinality=(sizes[:, None] - kept).ravel().astype(np.int32),
            delta=np.repeat(values - centre, len(points)),
            weight=np.where(kept, 2.0, -2.0).ravel(),
            status=np.repeat(status, len(points)).astype(np.int8),
            n_fits=len(draws) + 1,
            n_fallbacks=int(np.count_nonzero(status)),
        )
