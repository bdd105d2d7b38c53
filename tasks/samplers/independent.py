"""Independent coalitions per point: works for any semivalue, two fits per sample.

Sample (i, j) draws a size k from the semivalue's size distribution, a coalition S of
that size uniformly from D \\ {i}, and returns v(S ∪ {i}) - v(S) with weight 1. Units are
numbered draw-major (unit = j * P + p over the P points sampled), so the first units give
every point its first samples, the units of a budget m are the first m * P, and an
interrupted run is still spread over all points. ``points`` restricts sampling to some
points (a ground truth's probes); coalitions are still drawn from the whole training
set, and with every point it is the plain sampler.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, sample_status, unit_rng


class IndependentSampler:
    def __init__(self, n: int, size_pmf: np.ndarray, points: np.ndarray | None = None):
        self.n = n
        self.size_pmf = size_pmf
        self.points = np.arange(n) if points is None else np.asarray(points)
        self.fits_per_unit = 2.0

    def n_units(self, samples: int) -> int:
        return len(self.points) * samples

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        n, n_points = self.n, len(self.points)
        unit = np.arange(units.start, units.stop)
        point, draw = self.points[unit % n_points], unit // n_points
        sizes = np.empty(len(unit), dtype=np.int64)
        without = np.zeros((len(unit), n), dtype=bool)
        for row, (u, i) in enumerate(zip(unit, point)):
            rng = unit_rng(seed, int(u))
            k = sizes[row] = rng.choice(n, p=self.size_pmf)
            # k smallest random keys among the others = a uniform k-subset of D \ {i}
            keys = rng.random(n)
            keys[i] = np.inf
            without[row, np.argpartition(keys, k)[:k] if k else []] = True
        with_point = without.copy()
        with_point[np.arange(len(unit)), point] = True
        values, status = utility.evaluate(np.concatenate([without, with_point]))
        v_without, v_with = values[: len(unit)], values[len(unit) :]
        s_without, s_with = status[: len(unit)], status[len(unit) :]
        return SampleBatch(
            point=point.astype(np.int32),
            draw=draw.astype(np.int32),
            cardinality=sizes.astype(np.int32),
            delta=v_with - v_without,
            weight=np.ones(len(unit)),
            status=sample_status(s_without, s_with),
            n_fits=2 * len(unit),
            n_fallbacks=int(np.count_nonzero(status)),
        )
