"""Transient failures are retried, user errors are not (a real Prefect flow run).

The fault is injected where a batch builds its sampler (``make_sampler``): a lost worker
or a crashed fit looks the same to the flow, an exception out of the task.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

import amortval.tasks.marginals as marginals
from amortval.data.store import ValuationStore
from amortval.errors import DataValidationError
from valuing import value as run_flow
from demo_files import write_demo_files

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_TRAIN, SAMPLES = 30, 6
OPTIONS = dict(target="label", samples=SAMPLES, seed=1, epochs=2, batch_fits=2 * (N_TRAIN + 1),
               mislabeled_column="flipped")  # segments of 2 permutation chains (batches: 1-2 chains each)
FAULTY_BATCH = 1
FAULTY_UNIT = 2 * FAULTY_BATCH  # first unit (permutation chain) of that batch


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_demo_files(tmp_path_factory.mktemp("retries"), seed=6, n_train=N_TRAIN, n_valid=30, n_new=5)


def run(files, store):
    return run_flow(data=str(files / "train.parquet"), valid=str(files / "valid.parquet"), store=str(store),
                         **OPTIONS)


def inject(monkeypatch, error: Exception, times: int) -> list[int]:
    """Make batch FAULTY_BATCH raise ``error`` on its first ``times`` attempts; count attempts."""
    attempts, lock, real = [], threading.Lock(), marginals.make_sampler

    class Faulty:
        def __init__(self, sampler):
            self.sampler = sampler

        def run(self, utility, units, seed):
            if units.start == FAULTY_UNIT:
                with lock:
                    attempts.append(units.start)
                    if len(attempts) <= times:
                        raise error
            return self.sampler.run(utility, units, seed)

    monkeypatch.setattr(marginals, "make_sampler", lambda sampling, n: Faulty(real(sampling, n)))
    return attempts


def batch_task_runs(store) -> list:
    with get_client(sync_client=True) as client:
        flows = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["value-dataset"])))
        (flow_run,) = [f for f in flows if (f.parameters.get("config") or {}).get("store") == str(store)]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    return [t for t in runs if t.name.startswith("evaluate-batch")]


def stored_samples(store, sampling_id: str) -> pl.DataFrame:
    with ValuationStore(store / "amortval.duckdb") as db:
        return db.samples(sampling_id)


def test_a_batch_that_fails_once_is_retried_and_the_run_completes(files, tmp_path, monkeypatch, figures):
    reference = run(files, tmp_path / "reference")
    attempts = inject(monkeypatch, RuntimeError("worker lost (injected)"), times=1)
    result = run(files, tmp_path / "faulty")
    assert len(attempts) == 2, "failed once, then succeeded on the retry"
    tasks = batch_task_runs(tmp_path / "faulty")
    with ValuationStore(tmp_path / "faulty" / "amortval.duckdb") as db:
        batches = db.done_segments(result["sampling_id"])
    assert len(tasks) == len(batches) >= 3 and all(t.state.is_completed() for t in tasks), \
        "one task run per committed batch; the retry reran the same task run"
    assert sorted(t.run_count for t in tasks) == [1] * (len(tasks) - 1) + [2], "only the faulty batch ran twice"
    assert result["samples_stored"] == N_TRAIN * SAMPLES
    assert stored_samples(tmp_path / "faulty", result["sampling_id"]).equals(
        stored_samples(tmp_path / "reference", reference["sampling_id"]))
    assert pl.read_parquet(result["values_path"]).equals(pl.read_parquet(reference["values_path"]))
    figures("transient failure", "batch failed once, retried (run_count 2), run completed, values identical")


def test_a_validation_error_is_not_retried(files, tmp_path, monkeypatch, figures):
    attempts = inject(monkeypatch, DataValidationError("column 'x' is unusable (injected)", "x"), times=99)
    with pytest.raises(DataValidationError, match="injected"):
        run(files, tmp_path)
    assert len(attempts) == 1, "an AmortvalError is the user's to fix: retrying cannot help"
    (faulty,) = [t for t in batch_task_runs(tmp_path) if t.state.is_failed()]
    assert faulty.run_count == 1
    con = duckdb.connect(str(tmp_path / "amortval.duckdb"), read_only=True)
    try:
        (run_id, sampling_id) = con.execute("SELECT run_id, sampling_id FROM runs").fetchall()[0]
    finally:
        con.close()
    with ValuationStore(tmp_path / "amortval.duckdb") as db:
        assert FAULTY_UNIT not in {start for start, _ in db.done_segments(sampling_id)}
        assert db.run(run_id)["status"] == "running", "left resumable"
    figures("validation error", "failed batch not retried (attempts 1, run_count 1), run left resumable")
