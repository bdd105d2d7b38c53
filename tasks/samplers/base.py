"""What every sampler returns, and how a batch gets its random stream.

A sampler turns a batch index into utility evaluations and sample rows. Each row is one
noisy sample of a point's value: ``weight * delta`` is unbiased for phi_i. Rows carry the
draw number (the j-th sample of that point, used to hold out a share of each point's
samples) and the coalition size, so semivalues can be re-weighted from stored rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from amortval.models.utility import STATUS_NAMES, Utility


def batch_rng(seed: int, batch: int) -> np.random.Generator:
    """The batch's own stream: results do not depend on worker count or order."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(batch,)))


@dataclass(frozen=True)
class SampleBatch:
    point: np.ndarray  # int32
    draw: np.ndarray  # int32
    cardinality: np.ndarray  # int32: |S|, the coalition the point joined
    delta: np.ndarray  # float64
    weight: np.ndarray  # float64
    status: np.ndarray  # int8 codes into STATUS_NAMES
    n_fits: int  # utility evaluations (fallbacks included)
    n_fallbacks: int  # evaluations answered by the degenerate-subset policy

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "point": self.point.astype(np.int32),
                "draw": self.draw.astype(np.int32),
                "cardinality": self.cardinality.astype(np.int32),
                "delta": self.delta.astype(np.float64),
                "weight": self.weight.astype(np.float64),
                "status": np.asarray(STATUS_NAMES)[self.status],
            }
        )


def sample_status(status_without: np.ndarray, status_with: np.ndarray) -> np.ndarray:
    """A sample is degenerate if either evaluation was: report the coalition's own
    status first (it says why, e.g. 'empty'), else the status of S ∪ {i}."""
    return np.where(status_without != 0, status_without, status_with).astype(np.int8)


class Sampler(Protocol):
    n_batches: int

    def run(self, utility: Utility, batch: int, rng: np.random.Generator) -> SampleBatch: ...
