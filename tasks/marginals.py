"""One unit of Prefect work: evaluate one batch of marginal contributions.

A task receives a small spec (run id, batch index, path of the encoded problem, config)
rather than arrays, loads the problem once per process, and returns sample rows for the
flow process to commit: workers never touch the store, so DuckDB keeps a single writer.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import polars as pl

from amortval.data.problem import load_problem
from amortval.models.utility import Utility, make_utility
from amortval.tasks.config import ValuationConfig
from amortval.tasks.runtime import pin_threads
from amortval.tasks.samplers import batch_rng, make_sampler


@dataclass(frozen=True)
class BatchSpec:
    run_id: str
    batch: int
    problem_path: str
    config: ValuationConfig


@dataclass(frozen=True)
class BatchResult:
    run_id: str
    batch: int
    samples: pl.DataFrame  # point, draw, cardinality, delta, weight, status
    n_fits: int
    n_fallbacks: int
    seconds: float


@functools.lru_cache(maxsize=8)
def cached_utility(problem_path: str, learner: str, seed: int, knn_k: int) -> Utility:
    # One utility per process and problem: learners precompute tensors/DMatrices once.
    return make_utility(learner, load_problem(problem_path), seed, knn_k=knn_k)


def plan_batches(config: ValuationConfig, n_points: int) -> int:
    """How many batches the run has; the plan is a pure function of config and n."""
    return make_sampler(config, n_points).n_batches


def evaluate_batch(spec: BatchSpec) -> BatchResult:
    """Draw the batch's coalitions from (seed, batch) and evaluate their marginals."""
    pin_threads()  # a no-op after the first call; worker processes (Dask) start unpinned
    start = time.perf_counter()
    config = spec.config
    utility = cached_utility(spec.problem_path, config.learner, config.seed, config.knn_k)
    sampler = make_sampler(config, utility.n)
    out = sampler.run(utility, spec.batch, batch_rng(config.seed, spec.batch))
    return BatchResult(
        run_id=spec.run_id,
        batch=spec.batch,
        samples=out.to_frame(),
        n_fits=out.n_fits,
        n_fallbacks=out.n_fallbacks,
        seconds=time.perf_counter() - start,
    )
