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

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import psutil
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


def command(data: Path, store: Path, batch_fits: int = BATCH_FITS) -> list[str]:
    # --batch-fits changes no result (not part of the run's identity): one reference serves all.
    return [sys.executable, "-m", "amortval.flows.cli", "value", "--data", str(data / "train.parquet"),
            "--valid", str(data / "valid.parquet"), "--target", "label", "--mislabeled-column", "flipped",
            "--samples", str(SAMPLES), "--target-error", "off", "--batch-fits", str(batch_fits), "--epochs", "5", "--seed", "0",
            "--store", str(store)]


def start(data: Path, store: Path, env: dict, log: Path, batch_fits: int = BATCH_FITS,
          argv: list[str] | None = None) -> subprocess.Popen:
    # Own session: the kill reaches every process the run started, as a lost machine would.
    with open(log, "ab") as out:
        return subprocess.Popen(argv or command(data, store, batch_fits), env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_line(proc: subprocess.Popen, log: Path, offset: int, text: str = "Beginning flow run") -> bool:
    """Block until the process logs ``text`` after ``offset`` (True), or exits (False)."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(offset)
            if text.encode() in f.read():
                return True
        time.sleep(0.02)
    return False


def run_to_completion(data: Path, store: Path, env: dict, log: Path, batch_fits: int = BATCH_FITS) -> None:
    proc = start(data, store, env, log, batch_fits)
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
    return {"seconds": flow_seconds(store.parent / "run.log"), "values": values(store), "rows": stored(store)["rows"],
            "store": store}


def mlflow_statuses(store: Path) -> Counter:
    """Status -> number of MLflow runs in the store's tracking database."""
    path = store / "mlflow.db"
    if not path.exists():
        return Counter()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return Counter(status for (status,) in con.execute("SELECT status FROM runs"))


def trial(index: int, data: Path, reference: dict, env: dict, root: Path) -> Counter:
    """Kill the run 1-3 times, finish it, check the store, values and Prefect states."""
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(index,)))
    store, log = root / f"trial-{index}" / "store", root / f"trial-{index}.log"
    counts: Counter = Counter(trials=1)
    for _ in range(int(rng.integers(1, 4))):
        delay = float(rng.uniform(0.0, reference["seconds"]))
        offset = log.stat().st_size if log.exists() else 0
        proc = start(data, store, env, log)
        wait_for_line(proc, log, offset)
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
    # A kill during MLflow logging leaves that run RUNNING; the re-run ends it KILLED.
    tracked = mlflow_statuses(store)
    assert tracked["RUNNING"] == 0 and tracked["FINISHED"] >= 1, (index, tracked)
    counts["MLflow runs ended KILLED"] += tracked["KILLED"]

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
            "killed flow runs left Pending", "earlier flow runs Completed", "MLflow runs ended KILLED"]
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


# -- SIGTERM and SIGINT: stop within seconds, one line, no process left, resume exactly ---------
LONG_BATCH = 100_000  # --batch-fits above the budget's 16,200 fits: one batch, tens of seconds in one thread
LINE = re.compile(r"amortval: error: interrupted \((SIGTERM|SIGINT)\); (\d+) of (\d+) batches stored; "
                  r"re-run the same command to resume")


def user_environment(env: dict, home: Path) -> dict:
    """A user's setting: no Prefect API configured, so amortval starts Prefect's temporary
    server, the child process that must not outlive it (under a PREFECT_HOME of its own)."""
    return {k: v for k, v in env.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(home)}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def interrupt(proc: subprocess.Popen, log: Path, offset: int, signum: int, *, after: str, delay: float,
              group: bool) -> dict:
    """``delay`` s after the log shows ``after``, send ``signum`` to the process (``kill PID``) or
    its whole process group (Ctrl-C in a terminal); what it printed, its exit and its children."""
    assert wait_for_line(proc, log, offset, after), f"{after!r} never appeared: {log.read_text()[-3000:]}"
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before the signal: nothing was tested"
    children = psutil.Process(proc.pid).children(recursive=True)
    commands = [" ".join(c.cmdline()) for c in children]
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, signum)
    code = proc.wait(timeout=120)
    seconds = time.monotonic() - sent
    time.sleep(0.2)  # let a dying child finish dying
    with open(log, "rb") as f:
        f.seek(offset)
        output = f.read().decode(errors="replace")
    return {"code": code, "seconds": seconds, "output": output, "children": commands,
            "survivors": [c.pid for c in children if _alive(c)]}


def check_stopped(result: dict, signum: int, store: Path) -> None:
    """Exit 128 + signal, one line naming what is stored (the store agrees), no traceback,
    Prefect's temporary server among the children and none of them left."""
    output = result["output"]
    assert result["code"] == 128 + signum, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("amortval: error:")]
    assert len(lines) == 1, output[-3000:]
    match = LINE.fullmatch(lines[0])
    assert match and match.group(1) == signal.Signals(signum).name, lines[0]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert int(match.group(2)) == stored(store)["batches"], (lines[0], stored(store)["batches"])
    assert any("prefect.server.api.server" in c for c in result["children"]), \
        "no temporary API server was running: the child check would mean nothing"
    assert result["survivors"] == [], f"children outlived amortval: {result['survivors']}"
    assert result["seconds"] < 10, result["seconds"]


def signal_trial(name: str, plan: list[tuple], batch_fits: int, data: Path, reference: dict, env: dict,
                 root: Path) -> dict:
    """Interrupt the run once per (signal, group, delay) in ``plan``, each ``delay`` s after the
    run's plan line, then finish it; the stop times. Values must equal the uninterrupted run's."""
    store, log = root / name / "store", root / f"{name}.log"
    env = user_environment(env, root / name / "prefect-home")
    stops = []
    for signum, group, delay in plan:
        offset = log.stat().st_size if log.exists() else 0
        proc = start(data, store, env, log, batch_fits)
        result = interrupt(proc, log, offset, signum, after="plan:", delay=delay, group=group)
        check_stopped(result, signum, store)
        stops.append((signal.Signals(signum).name, "group" if group else "process", result["seconds"]))
    run_to_completion(data, store, env, log, batch_fits)
    state = stored(store)
    assert (state["samples"], state["distinct"], state["orphans"], state["status"]) == \
        (PLANNED, PLANNED, 0, "completed"), (name, state)
    assert state["rows"].equals(reference["rows"]), f"{name}: samples differ from the uninterrupted run"
    assert values(store).equals(reference["values"]), f"{name}: values differ from the uninterrupted run"
    assert mlflow_statuses(store)["RUNNING"] == 0
    con = duckdb.connect(str(store / "amortval.duckdb"), read_only=True)
    try:
        longest = con.execute("SELECT max(seconds) FROM batches").fetchall()[0][0]
    finally:
        con.close()
    return {"stops": stops, "longest batch": longest}


def curate_trial(data: Path, reference: dict, env: dict, root: Path) -> dict:
    """``amortval curate`` stopped by SIGTERM inside its flow: the same one line, no child left,
    no temporary file, and the store free for the next command (as after a finished one)."""
    store = root / "curate" / "store"
    shutil.copytree(reference["store"], store)  # a store with a registered model, moved (relocated)
    env, log = user_environment(env, root / "curate" / "prefect-home"), root / "curate.log"
    # 10 rows score in well under the 0.5 s the signal waits: a large file keeps the flow busy
    big = root / "curate" / "new-200k.parquet"
    pl.concat([pl.read_parquet(data / "new.parquet")] * 20_000).write_parquet(big)
    argv = [sys.executable, "-m", "amortval.flows.cli", "curate", "--data", str(big),
            "--mislabeled-column", "flipped", "--store", str(store), "--model-version", "1"]  # gate may have failed
    proc = start(data, store, env, log, argv=argv)
    result = interrupt(proc, log, 0, signal.SIGTERM, after="Beginning flow run", delay=0.5, group=False)
    lines = [line for line in result["output"].splitlines() if line.startswith("amortval: error:")]
    assert result["code"] == 143 and lines == [
        "amortval: error: interrupted (SIGTERM); the curation did not finish; re-run the same command"], \
        result["output"][-3000:]
    assert "Traceback" not in result["output"] and result["survivors"] == [], result
    assert not list(store.rglob("*.tmp")), "an interrupted write left a temporary file"
    duckdb.connect(str(store / "amortval.duckdb"), read_only=True).close()  # not held: the process is gone
    return {"stops": [("SIGTERM", "curate", result["seconds"])]}


def _stops(stops: list[tuple]) -> str:
    return ", ".join(f"{name} to the {how} {seconds:.1f} s" for name, how, seconds in stops)


@pytest.mark.slow
def test_sigterm_and_sigint_stop_within_seconds_and_the_re_run_resumes(data, reference, cli_environment, tmp_path,
                                                                      figures):
    """TERM to the process (``kill PID``) and INT to its group (Ctrl-C): twice with the run's only
    batch (all 16,200 fits, which no signal can stop a thread from computing) in flight, and
    twice between short batches, each run then finished; and curate stopped by TERM."""
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(99,)))
    trials = [
        lambda: signal_trial("long-batch", [(signal.SIGTERM, False, 2.0), (signal.SIGINT, True, 2.0)], LONG_BATCH,
                             data, reference, cli_environment, tmp_path),
        lambda: signal_trial("short-batches", [(signal.SIGINT, True, float(rng.uniform(0.5, 4.0))),
                                               (signal.SIGTERM, False, float(rng.uniform(0.5, 4.0)))],
                             BATCH_FITS, data, reference, cli_environment, tmp_path),
        lambda: curate_trial(data, reference, cli_environment, tmp_path),
    ]
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        long_batch, short, curate = pool.map(lambda run: run(), trials)
    figures("signals", f"exit after the signal with the long batch ({long_batch['longest batch']:.0f} s) in flight: "
            f"{_stops(long_batch['stops'])}; between short batches: {_stops(short['stops'])}; "
            f"{_stops(curate['stops'])}; one line each, no child left, re-runs bit-identical; "
            f"{time.perf_counter() - began:.0f} s")


# -- a full disk mid-run: one line, no temp file, the re-run after freeing space resumes -------
DISK_FULL_RUN = textwrap.dedent("""
    import json, os, shutil, subprocess, sys, time
    mount, command, env, log, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mount], check=True)
    with open(log, "ab") as f:
        run = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT)
    while b"plan:" not in open(log, "rb").read() and run.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    filler = open(os.path.join(mount, "filler"), "wb", buffering=0)
    for size in (1 << 20, 1 << 12, 1):  # to the last byte: a small write must fail too
        try:
            while True:
                filler.write(bytes(size))
        except OSError:
            pass
    first = run.wait()
    files = sorted(os.path.relpath(os.path.join(d, n), mount) for d, _, ns in os.walk(mount) for n in ns)
    filler.close()
    os.remove(os.path.join(mount, "filler"))
    with open(log, "ab") as f:
        second = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    store = os.path.join(mount, "store")
    for name in ("amortval.duckdb", "values"):
        (shutil.copytree if name == "values" else shutil.copy)(os.path.join(store, name), os.path.join(out, name))
    json.dump({"first": first, "second": second, "files": files}, open(os.path.join(out, "result.json"), "w"))
""")


@pytest.mark.slow
def test_a_disk_filling_up_mid_run_is_one_line_and_the_re_run_resumes(data, reference, cli_environment, tmp_path,
                                                                       figures):
    """On a real 48 MB tmpfs (in a user and mount namespace, so no root is needed where the
    system allows them), another process fills the disk a second into the valuation: the run
    ends with one line naming the store file and the full disk, leaves no temporary file,
    and after the space is freed the same command resumes to values bit-identical to an
    uninterrupted run."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here: ENOSPC is injected in-process instead (test_storage.py)")
    mount, out = tmp_path / "tmpfs", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    env = user_environment(cli_environment, tmp_path / "prefect-home")
    log = tmp_path / "run.log"
    began = time.perf_counter()
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", DISK_FULL_RUN,
                    str(mount), json.dumps(command(data, mount / "store")), json.dumps(env), str(log), str(out)],
                   check=True, timeout=600)
    result = json.loads((out / "result.json").read_text())
    output = log.read_text()
    lines = [line for line in output.splitlines() if line.startswith("amortval: error:")]
    assert result["first"] == 2 and len(lines) == 1, output[-3000:]
    assert "the disk is full" in lines[0] and str(mount / "store") in lines[0], lines[0]
    assert "Traceback" not in output, output[-3000:]
    assert not [f for f in result["files"] if f.endswith((".tmp", ".tmp.npz")) or "amortval-probe" in f], \
        result["files"]
    assert result["second"] == 0, output[-3000:]
    state = stored(out)
    assert state["rows"].equals(reference["rows"]) and values(out).equals(reference["values"])
    figures("disk full", f"48 MB tmpfs filled 1 s into the valuation: exit 2, '{lines[0][:120]}...'; "
            f"re-run resumed, values bit-identical; {time.perf_counter() - began:.0f} s")
