"""One unit of Prefect work: evaluate one batch (a range of Monte Carlo units).

A task receives a small spec (sampling id, unit range, path of the encoded problem, the
utility and sampling settings) rather than arrays, loads the problem once per process,
and returns sample rows for the flow process to commit: workers never touch the store,
so DuckDB keeps a single writer. On a Dask cluster each worker process reads the problem
file once, by path, from the store folder it must share with the flow.
"""

from __future__ import annotations

import functools
import socket
import time
from dataclasses import dataclass

import polars as pl

from amortval.data.problem import Problem, load_problem
from amortval.errors import ClusterError
from amortval.models.utility import Utility, make_utility
from amortval.tasks.config import SamplingConfig, UtilityConfig
from amortval.tasks.runtime import pin_threads
from amortval.tasks.samplers import make_sampler
from amortval.tasks.streams import int_seed


@dataclass(frozen=True)
class BatchSpec:
    sampling_id: str
    start: int  # first unit
    stop: int  # one past the last unit
    problem_path: str
    utility: UtilityConfig
    sampling: SamplingConfig


@dataclass(frozen=True)
class BatchResult:
    sampling_id: str
    start: int
    stop: int
    samples: pl.DataFrame  # point, draw, cardinality, delta, weight, status
    n_fits: int
    n_fallbacks: int
    seconds: float


def learner_seed(seed: int) -> int:
    """The utility learner's seed (its fixed initialization), from the run seed's own stream."""
    return int_seed(seed, "learner") % 2**31


def worker_problem(problem_path: str) -> Problem:
    """The encoded problem as this process sees it; ``ClusterError`` naming the host and the
    path if it cannot read the file.

    Workers read the problem from the store folder by path, so on a Dask cluster every
    worker must see that folder at the same path (a shared filesystem). A worker that does
    not is a setup error, not a transient failure: no retry can make the file appear.
    """
    try:
        return load_problem(problem_path)
    except OSError as error:
        raise _unreadable(problem_path, error) from None


def check_problem_readable(problem_path: str) -> None:
    """``worker_problem``'s check without the load: the flow asks every worker before any batch."""
    try:
        with open(problem_path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise _unreadable(problem_path, error) from None


def _unreadable(problem_path: str, error: OSError) -> ClusterError:
    return ClusterError(
        f"worker on host {socket.gethostname()} cannot read the problem file {problem_path} "
        f"({error.strerror or type(error).__name__}); every Dask worker must see the --store folder "
        "at the same path as the flow (a shared filesystem)")


@functools.lru_cache(maxsize=8)
def cached_utility(problem_path: str, learner: str, seed: int, knn_k: int) -> Utility:
    """One utility per process and problem: learners precompute tensors/DMatrices once.
    ``seed`` is the run seed."""
    return make_utility(learner, worker_problem(problem_path), learner_seed(seed), knn_k=knn_k)


def evaluate_batch(spec: BatchSpec) -> BatchResult:
    """Evaluate the units [start, stop), each from its own stream."""
    pin_threads()  # a no-op after the first call; worker processes (Dask) start unpinned
    start = time.perf_counter()
    utility = cached_utility(spec.problem_path, spec.utility.learner, spec.sampling.seed, spec.utility.knn_k)
    sampler = make_sampler(spec.sampling, utility.n)
    out = sampler.run(utility, range(spec.start, spec.stop), spec.sampling.seed)
    return BatchResult(
        sampling_id=spec.sampling_id,
        start=spec.start,
        stop=spec.stop,
        samples=out.to_frame(),
        n_fits=out.n_fits,
        n_fallbacks=out.n_fallbacks,
        seconds=time.perf_counter() - start,
    )
