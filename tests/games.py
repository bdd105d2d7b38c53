"""Cooperative games with known values, implementing the Utility protocol.

They let sampler and estimator tests check exact numbers without any learner noise.
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import prefix_values_by_masks


class TableGame:
    """v(S) read from a table indexed by the bitmask of S."""

    n_classes = 2

    def __init__(self, table: np.ndarray):
        self.table = np.asarray(table, dtype=np.float64)
        self.n = int(np.log2(len(self.table)))
        self.calls = 0

    def evaluate(self, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = np.asarray(masks, dtype=bool)
        self.calls += len(masks)
        codes = (masks.astype(np.int64) << np.arange(self.n)[None, :]).sum(axis=1)
        return self.table[codes], np.zeros(len(masks), dtype=np.int8)

    def evaluate_prefixes(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return prefix_values_by_masks(self.evaluate, perm)

    def full_value(self) -> float:
        return float(self.table[-1])


def codes_and_sizes(n: int) -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(1 << n)
    return codes, np.array([bin(c).count("1") for c in codes])


def additive_game(weights: np.ndarray) -> TableGame:
    """v(S) = sum of weights in S: every marginal contribution of i is exactly w_i."""
    n = len(weights)
    codes, _ = codes_and_sizes(n)
    bits = (codes[:, None] >> np.arange(n)[None, :]) & 1
    return TableGame(bits @ np.asarray(weights, dtype=np.float64))


def random_game(n: int, seed: int, *, null_player: int | None = None, symmetric: tuple[int, int] | None = None) -> TableGame:
    """A non-additive game: concave in size plus random interactions.

    ``null_player`` never changes v; ``symmetric`` players can be swapped without changing v.
    """
    rng = np.random.default_rng(seed)
    codes, sizes = codes_and_sizes(n)
    table = np.sqrt(sizes) / np.sqrt(n) + 0.1 * rng.standard_normal(len(codes))
    table[0] = 0.0
    if null_player is not None:
        bit = 1 << null_player
        table[codes & bit != 0] = table[(codes & bit != 0).nonzero()[0] ^ bit]
    if symmetric is not None:
        a, b = symmetric
        swapped = codes.copy()
        has_a, has_b = (codes >> a) & 1, (codes >> b) & 1
        swapped = swapped & ~((1 << a) | (1 << b)) | (has_a << b) | (has_b << a)
        table = (table + table[swapped]) / 2
    return TableGame(table)


def run_sampler(game, samples: int, *, seed: int = 0, batch_fits: int = 64, **options):
    """Every unit of a budget, evaluated in-process batch by batch; one SampleBatch."""
    from amortval.tasks.config import RunConfig
    from amortval.tasks.samplers import make_sampler, plan_segments
    from amortval.tasks.samplers.permutation import concat

    sampling = RunConfig.from_options(samples=samples, seed=seed, batch_fits=batch_fits, **options).sampling
    sampler = make_sampler(sampling, game.n)
    return concat([sampler.run(game, units, seed) for units in plan_segments(sampler, samples, batch_fits)])


def tiny_problem(n: int = 8, seed: int = 0):
    """Two Gaussian blobs; two training labels flipped so some points clearly hurt."""
    from amortval.data.problem import Problem

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.standard_normal((n, 2)) + 1.5 * (2 * y[:, None] - 1)).astype(np.float32)
    y[:2] = 1 - y[:2]
    y_valid = np.arange(40) % 2
    x_valid = (rng.standard_normal((40, 2)) + 1.5 * (2 * y_valid[:, None] - 1)).astype(np.float32)
    return Problem(x, y.astype(np.int64), x_valid, y_valid.astype(np.int64), 2)
