"""The inbox flow on a tiny valued store: real Prefect runs, DuckDB file and MLflow registry.

One lifecycle, in the order a scheduled deployment meets it: a good and a bad file; the
same files again plus a renamed copy; a second good file that brings the kept rows past
the re-sampling threshold; a run with nothing new; one after a killed re-valuation. Then
the README's quickstart, run as written (slow: it values the demo first).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from amortval.data.demo import make_demo
from amortval.flows.inbox import curate_inbox
from amortval.tasks.prepare import store_paths
from readme_blocks import README, readme_commands
from valuing import value

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = dict(target="label", samples=6, seed=0, epochs=5, batch_fits=50, mislabeled_column="flipped")
N_TRAIN = 300  # the problem of tests/test_flows.py: its network beats a constant, so a champion exists


@pytest.fixture(scope="module")
def valued(tmp_path_factory):
    """The tiny problem of tests/test_flows.py (its network passes the gate: a champion exists)."""
    root = tmp_path_factory.mktemp("data")
    demo = make_demo(seed=1, n_train=N_TRAIN, n_valid=30, n_new=30)
    demo.train.write_csv(root / "train.csv")
    demo.valid.drop("flipped").write_parquet(root / "valid.parquet")
    demo.new.write_parquet(root / "batch-1.parquet")
    make_demo(seed=2, n_train=4, n_valid=4, n_new=30).new.write_parquet(root / "batch-2.parquet")
    store = tmp_path_factory.mktemp("store")
    result = value(data=str(root / "train.csv"), valid=str(root / "valid.parquet"), store=str(store), **OPTIONS)
    return root, store, result


def _query(store, sql: str) -> list[tuple]:
    with duckdb.connect(str(store_paths(store)["duckdb"]), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_inbox_curates_each_file_once_sets_bad_ones_aside_and_resamples_at_the_threshold(valued):
    root, store, first = valued
    inbox = store / "inbox"
    inbox.mkdir()
    shutil.copy(root / "batch-1.parquet", inbox)
    bad = pl.read_parquet(root / "batch-1.parquet").with_columns(pl.lit("maybe").alias("label"))
    bad.write_csv(inbox / "bad-labels.csv")
    (inbox / "notes.txt").write_text("not a table")
    options = dict(store=str(store), mislabeled_column="flipped")

    one = curate_inbox(**options, resample_after_rows=10_000)
    assert (one["processed"], one["rejected"], one["skipped"]) == (1, 1, 0)
    assert one["ignored_files"] == ["notes.txt"] and one["resampled"] == []
    good = next(f for f in one["files"] if f["status"] == "processed")
    kept_1 = good["rows_kept"]
    curated, dropped = pl.read_parquet(good["curated"]), pl.read_parquet(good["dropped"])
    assert curated.height == kept_1 and curated.height + dropped.height == 30 and dropped.height > 0
    assert {"value", "reason"} <= set(curated.columns) and good["model_version"] == str(first["model_version"])
    assert _query(store, f"SELECT count(*) FROM scores WHERE curation_id = '{good['curation_id']}'") == [(30,)]
    # The bad file is out of the inbox, with its error beside it and in the store.
    assert not (inbox / "bad-labels.csv").exists() and (inbox / "rejected" / "bad-labels.csv").exists()
    error_text = (inbox / "rejected" / "bad-labels.csv.error.txt").read_text()
    assert "'maybe'" in error_text
    rows = dict(((name, status), (kept, error)) for name, status, kept, error in _query(
        store, "SELECT file_name, status, kept, error FROM inbox_files"))
    assert rows[("batch-1.parquet", "processed")] == (kept_1, None)
    assert "'maybe'" in rows[("bad-labels.csv", "rejected")][1]

    # Same content, new name: skipped; and the threshold is not reached by the kept rows so far.
    shutil.copy(inbox / "batch-1.parquet", inbox / "batch-1-again.parquet")
    two = curate_inbox(**options, resample_after_rows=kept_1 + 1)
    assert (two["processed"], two["rejected"], two["skipped"]) == (0, 0, 2) and two["resampled"] == []
    assert _query(store, "SELECT count(*) FROM runs") == [(1,)]

    # A second good file crosses it: the grown table is valued as a new run of the same model.
    shutil.copy(root / "batch-2.parquet", inbox)
    three = curate_inbox(**options, resample_after_rows=kept_1 + 1)
    assert (three["processed"], three["rejected"], three["skipped"]) == (1, 0, 2)
    kept_2 = three["files"][0]["rows_kept"]
    [resampled] = three["resampled"]
    assert resampled["rows"] == kept_1 + kept_2 and resampled["model_name"] == first["model_name"]
    runs = _query(store, "SELECT r.run_id, d.n_rows, r.model_name, r.model_version, r.status FROM runs r "
                         "JOIN datasets d USING (dataset_id) ORDER BY r.created_at")
    assert len(runs) == 2 and runs[0][0] == first["run_id"]
    run_id, n_rows, model, version, status = runs[1]
    assert run_id == resampled["run_id"] and (model, version, status) == (first["model_name"], "2", "completed")
    # Its training table: the N_TRAIN original rows and every kept inbox row, as the data columns only.
    grown = pl.read_parquet(resampled["data"])
    original = pl.read_csv(root / "train.csv")
    assert grown.height == N_TRAIN + kept_1 + kept_2 and grown.columns == original.columns
    assert n_rows == grown.height and grown.head(N_TRAIN).equals(original.cast(grown.schema))
    assert _query(store, "SELECT count(*), count(resampling_id) FROM inbox_files WHERE status = 'processed'") \
        == [(2, 2)]
    # The trigger was recorded with the run it would start (so that run never becomes a base).
    assert _query(store, "SELECT status, \"rows\", run_id FROM inbox_resamplings") == [
        ("completed", kept_1 + kept_2, run_id)]
    # Fresh samples for a seeded subset: as many rows as the base run sampled (all N_TRAIN) or as
    # the trigger counted, if more; the network values every row.
    sampled = max(N_TRAIN, kept_1 + kept_2)
    assert _query(store, "SELECT count(DISTINCT point) FROM samples s JOIN runs r USING (sampling_id) "
                         f"WHERE r.run_id = '{run_id}'") == [(sampled,)]
    values = pl.read_parquet(store_paths(store)["values"] / f"{run_id}.parquet")
    assert values.height == grown.height and int(values["sampled"].sum()) == sampled < grown.height

    # Nothing new: everything skipped, and the rows already counted trigger nothing.
    four = curate_inbox(**options, resample_after_rows=1)
    assert (four["processed"], four["rejected"], four["skipped"], four["resampled"]) == (0, 0, 3, [])
    assert _query(store, "SELECT count(*) FROM runs") == [(2,)]

    # A trigger whose valuation was killed is still 'running': the next run finishes that one.
    with duckdb.connect(str(store_paths(store)["duckdb"])) as con:
        con.execute("UPDATE inbox_resamplings SET status = 'running', finished_at = NULL")
    five = curate_inbox(**options, resample_after_rows=None)
    assert [(r["resampling_id"], r["run_id"]) for r in five["resampled"]] == [
        (resampled["resampling_id"], run_id)]
    assert _query(store, "SELECT count(*) FROM runs") == [(2,)]
    assert _query(store, "SELECT status FROM inbox_resamplings") == [("completed",)]


def test_an_inbox_without_a_valued_store_fails_before_any_file(tmp_path):
    from amortval.errors import ModelNotFoundError

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_demo(seed=3, n_train=4, n_valid=4, n_new=10).new.write_parquet(inbox / "batch.parquet")
    with pytest.raises(ModelNotFoundError, match="amortval value"):
        curate_inbox(inbox=str(inbox), store=str(tmp_path / "store"), mislabeled_column="flipped")
    assert (inbox / "batch.parquet").exists() and not (inbox / "rejected").exists()
    assert curate_inbox(inbox=str(tmp_path / "empty"), store=str(tmp_path / "store"))["processed"] == 0


def test_the_readme_states_the_flows_resampling_default():
    default = inspect.signature(curate_inbox.fn).parameters["resample_after_rows"].default
    section = README.read_text().split("## Curate an inbox")[1].split("\n## ")[0]
    assert f"default {default:,}" in section


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readme_inbox_quickstart_runs_as_written(tmp_path, cli_environment, figures):
    script = "set -euo pipefail\n" + "\n".join(readme_commands("inbox")) + "\n"
    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    started = time.time()
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    first, second = re.findall(r"^amortval: inbox .*$", done.stdout, flags=re.MULTILINE)
    assert first.endswith("1 processed, 1 rejected, 0 skipped, 0 re-valued")
    assert second.endswith("0 processed, 0 rejected, 2 skipped, 0 re-valued")
    assert "missing columns 'debt_ratio'" in (tmp_path / "amortval-store/inbox/rejected/bad.csv.error.txt").read_text()
    [curated] = (tmp_path / "amortval-store/curated/inbox").glob("batch-1.*.curated.parquet")
    assert f"-> {curated}" in done.stdout
    figures("README inbox quickstart",
            f"{len(readme_commands('inbox'))} commands, exit 0, {time.time() - started:.0f} s")
