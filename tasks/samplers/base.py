"""What every sampler returns, and the unit contract that makes budgets extend.

A sampler's work is a sequence of **units** (a permutation chain, a shared subset, one
independent coalition). Unit u draws only from its own stream ``units_rng(seed, u)``, so
its samples are a pure function of the sampling identity and u: how units are grouped
into batches, which worker runs them and in what order change nothing. The units of a
budget of m samples per point are the first ``n_units(m)`` units, and their rows are
exactly the rows with ``draw < m``: a larger budget is a superset of a smaller one.

Each row is one noisy sample of a point's value: ``weight * delta`` is unbiased for
phi_i. Rows carry the draw number (the j-th sample of that point, used to hold out a
share of each point's samples) and the coalition size, so semivalues can be re-weighted
from stored rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from amortval.models.utility import MASK_BUDGET, STATUS_NAMES, Utility
from amortval.tasks.streams import stream


def unit_rng(seed: int, unit: int) -> np.random.Generator:
    """Unit u's own stream (``tasks/streams.py``, purpose ``units``)."""
    return stream(seed, "units", unit)


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


def sampled_points(seed: int, n: int, count: int) -> np.ndarray | None:
    """The rows that get samples (``--points``): a seeded subset of ``count`` of the n rows,
    sorted; None when every row does. A smaller count's rows are a subset of a larger one's
    (a prefix of one permutation from the ``points`` stream)."""
    if count >= n:
        return None
    return np.sort(stream(seed, "points").permutation(n)[:count])


def evaluate_prefixes(utility: Utility, orders: list[np.ndarray],
                      lengths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """v and status of the prefixes ``order[:k]`` for each k in ``lengths[i]`` of each
    ``orders[i]``, concatenated: every order in one stream of mask chunks of about
    ``MASK_BUDGET`` booleans, so short chains still fill the learner's batches and long
    ones never hold n x n masks."""
    n = utility.n
    owner = np.repeat(np.arange(len(orders)), [len(k) for k in lengths])
    flat = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    step = max(1, MASK_BUDGET // max(n, 1))
    values, status = [], []
    for start in range(0, len(flat), step):
        stop = min(len(flat), start + step)
        masks = np.zeros((stop - start, n), dtype=bool)
        for row in range(start, stop):
            masks[row - start, orders[owner[row]][:flat[row]]] = True
        v, s = utility.evaluate(masks)
        values.append(v)
        status.append(s)
    if not values:
        return np.zeros(0), np.zeros(0, dtype=np.int8)
    return np.concatenate(values), np.concatenate(status)


def sample_status(status_without: np.ndarray, status_with: np.ndarray) -> np.ndarray:
    """A sample is degenerate if either evaluation was: report the coalition's own
    status first (it says why, e.g. 'empty'), else the status of S ∪ {i}."""
    return np.where(status_without != 0, status_without, status_with).astype(np.int8)


class Sampler(Protocol):
    fits_per_unit: float  # utility evaluations per unit, for sizing batches and plans

    def n_units(self, samples: int) -> int:
        """Units that give every sampled point ``samples`` draws (a prefix of any larger budget's)."""
        ...

    def run(self, utility: Utility, units: range, seed: int) -> SampleBatch:
        """Evaluate units ``units`` (consecutive), each from ``unit_rng(seed, u)``."""
        ...
