"""The README's "Serving" and "Tracking" commands, run as written against a valued store.

One module fixture values the demo with a small budget and curates its new rows with the
``amortval`` commands a user types, in a project folder. Then each test runs its README
block (read between ``<!-- serving:begin -->`` / ``<!-- tracking:begin -->`` markers;
only the ports and ``$PWD`` are filled in): ``mlflow models serve`` of the champion network, whose values over
REST must equal ``amortval curate``'s and whose errors must name the column or label in
the body's ``message``; and ``mlflow server`` on the store's database, through whose REST
API the valuation run, its dataset input, artifacts, duration and registered version are
fetched. Servers start in their own session, log to files and are stopped by process
group (``Stack.stop`` of the deployment tests): the test fails if any process outlives them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_deployments import Stack, free_port, readme_commands

MODEL = EXPERIMENT = "amortval-demo"
STORE = "amortval-store"
# A budget that takes seconds; the demo still passes its quality gate with it (seed 0).
VALUE = "amortval value --samples 5 --epochs 2 --pretrain-epochs 1 --folds 2"
CURATE = f"amortval curate --data {STORE}/demo/new.parquet --store {STORE} --mislabeled-column flipped"
SERVING_PORT, TRACKING_PORT = 5001, 5000  # the README's


class Servers(Stack):
    """``Stack`` with the README's MLflow ports mapped to free ones and ``$PWD`` to the project."""

    def __init__(self, tmp: Path):
        super().__init__(tmp, port=0)
        self.project.mkdir()
        self.ports = {SERVING_PORT: free_port(), TRACKING_PORT: free_port()}
        self.run_row: dict = {}  # the valuation's row of the store's ``runs`` table
        self.curated_values = np.empty(0)  # `amortval curate`'s value of each new row, in row order
        self.new_rows = pl.DataFrame()  # the demo's new rows, the model's columns only

    def argv(self, command: str) -> list[str]:
        for readme, port in self.ports.items():
            command = command.replace(f"127.0.0.1:{readme}", f"127.0.0.1:{port}")
            command = command.replace(f"--port {readme}", f"--port {port}")
        return shlex.split(command.replace("$PWD", str(self.project)), comments=True)

    def url(self, readme_port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[readme_port]}{path}"

    @contextmanager
    def server(self, command: str, health: str, timeout: float = 180):
        """Start a long-running README command, wait until ``health`` answers 200, stop it on exit."""
        argv = self.argv(command)
        log = self.logs / f"{argv[0]}-{argv[1]}.log"
        self.background_logs.append(log)
        started = time.time()
        with log.open("w") as out:
            process = subprocess.Popen(argv, cwd=self.project, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            while get(health)[0] != 200:
                assert process.poll() is None, f"{command} exited {process.returncode}:\n{log.read_text()[-4000:]}"
                assert time.time() - started < timeout, f"{command} not ready in {timeout} s:\n{log.read_text()[-4000:]}"
                time.sleep(0.5)
            self.timings[f"{argv[0]} {argv[1]} ready"] = time.time() - started
            yield process
        finally:
            stopping = time.time()
            self.stop(process, command, grace=30)
            self.timings[f"{argv[0]} {argv[1]} stop"] = time.time() - stopping
        assert get(health)[0] is None, f"{command} still answers after its processes were stopped"


def get(url: str) -> tuple[int | None, dict | None]:
    """(status, JSON body); (None, None) when nothing listens."""
    return _call(urllib.request.Request(url))


def post(url: str, payload: dict) -> tuple[int | None, dict | None]:
    return _call(urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                        headers={"Content-Type": "application/json"}))


def _call(request: urllib.request.Request) -> tuple[int | None, dict | None]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError:
        return None, None
    try:
        return status, json.loads(body) if body.strip() else {}
    except ValueError:
        return status, {"text": body.decode(errors="replace")}


def rows(frame: pl.DataFrame) -> dict:
    """A ``dataframe_split`` request; Python floats keep every bit through JSON."""
    return {"dataframe_split": {"columns": frame.columns, "data": [list(r) for r in frame.rows()]}}


@pytest.fixture(scope="module")
def valued(tmp_path_factory, cli_environment, figures):
    """A project folder whose ``amortval-store`` holds a valued demo and a curation of its new rows."""
    import duckdb

    started = time.time()
    stack = Servers(tmp_path_factory.mktemp("serving"))
    stack.env["PREFECT_API_URL"] = cli_environment["PREFECT_API_URL"]  # no temporary Prefect server per command
    stack.run(VALUE, timeout=600)
    stack.run(CURATE, timeout=300)
    store = stack.project / STORE
    with duckdb.connect(str(store / "amortval.duckdb"), read_only=True) as con:
        stack.run_row = dict(zip(("mlflow_run_id", "model_name", "model_version", "wall_seconds"), con.execute(
            "SELECT mlflow_run_id, model_name, model_version, wall_seconds FROM runs").fetchone()))
    assert stack.run_row["model_name"] == MODEL
    curated = pl.concat([pl.read_parquet(store / "curated" / f"new.{part}.parquet") for part in ("curated", "dropped")])
    stack.curated_values = curated.sort("row")["value"].to_numpy()
    stack.new_rows = pl.read_parquet(store / "demo" / "new.parquet").drop("flipped")
    assert len(stack.curated_values) == stack.new_rows.height
    stack.timings["value and curate"] = time.time() - started
    yield stack
    figures("serving/tracking: wall time", f"{time.time() - started:.0f} s; " + "; ".join(
        f"{' '.join(step.split()[:3])}: {seconds:.1f} s" for step, seconds in stack.timings.items()))


def test_every_package_folder_is_packaged():
    """The served model is code that imports ``amortval.tasks.tracking.pyfunc``: a folder left
    out of ``packages`` works in the editable install tests use and fails after ``pip install .``."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("amortval", *init.parent.relative_to(root).parts)) for init in root.rglob("__init__.py")
             if not {".venv", "tests", "benchmarks", "build"} & set(init.relative_to(root).parts)}
    assert found - listed == set()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_served_champion_values_rows_as_curate_does_and_names_bad_input(valued, figures):
    commands = readme_commands("serving")
    serve = next(c for c in commands if c.startswith("mlflow models serve"))
    assert f"models:/{MODEL}@champion" in serve and "--host 127.0.0.1" in serve
    for command in commands[:commands.index(serve)]:
        valued.run(command)
    assert valued.env["MLFLOW_TRACKING_URI"] == f"sqlite:///{valued.project / STORE / 'mlflow.db'}"
    invocations = valued.url(SERVING_PORT, "/invocations")
    with valued.server(serve, valued.url(SERVING_PORT, "/ping")):
        # The README's requests as written: two new rows, then one with a label the model never saw.
        requests = commands[commands.index(serve) + 1:]
        assert len(requests) == 2 and all(c.startswith("curl ") for c in requests), requests
        good, bad = (json.loads(valued.run(c)) for c in requests)
        readme_rows = json.loads(shlex.split(requests[0])[-1])["dataframe_split"]
        assert readme_rows["columns"] == valued.new_rows.columns
        assert readme_rows["data"] == [list(r) for r in valued.new_rows.head(2).rows()]
        np.testing.assert_allclose([p["value"] for p in good["predictions"]], valued.curated_values[:2],
                                   rtol=1e-6, atol=1e-12)
        assert bad["error_code"] == "INVALID_PARAMETER_VALUE", bad
        assert "target column 'label'" in bad["message"] and "'maybe'" in bad["message"], bad

        # Every new row, as one request: the same values `amortval curate` wrote.
        status, body = post(invocations, rows(valued.new_rows))
        assert status == 200, body
        served = np.array([p["value"] for p in body["predictions"]])
        np.testing.assert_allclose(served, valued.curated_values, rtol=1e-6, atol=1e-12)
        figures("serving: max |served - curated|", f"{np.abs(served - valued.curated_values).max():.2e} "
                f"over {len(served)} rows")

        # A missing column (MLflow's schema check) and an unknown label (amortval's): a 400 whose
        # message, not only the stack trace, names it.
        status, body = post(invocations, rows(valued.new_rows.drop("loan_amount").head(3)))
        assert status == 400 and "missing inputs ['loan_amount']" in body["message"], body
        unknown = valued.new_rows.head(3).with_columns(pl.Series("label", ["approved", "approved?", "denied"]))
        status, body = post(invocations, rows(unknown))
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body
        assert "target column 'label'" in body["message"] and "'approved?'" in body["message"], body


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tracking_server_shows_the_run_its_dataset_artifacts_and_champion(valued):
    import mlflow.data

    commands = readme_commands("tracking")
    server = next(c for c in commands if c.startswith("mlflow server"))
    assert f"sqlite:///$PWD/{STORE}/mlflow.db" in server and "--host 127.0.0.1" in server
    for command in commands[:commands.index(server)]:
        valued.run(command)
    run_id = valued.run_row["mlflow_run_id"]
    api = valued.url(TRACKING_PORT, "/api/2.0/mlflow")
    with valued.server(server, valued.url(TRACKING_PORT, "/health")):
        (champion,) = (json.loads(valued.run(c)) for c in commands[commands.index(server) + 1:])
        assert champion["model_version"]["run_id"] == run_id and champion["model_version"]["aliases"] == ["champion"]

        status, body = get(f"{api}/experiments/get-by-name?experiment_name={EXPERIMENT}")
        assert status == 200, body
        experiment_id = body["experiment"]["experiment_id"]
        status, body = post(f"{api}/runs/search", {"experiment_ids": [experiment_id]})
        assert status == 200, body
        kinds = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]}.get("amortval.kind")
                 for r in body["runs"]}
        assert kinds.get(run_id, "missing") is None and list(kinds.values()).count("curation") == 1, kinds

        status, body = get(f"{api}/runs/get?run_id={run_id}")
        assert status == 200, body
        run = body["run"]
        # The training table as the run's dataset input: the UI's Dataset column.
        (dataset_input,) = run["inputs"]["dataset_inputs"]
        train = pl.read_parquet(valued.project / STORE / "demo" / "train.parquet").drop("flipped").to_pandas()
        assert dataset_input["dataset"]["name"] == "demo"
        assert dataset_input["dataset"]["digest"] == mlflow.data.from_pandas(train).digest
        assert {"key": "mlflow.data.context", "value": "training"} in dataset_input["tags"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert params["sampling.samples"] == "5" and params["amortization.epochs"] == "2", params
        assert metrics["gate_passed"] == 1.0 and metrics["samples_stored"] == 500 * 5, metrics
        # The run lasts the whole valuation (the flow's own clock, less registering the model).
        duration = (run["info"]["end_time"] - run["info"]["start_time"]) / 1000
        assert duration >= valued.run_row["wall_seconds"] - 2.0, (duration, valued.run_row)

        listed = {}
        for folder in ("", "figures", "tables"):
            status, body = get(f"{api}/artifacts/list?run_id={run_id}" + (f"&path={folder}" if folder else ""))
            assert status == 200, body
            listed[folder] = {f["path"] for f in body.get("files", [])}
        assert {"summary.md", "figures", "tables"} <= listed[""], listed
        assert {"figures/value_distribution.png", "figures/training_curve.png"} <= listed["figures"], listed
        assert "tables/values.parquet" in listed["tables"], listed
        with urllib.request.urlopen(valued.url(TRACKING_PORT, f"/get-artifact?path=summary.md&run_uuid={run_id}"),
                                    timeout=30) as response:
            summary = response.read().decode()
        assert "](figures/value_distribution.png)" in summary, summary

        # The registered version with the champion alias is this run's logged model.
        version = valued.run_row["model_version"]
        status, body = get(f"{api}/model-versions/get?name={MODEL}&version={version}")
        assert status == 200, body
        model_version = body["model_version"]
        assert model_version["run_id"] == run_id and "champion" in model_version["aliases"], model_version
        (output,) = run["outputs"]["model_outputs"]
        assert model_version["source"] == f"models:/{output['model_id']}", (model_version, output)
