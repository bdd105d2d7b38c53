"""A local Dask cluster reached by address, as README "Running on a Dask cluster" starts one:
``dask scheduler`` and ``dask worker --nthreads 1`` processes, each in its own process
group, stopped by PID (workers first) when the block ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_cluster(workers: int, logs: Path, env: dict[str, str]):
    """Yields the scheduler's address once ``workers`` single-thread workers have joined."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []

    def start(name: str, argv: list[str]) -> None:
        with open(logs / f"{name}.log", "w") as log:
            started.append(subprocess.Popen(argv, env={**env, **ONE_THREAD}, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))

    try:
        start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                            "--no-dashboard"])
        for i in range(workers):
            start(f"worker-{i}", [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard"])
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
