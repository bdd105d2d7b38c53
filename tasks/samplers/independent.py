"""Independent coalitions per point: works for any semivalue, two fits per sample.

Sample (i, j) draws a size k from the semivalue's size distribution, a coalition S of
that size uniformly from D \\ {i}, and returns v(S ∪ {i}) - v(S) with weight 1. Units are
numbered draw-major (unit = j * P + p over the P points sampled), so the first batches give
every point its first samples and an interrupted run is still spread over all points.
``points`` restricts sampling to some points (a ground truth's probes); coalitions are
still drawn from the whole training set, and with every point it is the plain sampler.
"""

from __future__ import annotations

import math

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.samplers.base import SampleBatch, sample_status


class IndependentSampler:
    def __init__(self, n: int, samples: int, size_pmf: np.ndarray, batch_fits: int,
                 points: np.ndarray | None = None):
        self.n = n
        self.samples = samples
        self.size_pmf = size_pmf
        self.points = np.arange(n) if points is None else np.asarray(points)
        self.units_per_batch = max(1, batch_fits // 2)
        self.n_batches = math.ceil(len(self.points) * samples / self.units_per_batch)

    def run(self, utility: Utility, batch: int, rng: np.random.Generator) -> SampleBatch:
        n, n_points = self.n, len(self.points)
        start = batch * self.units_per_batch
        units = np.arange(start, min(n_points * self.samples, start + self.units_per_batch))
        point, draw = self.points[units % n_points], units // n_points
        sizes = rng.choice(n, size=len(units), p=self.size_pmf)
        without = np.zeros((len(units), n), dtype=bool)
        for row, (i, k) in enumerate(zip(point, sizes)):
            # k smallest random keys among the others = a uniform k-subset of D \ {i}
            keys = rng.random(n)
            keys[i] = np.inf
            without[row, np.argpartition(keys, k)[:k] if k else []] = True
        with_point = without.copy()
        with_point[np.arange(len(units)), point] = True
        values, status = utility.evaluate(np.concatenate([without, with_point]))
        v_without, v_with = values[: len(units)], values[len(units) :]
        s_without, s_with = status[: len(units)], status[len(units) :]
        return SampleBatch(
            point=point.astype(np.int32),
            draw=draw.astype(np.int32),
            cardinality=sizes.astype(np.int32),
            delta=v_with - v_without,
            weight=np.ones(len(units)),
            status=sample_status(s_without, s_with),
            n_fits=2 * len(units),
            n_fallbacks=int(np.count_nonzero(status)),
        )
