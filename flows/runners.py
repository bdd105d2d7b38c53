"""Where batches run: a thread pool in the flow process, or a Dask cluster.

All give bit-identical samples: every batch draws from (run seed, batch index), and
the flow process commits whatever finishes, in whatever order, as the store's only
writer (workers return rows). Each worker uses one BLAS/torch thread (one fit per
thread; see ``tasks/runtime.py``), so ``workers`` is the number of fits running at once.

- ``threads`` (default): ``workers`` threads in this process; ~3 ms per task.
- ``dask``: a temporary ``distributed.LocalCluster`` of ``workers`` single-threaded
  worker *processes* (spawned, so no OpenMP state is inherited); ~100 ms per task and
  a few seconds to start, in exchange for isolation from the flow process and the same
  code path as a real Dask cluster.
- ``dask`` with an address (``--dask-address tcp://HOST:PORT``): an existing cluster,
  started by the user (README, "Running on a Dask cluster"); its worker threads, not
  ``workers``, set how many batches run at once. ``check_cluster`` refuses a scheduler
  that does not answer, has no workers, or has a worker that cannot read the problem file,
  before the flow touches the store.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_client, get_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from amortval.errors import AmortvalError, ClusterError, ConfigError
from amortval.tasks.config import RUNNERS
from amortval.tasks.marginals import check_problem_readable
from amortval.tasks.runtime import THREAD_VARIABLES, peak_rss_mb

# Seconds to reach a scheduler and to see a worker: long enough for a busy network, short
# enough that a typo'd address fails well before anyone wonders whether the run started.
CONNECT_TIMEOUT_S = 10


def check_runner(kind: str, workers: int) -> None:
    """ConfigError for an unknown runner or a worker count below 1 (before any work)."""
    if kind not in RUNNERS:
        raise ConfigError(f"unknown runner {kind!r}; choose one of {', '.join(RUNNERS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")


def check_cluster(address: str | None, problem_path: Path | None = None) -> None:
    """``ClusterError`` unless the scheduler at ``address`` answers, has at least one worker,
    and every worker can read ``problem_path`` when one is given (a no-op without an address).

    One short connection, before anything is written: the entry point checks the address
    before the inputs are materialized, the flow checks again with the problem file before
    it touches the store (deployments reach the flow directly). A refused cluster leaves
    nothing behind."""
    if address is None:
        return
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError):
        raise ClusterError(f"--dask-address {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s; "
                           "start one with `dask scheduler` and pass the address it prints") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(f"--dask-address {address}: no worker joined that scheduler within "
                               f"{CONNECT_TIMEOUT_S} s; start workers with `dask worker {address} --nthreads 1`"
                               ) from None
        if problem_path is None:
            return
        answers = client.run(check_problem_readable, str(problem_path), on_error="return")
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, AmortvalError):
            raise answer
        if isinstance(answer, BaseException):
            reason = " ".join(str(answer).split())  # one line, whatever the worker's message
            raise ClusterError(f"--dask-address {address}: worker {worker} cannot run amortval "
                               f"({type(answer).__name__}: {reason}); install the same amortval on every worker")


@contextmanager
def batch_runner(kind: str, workers: int, address: str | None = None) -> Iterator[TaskRunner]:
    """A started Prefect task runner for the valuation batches; stopped on exit (an existing
    cluster at ``address`` is only disconnected from, never stopped)."""
    check_runner(kind, workers)
    if kind == "threads":
        with ThreadPoolTaskRunner(max_workers=workers) as runner:
            yield runner
        return
    from prefect_dask import DaskTaskRunner  # imported only when asked for: it loads distributed

    dask = DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs={
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",  # any free port: two runs on one machine must not collide
        "env": {name: "1" for name in THREAD_VARIABLES},
    })
    with _api_shared_with_workers(), dask as runner:
        yield runner


def batch_slots(pool: TaskRunner, workers: int) -> int:
    """Batches the runner evaluates at once: a Dask cluster's worker threads, else ``workers``."""
    client = _dask_client(pool)
    return (sum(client.nthreads().values()) or workers) if client else workers


def worker_peak_rss_mb(pool: TaskRunner) -> list[float] | None:
    """Each Dask worker's peak resident memory (MB, ordered by worker address), logged;
    ``None`` for threads, whose memory is the flow process's own. On an existing cluster a
    worker's peak covers its whole life, earlier runs included."""
    client = _dask_client(pool)
    if client is None:
        return None
    peaks = [round(mb, 1) for _, mb in sorted(client.run(peak_rss_mb).items())]
    get_run_logger().info("Dask workers' peak RSS: %s MB (%d workers)", ", ".join(f"{mb:,.0f}" for mb in peaks),
                          len(peaks))
    return peaks


def _dask_client(pool: TaskRunner):
    """The runner's Dask client, or None (prefect_dask is only imported when a Dask run asks for it)."""
    dask = sys.modules.get("prefect_dask")
    return pool.client if dask is not None and isinstance(pool, dask.DaskTaskRunner) else None


@contextmanager
def _api_shared_with_workers() -> Iterator[None]:
    """Point worker processes at this process's Prefect API.

    Tasks carry the flow's settings to the workers. With no API configured (a local run
    on Prefect's temporary server) those settings name no URL, and every Dask worker
    would start a temporary server of its own: seconds each, several writers on one
    SQLite file. Naming the flow process's server for the duration avoids both.
    """
    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield
