"""``--dask-address``: an existing Dask cluster runs the batches.

A scheduler and two workers, started from the README's own commands as separate
processes on 127.0.0.1, give the thread runner's samples and values bit for bit; each
worker loads the problem once; a bad or unreachable address is one error line and writes
nothing; a worker that cannot read the problem file is named with its host; the cluster
is stopped by PID and leaves no process behind.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from amortval.data.store import ValuationStore
from amortval.errors import AmortvalError, ClusterError
from amortval.tasks.config import SamplingConfig, UtilityConfig
from amortval.tasks.marginals import BatchSpec, evaluate_batch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Demo (500 points): 4 permutation chains of 501 fits, one chain per batch, so both workers get work.
BUDGET = ["--samples", "4", "--epochs", "2", "--pretrain-epochs", "1", "--folds", "2", "--batch-fits", "501"]


def readme_commands() -> dict[str, str]:
    """The README's Dask block: scheduler, worker and value command lines, by first word."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- dask:begin -->")[1].split("<!-- dask:end -->")[0]
    lines = [line.strip() for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "```"))]
    by_role = {}
    for line in lines:
        words = [w for w in shlex.split(line) if "=" not in w]
        by_role[" ".join(words[:2])] = line
    assert set(by_role) == {"dask scheduler", "dask worker", "amortval value"}, lines
    return by_role


def as_run(line: str, port: int, store: Path, cores: int = 1) -> tuple[dict[str, str], list[str]]:
    """(environment prefix, argv) of a README line for this machine: the scheduler on
    127.0.0.1:``port``, ``cores`` worker processes, the store in ``store``."""
    line = (line.replace("SCHEDULER", "127.0.0.1").replace("8786", str(port))
            .replace('"$(nproc)"', str(cores)).replace("/shared/amortval-store", str(store)))
    words = shlex.split(line)
    env = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, [str(BIN / words[0]), *words[1:]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_members(groups: set[int]) -> list[str]:
    """Live (not zombie) processes in these process groups, as 'pid command'."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) in groups and fields[0] != "Z":
            alive.append(f"{stat.parent.name} {text.split('(', 1)[1].rsplit(')', 1)[0]}")
    return alive


@contextmanager
def cluster(tmp_path: Path, env: dict[str, str]):
    """A scheduler and two single-core 'machines' of workers, each in its own process group;
    yields (address, process groups). Stopped by PID on exit, workers first."""
    commands, port = readme_commands(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    started: list[subprocess.Popen] = []

    def start(name: str, line: str, extra: list[str]) -> None:
        prefix, argv = as_run(line, port, tmp_path)
        log = open(tmp_path / f"{name}.log", "w")
        started.append(subprocess.Popen(argv + extra, env={**env, **prefix}, cwd=tmp_path, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("scheduler", commands["dask scheduler"], ["--host", "127.0.0.1", "--no-dashboard"])
        for i in range(2):
            start(f"worker-{i}", commands["dask worker"], ["--no-dashboard"])
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=90)
        yield address, {p.pid for p in started}
    finally:
        for process in reversed(started):  # workers before their scheduler
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def amortval_value(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("amortval: error:")]
    assert len(lines) == 1 and done.stderr.count("amortval: error:") == 1, done.stderr
    return lines[0]


def stored(store: Path) -> tuple[str, pl.DataFrame, pl.DataFrame]:
    """(run id, samples, values) of the one run in a store."""
    with ValuationStore(store / "amortval.duckdb") as db:
        run = db.runs().row(0, named=True)
        samples = db.samples(run["sampling_id"])
    return run["run_id"], samples, pl.read_parquet(store / "values" / f"{run['run_id']}.parquet")


def test_a_worker_that_cannot_read_the_problem_names_its_host_and_the_path(tmp_path):
    """The task-side error: not retried (an AmortvalError), and it says what to fix."""
    missing = tmp_path / "not-shared" / "problem.npz"
    spec = BatchSpec("s", 0, 1, str(missing), UtilityConfig(), SamplingConfig())
    with pytest.raises(ClusterError) as error:
        evaluate_batch(spec)
    assert isinstance(error.value, AmortvalError), "_retry_unless_user_error retries everything else"
    message = str(error.value)
    assert socket.gethostname() in message and str(missing) in message and "same path" in message
    assert "\n" not in message


def test_a_malformed_address_or_one_with_the_thread_runner_is_refused_before_any_work(tmp_path):
    store = tmp_path / "store"
    base = [sys.executable, "-m", "amortval.flows.cli", "value", "--store", str(store)]
    line = one_error_line(amortval_value(base + ["--dask-address", "127.0.0.1:8786"], dict(os.environ)))
    assert "--dask-address" in line and "tcp://HOST:PORT" in line and "'127.0.0.1:8786'" in line
    line = one_error_line(amortval_value(base + ["--runner", "threads", "--dask-address", "tcp://127.0.0.1:8786"],
                                         dict(os.environ)))
    assert "--dask-address" in line and "--runner threads" in line
    assert not store.exists(), "nothing may be written for a bad address"


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path):
    """Refused before Prefect starts: no server, no flow run, no store."""
    store, address = tmp_path / "store", f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    done = amortval_value([sys.executable, "-m", "amortval.flows.cli", "value", "--store", str(store),
                           "--dask-address", address, *BUDGET], env)
    line = one_error_line(done)
    assert address in line and "no Dask scheduler answered" in line, line
    assert not store.exists(), "no demo files, no problem file, no DuckDB store, no MLflow database"
    assert "Starting temporary server" not in done.stderr and "Flow run" not in done.stderr, done.stderr


@pytest.mark.slow
def test_an_existing_cluster_gives_the_thread_runner_s_samples_and_values(tmp_path, cli_environment, figures):
    began = time.perf_counter()
    commands = readme_commands()
    # The reference runs on threads while the cluster starts.
    _, reference = as_run(commands["amortval value"], 0, tmp_path / "threads")
    at = reference.index("--dask-address")
    reference = reference[:at] + reference[at + 2:] + BUDGET
    log = tmp_path / "threads.log"
    threads = subprocess.Popen(reference, env=cli_environment, stdout=log.open("w"), stderr=subprocess.STDOUT)
    with cluster(tmp_path, cli_environment) as (address, groups):
        port = int(address.rsplit(":", 1)[1])
        _, argv = as_run(commands["amortval value"], port, tmp_path / "dask")
        done = amortval_value(argv + BUDGET, cli_environment)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert threads.wait(timeout=300) == 0, log.read_text()[-3000:]

        from distributed import Client

        from amortval.flows.runners import check_cluster
        from amortval.tasks.marginals import cached_utility

        with Client(address, timeout=30, set_as_default=False) as client:
            loads = client.run(cached_utility.cache_info)
        # The problem crossed to each worker once, however many batches it ran.
        assert sum(info.hits + info.misses for info in loads.values()) == 4, loads
        assert all(info.misses <= 1 for info in loads.values()), loads
        with pytest.raises(ClusterError) as unshared:
            check_cluster(address, tmp_path / "elsewhere" / "problem.npz")
        assert "worker on host" in str(unshared.value) and str(tmp_path / "elsewhere") in str(unshared.value)

    left = group_members(groups)
    assert not left, f"processes left after stopping the cluster: {left}"

    summary = [line for line in done.stdout.splitlines() if "Dask workers" in line]
    assert len(summary) == 1 and "(2 workers)" in summary[0], done.stdout
    peaks = [float(mb.replace(",", "")) for mb in summary[0].split("peak RSS")[1].split("MB")[0].split(", ")]
    assert len(peaks) == 2 and all(50 < mb < 4000 for mb in peaks), summary  # MB of a worker with torch loaded

    threads_run, threads_samples, threads_values = stored(tmp_path / "threads")
    dask_run, dask_samples, dask_values = stored(tmp_path / "dask")
    assert dask_run == threads_run, "the runner and the address are not part of the run id"
    assert threads_samples.height == 500 * 4
    assert dask_samples.equals(threads_samples), "samples computed on the cluster, bit for bit"
    assert dask_values.equals(threads_values), "Monte Carlo and amortized values, bit for bit"
    figures("Dask cluster by address (scheduler + 2 worker processes)",
            f"identical: {dask_samples.height} samples, {dask_values.height} values; worker peak RSS "
            f"{', '.join(f'{mb:.0f}' for mb in peaks)} MB; {time.perf_counter() - began:.0f} s in all")
