"""Two writers, one store: exactly one proceeds; the other hears who holds it, quickly.

Also: many processes registering models against one MLflow SQLite store at once.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
from mlflow.tracking import MlflowClient

from amortval.data.store import ValuationStore, ensure_store_free
from amortval.errors import RunInProgressError, StoreLockedError
from amortval.tasks import tracking
from demo_files import write_demo_files

N_TRAIN, SAMPLES = 80, 200


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_files(tmp_path_factory.mktemp("concurrency-data"), seed=4, n_train=N_TRAIN, n_valid=40, n_new=10)


def value_command(data: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "amortval.flows.cli", "value", "--data", str(data / "train.parquet"),
            "--valid", str(data / "valid.parquet"), "--target", "label", "--mislabeled-column", "flipped",
            "--samples", str(SAMPLES), "--target-error", "off", "--batch-fits", "162", "--epochs", "3", "--store", str(store)]


def wait_for(proc: subprocess.Popen, log: Path, text: bytes, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {log}"
        time.sleep(0.02)


def sample_count(store: Path) -> tuple[int, int]:
    con = duckdb.connect(str(store / "amortval.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*), count(DISTINCT (sampling_id, point, draw)) FROM samples").fetchall()[0]
    finally:
        con.close()


def test_a_second_writer_is_refused_naming_store_and_holder_while_a_run_writes(data, cli_environment, tmp_path,
                                                                               figures):
    """While `amortval value` commits batches: opening its store fails within a second with
    our error (path and PID); the same command again exits 2 saying so; the first completes."""
    store, log = tmp_path / "store", tmp_path / "first.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(value_command(data, store), env=cli_environment, stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        wait_for(first, log, b"sampling: ")  # a batch is committed: the run is writing
        began = time.perf_counter()
        with pytest.raises(StoreLockedError) as error:
            ValuationStore(store / "amortval.duckdb")
        open_seconds = time.perf_counter() - began
        message = str(error.value)
        assert str(store / "amortval.duckdb") in message and f"process {first.pid}" in message, message
        assert open_seconds < 1.0

        began = time.perf_counter()
        second = subprocess.run(value_command(data, store), env=cli_environment, capture_output=True, text=True,
                                timeout=120)
        cli_seconds = time.perf_counter() - began
        assert second.returncode == 2, second.stderr[-3000:]
        assert "amortval: error: store" in second.stderr and f"process {first.pid}" in second.stderr
        assert "Beginning flow run" not in second.stderr + second.stdout, "refused before Prefect started"
        assert first.poll() is None, "the first run was still writing when the second was refused"
    finally:
        assert first.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert sample_count(store) == (N_TRAIN * SAMPLES, N_TRAIN * SAMPLES)
    figures("second writer refused", f"ValuationStore open {open_seconds * 1e3:.0f} ms; "
            f"second `amortval value` exit 2 after {cli_seconds:.1f} s (process start to exit)")


@pytest.mark.slow
def test_two_runs_started_together_exactly_one_proceeds(data, cli_environment, tmp_path, figures):
    """Same command, same fresh store, started at once: exactly one evaluates batches. The
    other either overlapped it and failed with our error naming the winner's PID (in its
    flow run: the store did not exist yet for the up-front check), or started its flow
    after the winner finished and reported the stored run instead of recomputing it."""
    store = tmp_path / "store"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(value_command(data, store), env=cli_environment, stdout=out,
                                          stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=300) for p in procs]
    texts = [log.read_text() for log in logs]
    workers = [i for i, text in enumerate(texts) if re.search(r"sampling: \d+/\d+ units", text)]
    assert len(workers) == 1 and codes[workers[0]] == 0, (codes, [t[-2000:] for t in texts])
    winner, other = workers[0], 1 - workers[0]
    if codes[other] == 2:
        outcome = "overlapped: refused"
        assert re.search(rf"amortval: error: store .* is in use by process {procs[winner].pid}", texts[other])
    else:
        outcome = "after the winner: reported the stored run"
        assert codes[other] == 0 and "is already complete" in texts[other], texts[other][-2000:]
    assert sample_count(store) == (N_TRAIN * SAMPLES, N_TRAIN * SAMPLES)
    figures("two runs started together", f"exit codes {codes}; one evaluated batches; the other {outcome}")


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_run_on_a_held_store_fails_with_our_error(data, tmp_path):
    """Deployments call the flow without the CLI's up-front check: the flow itself refuses."""
    from valuing import value as run_flow

    path = tmp_path / "amortval.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from amortval.data.store import ValuationStore
        store = ValuationStore({str(path)!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=rf"in use by process {holder.pid}"):
            run_flow(data=str(data / "train.parquet"), valid=str(data / "valid.parquet"), target="label",
                          mislabeled_column="flipped", samples=4, store=str(tmp_path))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_same_run_twice_in_one_process_is_refused(tmp_path):
    """DuckDB lets one process open a store twice, so the store itself refuses a second claim."""
    path = tmp_path / "s.duckdb"
    with ValuationStore(path) as first, ValuationStore(path) as second:
        assert first.begin_run("r", "s", "d", {}, 4, {}, 2) == "new"
        with pytest.raises(RunInProgressError, match="sampling s is already in progress"):
            second.begin_run("r2", "s", "d", {}, 8, {}, 2)  # same sampling, larger budget: same draws
        assert second.begin_run("other", "s-other", "d", {}, 4, {}, 2) == "new"  # other samplings are not blocked
        assert first.begin_run("r", "s", "d", {}, 4, {}, 2) == "running"  # the holder may ask again
    with ValuationStore(path) as again:  # closed: released; a killed run's 'running' blocks nothing
        assert again.begin_run("r", "s", "d", {}, 4, {}, 2) == "running"


def test_ensure_store_free_writes_nothing(tmp_path):
    path = tmp_path / "absent.duckdb"
    ensure_store_free(path)
    assert not path.exists()
    with ValuationStore(path):
        pass
    ensure_store_free(path)  # present and free


REGISTER = textwrap.dedent("""
    import sys
    import numpy as np, polars as pl, torch
    from amortval.data.encoding import TabularEncoder
    from amortval.models.valuation_model import ValuationModel
    from amortval.models.valuation_net import ValuationNet
    from amortval.tasks import tracking

    uri, index = sys.argv[1], int(sys.argv[2])
    frame = pl.DataFrame({"x": np.arange(8.0), "label": ["a", "b"] * 4})
    encoder = TabularEncoder.fit(frame, "label")
    net = ValuationNet(encoder.n_encoded, encoder.n_classes, hidden=4, layers=1,
                       generator=torch.Generator().manual_seed(index))
    logged = tracking.log_valuation_run(
        uri=uri, experiment="parallel", run_name=f"parallel-{index}", params={"index": index},
        metrics={"gate_mse_network": 0.1}, history=[], tables={}, figures={},
        model=ValuationModel(encoder, net, 1.0), input_example=frame.head(2).to_pandas(), tags={})
    registered = tracking.register(uri, "parallel-net", model_uri=logged.model_uri, run_id=logged.run_id,
                                   model_id=logged.model_id, gate_passed=True, tags={})
    print("version", registered.version, flush=True)
""")


def register_in_parallel(n: int, tmp_path: Path, figures) -> None:
    uri = tracking.tracking_uri(tmp_path)
    tracking.init_tracking(uri, tmp_path, "parallel")  # migrations once, before the parallel clients
    began = time.perf_counter()

    def register(index: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", REGISTER, uri, str(index)], capture_output=True, text=True,
                              timeout=300)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(register, range(n)))
    seconds = time.perf_counter() - began
    errors = [r.stderr[-2000:] for r in results if r.returncode != 0]
    assert not errors, errors
    versions = sorted(int(r.stdout.split("version")[-1]) for r in results)
    assert versions == list(range(1, n + 1)), versions
    client = MlflowClient(uri, uri)
    registered = sorted(int(v.version) for v in client.search_model_versions("name = 'parallel-net'"))
    assert registered == versions
    figures(f"parallel MLflow registrations ({n} processes)",
            f"0 errors, versions {versions[0]}..{versions[-1]} unique, {seconds:.1f} s")


@pytest.mark.slow
def test_eight_parallel_mlflow_registrations_get_unique_versions(tmp_path, figures, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register_in_parallel(8, tmp_path, figures)
