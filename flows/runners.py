"""Where batches run: a thread pool in the flow process, or a local Dask cluster.

Both give bit-identical samples: every batch draws from (run seed, batch index), and
the flow process commits whatever finishes, in whatever order. Each worker uses one
BLAS/torch thread (one fit per thread; see ``tasks/runtime.py``), so ``workers`` is
the number of fits running at once.

- ``threads`` (default): ``workers`` threads in this process; ~3 ms per task.
- ``dask``: a temporary ``distributed.LocalCluster`` of ``workers`` single-threaded
  worker *processes* (spawned, so no OpenMP state is inherited); ~100 ms per task and
  a few seconds to start, in exchange for isolation from the flow process and the same
  code path as a real Dask cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from amortval.errors import ConfigError
from amortval.tasks.config import RUNNERS
from amortval.tasks.runtime import THREAD_VARIABLES


def check_runner(kind: str, workers: int) -> None:
    """ConfigError for an unknown runner or a worker count below 1 (before any work)."""
    if kind not in RUNNERS:
        raise ConfigError(f"unknown runner {kind!r}; choose one of {', '.join(RUNNERS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")


@contextmanager
def batch_runner(kind: str, workers: int) -> Iterator[TaskRunner]:
    """A started Prefect task runner for the valuation batches; stopped on exit."""
    check_runner(kind, workers)
    if kind == "threads":
        with ThreadPoolTaskRunner(max_workers=workers) as runner:
            yield runner
        return
    from prefect_dask import DaskTaskRunner  # imported only when asked for: it loads distributed

    dask = DaskTaskRunner(cluster_kwargs={
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",  # any free port: two runs on one machine must not collide
        "env": {name: "1" for name in THREAD_VARIABLES},
    })
    with _api_shared_with_workers(), dask as runner:
        yield runner


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
