"""Shared fixtures: quiet, offline, single-threaded, Prefect's test harness, and figures.

Reliability tests report what they measured (kills, lost samples, time to error...)
through the ``figures`` fixture; the lines are printed in pytest's terminal summary, so
they show in CI logs without ``-s``.
"""

from __future__ import annotations

import os
import signal

for _name, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# A shell that starts pytest in the background (`nohup ... &`, some CI wrappers) ignores
# SIGINT, and every child inherits "ignored": Python then never raises KeyboardInterrupt,
# so a served Prefect process (test_deployments) sat through the Ctrl-C a test sends it
# and only the teardown's SIGTERM stopped it. The tests mean a terminal's Ctrl-C: restore it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite) for the whole session: flows run for real."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


FIGURES: list[str] = []


@pytest.fixture(scope="session")
def figures():
    """``figures(name, value)``: record a measured figure for the terminal summary."""
    def record(name: str, value: object) -> None:
        FIGURES.append(f"{name}: {value}")
        print(f"\n[figure] {name}: {value}")

    return record


@pytest.fixture(scope="session")
def bad_input(figures):
    """``bad_input["class | case"] = seconds to error``, summarized at the end of the session
    with the number of cases per class (data, column type, option, path, store, disk,
    scoring). Cases named ``fresh process: ...`` are whole new processes (imports
    included), reported apart."""
    import statistics
    from collections import Counter

    times: dict[str, float] = {}
    yield times
    calls = {k: v for k, v in times.items() if not k.startswith("fresh process")}
    if calls:
        slowest = max(calls, key=calls.get)
        classes = Counter(k.split(" | ")[0] if " | " in k else "other" for k in calls)
        figures("bad input", f"{len(calls)} cases refused (exit 2 / our error, nothing written; "
                f"{', '.join(f'{n} {c}' for c, n in classes.most_common())}); time to error "
                f"median {statistics.median(calls.values()) * 1e3:.1f} ms, max {calls[slowest] * 1e3:.0f} ms "
                f"({slowest})")
    for name in sorted(set(times) - set(calls)):
        figures(f"bad input, {name}", f"{times[name]:.2f} s from process start to exit 2")


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("amortval reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cli_environment(prefect_harness, tmp_path_factory):
    """Environment for ``amortval`` subprocesses: the harness's Prefect API (so tests can
    read the state of their flow runs), a private PREFECT_HOME, one thread per fit."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def read_only_folder(tmp_path):
    """An empty folder nobody can write into, root included, restored afterwards.

    ``chmod 555`` stops ordinary users; root ignores permission bits, so as root the folder
    is also made immutable (``chattr +i``, which root obeys). Skips where neither holds.
    """
    import shutil
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if _writable(folder) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("cannot make a folder read-only here (root without chattr +i support)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _writable(folder) -> bool:
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True
