"""prefect.yaml's deployments: checked as YAML (fast), then deployed and run for real.

The slow tests run the README's "Scheduling" commands as written (read from its
``scheduling`` and ``serve`` blocks; only the port differs: every deployment, the inbox's
with a file dropped into it) against a real Prefect server with a work pool and a
process worker, and against ``python -m
amortval.flows.serve``, from a copy of the project in a temporary folder, so the store
is written there. Every process is started in its own session, logs to a file (an
orphaned child holding a pipe would block the test) and is stopped in a ``finally``:
SIGINT, then SIGTERM, then SIGKILL to its process group; the test fails if it or any
of its descendants is still alive afterwards.
"""

from __future__ import annotations

import inspect
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from readme_blocks import readme_commands

ROOT = Path(__file__).resolve().parents[1]
README_PORT = "4200"
# Commands that run until stopped: started in the background, in this order of stopping last.
LONG_RUNNING = (("prefect", "server", "start"), ("prefect", "worker", "start"), ("python", "-m", "amortval.flows.serve"))
RUN_TIMEOUT = 240  # seconds for one `prefect deployment run --watch` (the demo valuation: ~1 min)


def test_deployments_point_at_flows_with_known_parameters_and_schedules():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly-demo", "nightly-curation", "inbox-curation"} <= names
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]
        schedules = deployment["schedules"]
        assert schedules and all(len(s["cron"].split()) == 5 if "cron" in s else s["interval"] > 0
                                 for s in schedules), deployment["name"]
    inbox = next(d for d in spec["deployments"] if d["name"] == "inbox-curation")
    assert [s.get("interval") for s in inbox["schedules"]] == [900]
    assert "pull" not in spec, "a set_working_directory pull step breaks workers (see prefect.yaml)"


def test_served_deployments_are_the_yaml_ones():
    from amortval.flows.serve import runner_deployments

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    served = {d.name: d for d in runner_deployments(spec)}
    assert set(served) == {d["name"] for d in spec["deployments"]}
    for deployment in spec["deployments"]:
        runner = served[deployment["name"]]
        assert runner.parameters == (deployment.get("parameters") or {})
        assert [(getattr(s.schedule, "cron", None), getattr(s.schedule, "interval", None), s.schedule.timezone)
                for s in runner.schedules] == [
            (s.get("cron"), s.get("interval") and timedelta(seconds=s["interval"]), s.get("timezone"))
            for s in deployment["schedules"]]
        assert runner.entrypoint.startswith("amortval.flows."), runner.entrypoint
        assert runner.work_pool_name is None
    with pytest.raises(SystemExit, match="no-such"):
        runner_deployments(spec, ["no-such"])


# ---------------------------------------------------------------- the README, run for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children re-parented away are caught by their group)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _group(pgid: int) -> set[int]:
    """Live processes of a process group (its session: started with start_new_session)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid and _alive(int(entry.name)):
                    members.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return members


class Stack:
    """The README's commands in a project folder, with the environment a user's shell has."""

    def __init__(self, tmp: Path, port: int):
        self.tmp, self.port = tmp, port
        self.project = tmp / "project"
        self.logs = tmp / "logs"
        self.logs.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        })
        self.env = env
        self.timings: dict[str, float] = {}
        self.background_logs: list[Path] = []

    def argv(self, command: str) -> list[str]:
        return shlex.split(command.replace(README_PORT, str(self.port)), comments=True)

    def run(self, command: str, timeout: float = 120) -> str:
        """A foreground command; ``export`` sets the environment of the later ones."""
        argv = self.argv(command)
        if argv[0] == "export":
            self.env.update(assignment.split("=", 1) for assignment in argv[1:])
            return ""
        assert tuple(argv[:3]) not in LONG_RUNNING, command
        name = "-".join(Path(arg).name for arg in argv[:2])  # `cp a/b c/`: no folders in the log's name
        log = self.logs / f"{len(list(self.logs.iterdir())):02d}-{name}.log"
        started = time.time()
        with log.open("w") as out:
            done = subprocess.run(argv, cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        self.timings[f"{len(self.timings):02d} {command}"] = time.time() - started
        output = log.read_text()
        if done.returncode:  # a failed flow run's traceback is in the worker's (or serve's) log
            others = "".join(f"\n--- {p.name}:\n{p.read_text()[-3000:]}" for p in self.background_logs)
            pytest.fail(f"{command} exited {done.returncode}:\n{output[-3000:]}{others}")
        return output

    @contextmanager
    def background(self, command: str, ready, timeout: float = 120, stop_grace: float = 30):
        """Start a long-running command, wait until ``ready(log_text)``, stop it on exit."""
        argv = self.argv(command)
        assert tuple(argv[:3]) in LONG_RUNNING, command
        log = self.logs / f"{argv[1]}-{argv[2]}.log"
        self.background_logs.append(log)
        started = time.time()
        with log.open("w") as out:
            process = subprocess.Popen(argv, cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            while not ready(log.read_text()):
                assert process.poll() is None, f"{command} exited {process.returncode}:\n{log.read_text()[-4000:]}"
                assert time.time() - started < timeout, f"{command} not ready in {timeout} s:\n{log.read_text()[-4000:]}"
                time.sleep(0.5)
            self.timings[f"{len(self.timings):02d} {command} (ready)"] = time.time() - started
            yield process, log
        finally:
            stopping = time.time()
            self.stop(process, command, stop_grace)
            self.timings[f"{len(self.timings):02d} {command} (stop)"] = time.time() - stopping

    def stop(self, process: subprocess.Popen, command: str, grace: float) -> None:
        """SIGINT (Ctrl-C), then SIGTERM, then SIGKILL to the group; assert nothing is left."""
        tree = _descendants(process.pid) | {process.pid}
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if process.poll() is not None and not any(_alive(p) for p in tree | _group(process.pid)):
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.time() + wait
            while time.time() < deadline and (process.poll() is None or _group(process.pid)):
                time.sleep(0.2)
        left = {p for p in tree | _group(process.pid) if _alive(p)}
        for pid in left:  # never leave one behind, even when the test fails below
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, f"{command}: processes {sorted(left)} outlived it"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, figures):
    """A copy of the project and the README's Prefect server, up for the module."""
    tmp = tmp_path_factory.mktemp("deployments")
    stack = Stack(tmp, free_port())
    shutil.copytree(ROOT, stack.project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "amortval-store", "mlflow.db", "mlruns",
        "mlartifacts", "*.duckdb", "*.duckdb.wal", ".store"))
    assert (stack.project / "prefect.yaml").read_bytes() == (ROOT / "prefect.yaml").read_bytes()
    server = next(c for c in readme_commands("scheduling") if tuple(stack.argv(c)[:3]) == LONG_RUNNING[0])
    started = time.time()
    with stack.background(server, lambda _log: _healthy(stack.port), timeout=180):
        yield stack
    figures("deployments: module wall time", f"{time.time() - started:.0f} s; "
            + "; ".join(f"{c[3:]}: {s:.0f} s" for c, s in sorted(stack.timings.items())))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_shipped_deployments_run_on_a_worker_as_the_readme_says(stack):
    commands = readme_commands("scheduling")
    assert any(c.startswith("export PREFECT_API_URL=") for c in commands)
    runs = [c for c in commands if c.startswith("prefect deployment run")]
    assert runs == ["prefect deployment run value-dataset/nightly-demo --watch",
                    "prefect deployment run curate-dataset/nightly-curation --watch",
                    "prefect deployment run curate-inbox/inbox-curation --watch"]
    worker = next(c for c in commands if tuple(stack.argv(c)[:3]) == LONG_RUNNING[1])
    for command in commands[:commands.index(worker)]:
        if tuple(stack.argv(command)[:3]) != LONG_RUNNING[0]:  # the fixture runs the server
            stack.run(command)
    store = stack.project / "amortval-store"
    assert not store.exists()
    with stack.background(worker, lambda log: "started!" in log, stop_grace=10) as (_, log):
        for command in commands[commands.index(worker) + 1:]:
            output = stack.run(command, timeout=RUN_TIMEOUT)  # --watch: exit 0 only when Completed
            assert command not in runs or "Flow run finished successfully in 'Completed'" in output, output[-3000:]
        worker_log = log.read_text()
    assert worker_log.count("submitting flow run") == 3, worker_log[-3000:]

    # The valuation wrote values, samples and the model into the project folder's store...
    assert len(list((store / "values").glob("*.parquet"))) == 1
    assert (store / "mlflow.db").stat().st_size > 0
    import duckdb
    import polars as pl

    with duckdb.connect(str(store / "amortval.duckdb"), read_only=True) as con:
        status, model, version = con.execute("SELECT status, model_name, model_version FROM runs").fetchone()
        scored, kept = con.execute("SELECT count(*), sum(kept::INT) FROM scores "
                                   "WHERE NOT starts_with(curation_id, 'inbox-')").fetchone()
        inbox = con.execute("SELECT file_name, status, \"rows\", kept, model_uri FROM inbox_files").fetchall()
    assert (status, model, version) == ("completed", "amortval-demo", "1")
    # ...and the curation scored every new row with it and split them into kept and dropped...
    new = pl.read_parquet(store / "demo" / "new.parquet")
    curated = pl.read_parquet(store / "curated" / "new.curated.parquet")
    dropped = pl.read_parquet(store / "curated" / "new.dropped.parquet")
    assert scored == len(new) == len(curated) + len(dropped) and kept == len(curated) and len(dropped) > 0
    assert {"value", "reason"} <= set(dropped.columns) and "flipped" in dropped.columns
    # ...and so did the inbox's, for the same file dropped into the inbox, recorded by its content.
    [inbox_curated] = (store / "curated" / "inbox").glob("new.*.curated.parquet")
    [inbox_dropped] = (store / "curated" / "inbox").glob("new.*.dropped.parquet")
    assert inbox == [("new.parquet", "processed", len(new), len(curated), "models:/amortval-demo/1")]
    assert pl.read_parquet(inbox_curated).equals(curated) and pl.read_parquet(inbox_dropped).equals(dropped)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_runs_the_same_deployments_without_a_work_pool(stack):
    commands = readme_commands("serve")
    serve = next(c for c in commands if tuple(stack.argv(c)[:3]) == LONG_RUNNING[2])
    for command in commands[:commands.index(serve)]:
        stack.run(command)
    with stack.background(serve, lambda log: "being served" in log, timeout=120) as (process, log):
        runs = [c for c in commands[commands.index(serve) + 1:] if c.startswith("prefect deployment run")]
        assert runs == ["prefect deployment run value-dataset/nightly-demo --watch"]
        for command in commands[commands.index(serve) + 1:]:
            output = stack.run(command, timeout=RUN_TIMEOUT)
            assert command not in runs or "Flow run finished successfully in 'Completed'" in output, output[-3000:]
        served_log = log.read_text()
        # The run happened in this process's folder: the store it valued into (or found) is there.
        assert "Finished in state Completed()" in served_log, served_log[-3000:]
        assert (stack.project / "amortval-store" / "amortval.duckdb").exists()
        assert list((stack.project / "amortval-store" / "values").glob("*.parquet"))
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: it must exit by itself
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "All deployments have been paused" in log.read_text()
