"""Kill `amortval value` with SIGKILL at random moments, re-run it, lose nothing.

One uninterrupted run gives the reference. Each trial starts the same command on a fresh
store and kills it 1-3 times, then runs it to completion. A kill lands a delay after the
process logs that its flow run began (before that it only imports and validates, and
writes nothing); the delay is drawn from (seed, trial), uniform over the reference flow
run's duration, so loading, valuation, amortization and MLflow logging are all hit.
Afterwards (the store is opened only once every process is dead): stored samples equal
the planned count, no (point, draw) twice, no sample without its batch's done-marker,
samples and final values bit-identical to the reference, and Prefect shows every killed
flow run left non-terminal (Running) while the re-run completed regardless.

Two trials run at a time (each on its own store): a run spends most of its wall time
importing on one core, and the machine has two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName

from demo_files import write_demo_files


N_TRAIN, SAMPLES, BATCH_FITS = 80, 200, 2 * (80 + 1)  # 100 batches of 2 permutation chains
PLANNED = N_TRAIN * SAMPLES
SEED = 20240611


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_files(tmp_path_factory.mktemp("kill-data"), seed=3, n_train=N_TRAIN, n_valid=40, n_new=10)


def command(data: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "amortval.flows.cli", "value", "--data", str(data / "train.parquet"),
            "--valid", str(data / "valid.parquet"), "--target", "label", "--mislabeled-column", "flipped",
            "--samples", str(SAMPLES), "--batch-fits", str(BATCH_FITS), "--epochs", "5", "--seed", "0",
            "--store", str(store)]


def start(data: Path, store: Path, env: dict, log: Path) -> subprocess.Popen:
    # Own session: the kill reaches every process the run started, as a lost machine would.
    with open(log, "ab") as out:
        return subprocess.Popen(command(data, store), env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_flow_start(proc: subprocess.Popen, log: Path, offset: int) -> None:
    """Block until the process logs 'Beginning flow run' (or exits)."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            if b"Beginning flow run" in f.read():
                return
        time.sleep(0.02)


def run_to_completion(data: Path, store: Path, env: dict, log: Path) -> None:
    proc = start(data, store, env, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def flow_seconds(log: Path) -> float:
    """The flow run's duration by Prefect's own log clock: 'Beginning' to 'Finished'."""
    stamps = {}
    for line in log.read_text().splitlines():
        for key in ("Beginning flow run", "Finished in state"):
            if key in line:
                hours, minutes, seconds = line.split(" ", 1)[0].split(":")
                stamps[key] = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return (stamps["Finished in state"] - stamps["Beginning flow run"]) % 86400


def stored(store: Path) -> dict:
    """Everything the assertions need, read while no process holds the store."""
    path = store / "amortval.duckdb"
    if not path.exists():
        return {"batches": 0, "status": None}
    con = duckdb.connect(str(path), read_only=True)
    try:
        status = con.execute("SELECT status FROM runs").fetchall()
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (sampling_id, point, draw)) FROM samples").fetchall()[0]
        orphans = con.execute("SELECT count(*) FROM samples ANTI JOIN batches USING (sampling_id, unit_start)").fetchall()[0][0]
        return {
            "batches": con.execute("SELECT count(*) FROM batches").fetchall()[0][0],
            "status": status[0][0] if status else None,
            "samples": n, "distinct": distinct, "orphans": orphans,
            "rows": con.sql("SELECT point, draw, cardinality, delta, weight, status FROM samples "
                                "ORDER BY point, draw").pl(),
        }
    finally:
        con.close()


def values(store: Path) -> pl.DataFrame:
    (path,) = (store / "values").glob("*.parquet")
    return pl.read_parquet(path)


def flow_runs(store: Path) -> list:
    """This store's flow runs, oldest first (every trial has its own store)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["value-dataset"])))
    mine = [r for r in runs if (r.parameters.get("config") or {}).get("store") == str(store)]
    return sorted(mine, key=lambda r: r.created)


@pytest.fixture(scope="module")
def reference(data, cli_environment, tmp_path_factory):
    store = tmp_path_factory.mktemp("reference") / "store"
    run_to_completion(data, store, cli_environment, store.parent / "run.log")
    return {"seconds": flow_seconds(store.parent / "run.log"), "values": values(store), "rows": stored(store)["rows"]}


def trial(index: int, data: Path, reference: dict, env: dict, root: Path) -> Counter:
    """Kill the run 1-3 times, finish it, check the store, values and Prefect states."""
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(index,)))
    store, log = root / f"trial-{index}" / "store", root / f"trial-{index}.log"
    counts: Counter = Counter(trials=1)
    for _ in range(int(rng.integers(1, 4))):
        delay = float(rng.uniform(0.0, reference["seconds"]))
        offset = log.stat().st_size if log.exists() else 0
        proc = start(data, store, env, log)
        wait_for_flow_start(proc, log, offset)
        try:
            proc.wait(timeout=delay)
            assert proc.returncode == 0, log.read_text()[-3000:]
            counts["finished_before_kill"] += 1
            continue
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        counts["kills"] += 1
        state = stored(store)
        counts["killed before any batch" if state["batches"] == 0 else
               "killed mid-valuation" if state["status"] == "running" else "killed after valuation"] += 1
    run_to_completion(data, store, env, log)

    state = stored(store)
    counts["lost"] += max(0, PLANNED - state["distinct"])
    counts["duplicated"] += state["samples"] - state["distinct"]
    counts["orphans"] += state["orphans"]
    assert (state["samples"], state["distinct"], state["orphans"]) == (PLANNED, PLANNED, 0), (index, state)
    assert state["status"] == "completed"
    assert state["rows"].equals(reference["rows"]), f"trial {index}: samples differ from the uninterrupted run"
    assert values(store).equals(reference["values"]), f"trial {index}: values differ from the uninterrupted run"

    # A SIGKILLed flow run cannot report: it stays Running (or Pending) in Prefect, and
    # the re-run went ahead regardless. Completed ones before the last are runs that
    # finished before their kill landed.
    runs = flow_runs(store)
    assert runs and runs[-1].state.is_completed(), [(r.name, r.state_name) for r in runs]
    earlier = runs[:-1]
    assert all(r.state.is_running() or r.state.is_pending() or r.state.is_completed() for r in earlier), \
        [r.state_name for r in earlier]
    counts["killed flow runs left Running"] += sum(r.state.is_running() for r in earlier)
    counts["killed flow runs left Pending"] += sum(r.state.is_pending() for r in earlier)
    counts["earlier flow runs Completed"] += sum(r.state.is_completed() for r in earlier)
    return counts


def kill_and_resume(trials: int, data: Path, reference: dict, env: dict, root: Path, figures) -> None:
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: trial(i, data, reference, env, root), range(trials)))
    keys = ["trials", "kills", "lost", "duplicated", "orphans", "finished_before_kill", "killed before any batch",
            "killed mid-valuation", "killed after valuation", "killed flow runs left Running",
            "killed flow runs left Pending", "earlier flow runs Completed"]
    counts = {key: sum(r[key] for r in results) for key in keys}  # Counter's sum would drop the zeros
    figures(f"kill/resume, {trials} trials", f"{counts}; {time.perf_counter() - began:.0f} s "
            f"(reference flow run {reference['seconds']:.1f} s)")
    assert counts["trials"] == trials and counts["lost"] == counts["duplicated"] == counts["orphans"] == 0
    assert counts["kills"] >= trials, "too few kills landed to test anything"
    assert counts["killed flow runs left Running"] >= 1, "no kill left a Running flow run behind"


def test_kill_and_resume_a_few_times(data, reference, cli_environment, tmp_path, figures):
    kill_and_resume(3, data, reference, cli_environment, tmp_path, figures)


@pytest.mark.slow
def test_kill_and_resume_twelve_trials(data, reference, cli_environment, tmp_path, figures):
    # 12 trials (~7 min on 2 cores) keep the whole CI run near 30 minutes; 20 took 11.
    kill_and_resume(12, data, reference, cli_environment, tmp_path, figures)
