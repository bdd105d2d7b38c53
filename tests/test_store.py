"""The DuckDB store: idempotent batch commits, resumption, SQL estimates, the file lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from amortval.data.store import ValuationStore
from amortval.data.store_schema import SCHEMA_VERSION
from amortval.errors import AmortvalError, StoreLockedError

TABLES = {"datasets", "samplings", "runs", "batches", "samples", "estimates", "run_metrics", "scores"}


def sample_frame(points: np.ndarray, draws: np.ndarray, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(points)
    return pl.DataFrame({
        "point": points.astype(np.int64),
        "draw": draws.astype(np.int64),
        "cardinality": rng.integers(0, 50, n),
        "delta": rng.normal(0.0, 0.1, n),
        "weight": rng.uniform(0.5, 2.0, n),
        "status": rng.choice(["ok", "ok", "ok", "one_class"], n),
    })


def batch_frame(batch: int, n_points: int = 10, per_batch: int = 3, seed: int = 0) -> pl.DataFrame:
    """Every point gets draws batch*per_batch .. batch*per_batch+per_batch-1."""
    points = np.repeat(np.arange(n_points), per_batch)
    draws = np.tile(np.arange(per_batch), n_points) + batch * per_batch
    return sample_frame(points, draws, seed=seed + batch)


@pytest.fixture
def store(tmp_path: Path):
    with ValuationStore(tmp_path / "store.duckdb") as s:
        s.begin_run("run1", "r1", "d1", {"sampler": "permutation"}, 5, {"seed": 7}, n_points=10)
        yield s


def commit(store: ValuationStore, batch: int, frame: pl.DataFrame, run_id: str = "r1") -> bool:
    return store.commit_batch(run_id, batch, batch + 1, frame, n_fits=frame.height, n_fallbacks=1, seconds=0.5)


def done_batches(store: ValuationStore, sampling_id: str) -> set[int]:
    return {start for start, _ in store.done_segments(sampling_id)}


def test_tables_readable_by_plain_duckdb_after_close(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.duckdb"
    with ValuationStore(path) as s:
        s.register_dataset("d1", "demo", "demo", 500, 8, {"columns": ["a", "b"]})
        s.begin_run("run1", "r1", "d1", {"k": 1}, 2, {"seed": 3}, n_points=10)
        commit(s, 0, batch_frame(0))
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert TABLES <= names
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 30
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        types = dict(con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'samples'").fetchall())
        assert types["point"] == "INTEGER" and types["delta"] == "DOUBLE" and types["status"] == "VARCHAR"
    finally:
        con.close()
    with ValuationStore(path) as s:  # reopening an existing store keeps everything
        assert s.run("run1")["config"] == {"k": 1}
        assert s.dataset("d1")["schema"] == {"columns": ["a", "b"]}
        assert s.sample_count("r1") == 30


def test_batch_committed_twice_is_stored_once(store: ValuationStore) -> None:
    frame = batch_frame(0)
    assert commit(store, 0, frame) is True
    assert commit(store, 0, batch_frame(0, seed=99)) is False
    assert store.sample_count("r1") == 30
    assert store.fit_count("r1") == 30
    assert store.samples("r1")["delta"].to_list() == frame.sort("point", "draw")["delta"].to_list()
    assert store.status_counts("r1") == {k: v for k, v in frame["status"].value_counts().rows()}


def test_resume_submits_only_missing_batches(store: ValuationStore) -> None:
    for b in (0, 2, 4):
        commit(store, b, batch_frame(b))
    assert done_batches(store, "r1") == {0, 2, 4}
    assert set(range(5)) - done_batches(store, "r1") == {1, 3}
    assert done_batches(store, "other") == set()
    assert store.batches("r1")["unit_start"].to_list() == [0, 2, 4]


def test_a_sample_stored_by_another_batch_is_an_error_not_a_silent_drop(store: ValuationStore) -> None:
    """Draw ranges of batches never overlap; if a sampler bug made them, hiding the
    clash would undercount a point. The whole batch is refused, marker included."""
    commit(store, 0, batch_frame(0))
    clash = batch_frame(1).with_columns(pl.when(pl.col("point") == 4).then(0).otherwise(pl.col("draw")).alias("draw"))
    with pytest.raises(duckdb.ConstraintException):
        commit(store, 1, clash)
    assert store.sample_count("r1") == 30 and done_batches(store, "r1") == {0}


@pytest.mark.parametrize("breakage", ["null_status", "bad_type", "missing_column", "bad_marker"])
def test_failed_commit_leaves_neither_samples_nor_marker(store: ValuationStore, breakage: str) -> None:
    frame, n_fits = batch_frame(1), 30
    if breakage == "null_status":
        status = pl.when(pl.col("draw") == 4).then(None).otherwise(pl.col("status"))
        frame = frame.with_columns(status.alias("status"))
    elif breakage == "bad_type":
        frame = frame.with_columns(pl.col("point").cast(pl.String).str.replace("^3$", "three"))
    elif breakage == "missing_column":
        frame = frame.drop("weight")
    else:  # samples insert succeeds, then the marker insert fails
        n_fits = "many"
    with pytest.raises((duckdb.Error, ValueError)):
        store.commit_batch("r1", 1, 2, frame, n_fits=n_fits, n_fallbacks=0, seconds=0.1)
    assert store.sample_count("r1") == 0
    assert done_batches(store, "r1") == set()
    assert commit(store, 1, batch_frame(1)) is True  # the connection is usable afterwards
    assert store.sample_count("r1") == 30


def test_commits_from_several_threads_serialize(store: ValuationStore) -> None:
    frames = {b: batch_frame(b) for b in range(8)}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: commit(store, b, frames[b]), [*range(8), *range(8)]))
    assert sorted(results) == [False] * 8 + [True] * 8
    assert done_batches(store, "r1") == set(range(8)) and store.sample_count("r1") == 240


def test_monte_carlo_estimates_match_numpy(store: ValuationStore) -> None:
    frames = [batch_frame(b, per_batch=4, seed=11) for b in range(3)]
    for b, f in enumerate(frames):
        commit(store, b, f)
    # a lone sample for point 10: stderr must be null
    commit(store, 3, sample_frame(np.array([10]), np.array([0]), seed=5))
    allf = pl.concat(frames).with_columns((pl.col("weight") * pl.col("delta")).alias("v"))
    est = store.monte_carlo_estimates("r1")
    assert est.columns == ["point", "value", "stderr", "count"]
    assert est["point"].to_list() == list(range(11))
    for p in range(10):
        v = allf.filter(pl.col("point") == p)["v"].to_numpy()
        row = est.row(p, named=True)
        assert row["count"] == 12
        assert row["value"] == pytest.approx(v.mean(), rel=1e-12, abs=1e-15)
        assert row["stderr"] == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)), rel=1e-10)
    assert est.row(10, named=True)["stderr"] is None

    early = store.monte_carlo_estimates("r1", below_draw=4)  # only batch 0 (draws 0..3) + point 10
    assert early.filter(pl.col("point") < 10)["count"].to_list() == [4] * 10
    v0 = allf.filter((pl.col("point") == 0) & (pl.col("draw") < 4))["v"].to_numpy()
    assert early.row(0, named=True)["value"] == pytest.approx(v0.mean())


def test_write_estimates_replaces_and_joins(store: ValuationStore) -> None:
    commit(store, 0, batch_frame(0))
    store.write_estimates("r1", "monte_carlo", store.monte_carlo_estimates("r1"))
    store.write_estimates("r1", "amortized", pl.DataFrame({"point": [0, 1, 2], "value": [1.0, 2.0, 3.0]}))
    store.write_estimates("r1", "amortized", pl.DataFrame({"point": [1, 11], "value": [5.0, 6.0]}))
    wide = store.estimates("r1")
    assert wide.columns == ["point", "mc_value", "mc_stderr", "mc_count", "amortized_value", "combined_value"]
    assert wide["point"].to_list() == list(range(10)) + [11]
    assert wide["amortized_value"].to_list() == [None, 5.0] + [None] * 8 + [6.0]
    assert wide["mc_count"].to_list()[:10] == [3] * 10 and wide["mc_value"][10] is None
    with pytest.raises(ValueError, match="source"):
        store.write_estimates("r1", "exact", pl.DataFrame({"point": [0], "value": [0.0]}))


def test_begin_run_is_idempotent_and_status_updates(store: ValuationStore) -> None:
    assert store.begin_run("run1", "r1", "d1", {"other": True}, 1, {}, n_points=3) == "running"
    store.set_run_status("run1", "valued", mlflow_run_id="abc")
    assert store.begin_run("run1", "r1", "d1", {}, 1, {}, n_points=3) == "valued"
    run = store.run("run1")
    assert run["config"] == {"sampler": "permutation"} and run["sampling_id"] == "r1" and run["samples"] == 5
    assert run["mlflow_run_id"] == "abc" and run["model_version"] is None
    assert run["updated_at"] >= run["created_at"]
    store.set_run_status("run1", "completed", model_version="3")
    assert store.run("run1")["model_version"] == "3" and store.run("run1")["mlflow_run_id"] == "abc"
    assert store.run("missing") is None
    with pytest.raises(LookupError):
        store.set_run_status("missing", "valued")
    with pytest.raises(ValueError, match="unknown"):
        store.set_run_status("run1", "valued", colour="red")


def test_metrics_and_scores(store: ValuationStore) -> None:
    store.log_metrics("r1", {"gate_mse": 0.5, "seconds": 3})
    store.log_metrics("r1", {"gate_mse": 0.25})
    assert store.metrics("r1") == {"gate_mse": 0.25, "seconds": 3.0}
    frame = pl.DataFrame({"row": [0, 1, 2], "value": [0.1, -0.2, 0.0], "kept": [True, False, True],
                          "reason": [None, "value below threshold", None]})
    store.write_scores("c1", "models:/m@champion", frame)
    store.write_scores("c1", "models:/m@champion", frame)
    got = store.scores("c1")
    assert got["row"].to_list() == [0, 1, 2] and got["kept"].to_list() == [True, False, True]
    assert got["reason"][1] == "value below threshold"


def test_second_process_gets_store_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from amortval.data.store import ValuationStore
            s = ValuationStore({str(path)!r})
            print("ready", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        with pytest.raises(StoreLockedError) as err:
            ValuationStore(path)
        elapsed = time.perf_counter() - start
        message = str(err.value)
        assert str(path) in message and str(holder.pid) in message and "--store" in message
        assert elapsed < 1.0, elapsed
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with ValuationStore(path):  # released once the holder exits
        pass


def test_large_commit_is_fast(store: ValuationStore) -> None:
    n = 100_000
    frame = sample_frame(np.arange(n) % 1000, np.arange(n) // 1000, seed=3)
    start = time.perf_counter()
    assert commit(store, 0, frame)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    est = store.monte_carlo_estimates("r1")
    agg = time.perf_counter() - start
    print(f"\n100k-row commit {elapsed * 1e3:.0f} ms ({n / elapsed:,.0f} rows/s); "
          f"aggregate {agg * 1e3:.1f} ms")
    assert store.sample_count("r1") == n and est.height == 1000
    assert elapsed < 5.0


def test_estimates_do_not_depend_on_commit_order(tmp_path):
    """A resumed run commits batches in another order; its values must be bit-identical."""
    rng = np.random.default_rng(3)
    n_points, n_batches = 2000, 40
    batches = [
        pl.DataFrame({
            "point": np.arange(n_points, dtype=np.int32),
            "draw": np.full(n_points, b, dtype=np.int32),
            "cardinality": rng.integers(0, n_points, n_points).astype(np.int32),
            "delta": rng.standard_normal(n_points) * 1e-3,
            "weight": np.ones(n_points),
            "status": ["ok"] * n_points,
        })
        for b in range(n_batches)
    ]
    results = []
    for name, order in (("forward", range(n_batches)), ("shuffled", rng.permutation(n_batches))):
        with ValuationStore(tmp_path / f"{name}.duckdb") as store:
            store.begin_run("run", "r", "d", {}, 1, {}, n_points)
            for b in order:
                store.commit_batch("r", int(b), int(b) + 1, batches[b], n_fits=1, n_fallbacks=0, seconds=0.0)
            results.append(store.monte_carlo_estimates("r"))
    assert results[0].equals(results[1])


def test_a_store_of_the_previous_release_is_refused_with_how_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.close()
    with pytest.raises(AmortvalError, match=r"schema 1.*new --store"):
        ValuationStore(path)


def test_a_store_path_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(AmortvalError, match="is a file, not a folder"):
        ValuationStore(tmp_path / "file" / "amortval.duckdb")
