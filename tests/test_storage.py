"""Damaged stores and a full disk: one ``amortval: error:`` line naming the file, no temp file left.

In-process cases for the bad-input catalogue (``bad_input`` figure, classes ``store`` and
``disk``): a DuckDB store damaged in the middle, a file that is no DuckDB store, a
truncated MLflow database; too little free space (refused before any work) and ENOSPC
met while writing. A full disk met by DuckDB itself, mid-run, on a real small tmpfs, is
``test_kill_resume.py``'s disk-full trial.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from amortval.data.demo import make_demo
from amortval.data.store import ValuationStore
from amortval.errors import StorageError, storage_error
from amortval.flows.cli import main
from amortval.tasks.prepare import store_paths
from amortval.tasks.report import write_parquet


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage")
    demo = make_demo(seed=2, n_train=30, n_valid=10, n_new=10)
    demo.train.drop("flipped").write_parquet(root / "train.parquet")
    demo.new.drop("flipped").write_parquet(root / "new.parquet")
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _damage_middle(path: Path) -> None:
    """Overwrite the middle third of the file (whole DuckDB blocks, checksums included)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(np.random.default_rng(0).bytes(size // 3))


def _store(tmp_path: Path) -> Path:
    """A store as ``amortval value`` leaves one: its DuckDB file with the schema."""
    ValuationStore(store_paths(tmp_path / "store")["duckdb"]).close()
    return tmp_path / "store"


def _truncated_mlflow_db(store: Path) -> None:
    """An SQLite database with MLflow's table name and some pages, cut in half (a disk that
    filled up while it grew, or a copy interrupted)."""
    path = store / "mlflow.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO experiments (name) VALUES (?)", [("x" * 200,) for _ in range(2000)])
    os.truncate(path, path.stat().st_size // 2)


def _value(files: Path, store: Path) -> list[str]:
    return ["value", "--data", str(files / "train.parquet"), "--target", "label", "--store", str(store)]


def _curate(files: Path, store: Path) -> list[str]:
    return ["curate", "--data", str(files / "new.parquet"), "--store", str(store)]


def _runs(files: Path, store: Path) -> list[str]:
    return ["runs", "--store", str(store)]


def _damaged_store(tmp_path: Path) -> Path:
    store = _store(tmp_path)
    _damage_middle(store / "amortval.duckdb")
    return store


def _not_duckdb(tmp_path: Path) -> Path:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "amortval.duckdb").write_bytes(b"this is not a database\n" * 1000)
    return tmp_path / "store"


def _truncated_store(tmp_path: Path) -> Path:
    store = _store(tmp_path)
    os.truncate(store / "amortval.duckdb", (store / "amortval.duckdb").stat().st_size // 2)
    return store


def _damaged_tracking(tmp_path: Path) -> Path:
    store = _store(tmp_path)
    _truncated_mlflow_db(store)
    return store


# name -> (command, store maker (tmp_path), fragments of the one line)
CASES = {
    "value: DuckDB store damaged mid-file": (_value, _damaged_store, ["amortval.duckdb is damaged"]),
    "runs: DuckDB store damaged mid-file": (_runs, _damaged_store, ["amortval.duckdb is damaged"]),
    "curate: DuckDB store damaged mid-file": (_curate, _damaged_store, ["amortval.duckdb is damaged"]),
    "value: store file is not a DuckDB file": (_value, _not_duckdb, ["amortval.duckdb", "not a valid DuckDB"]),
    "value: DuckDB store truncated": (_value, _truncated_store, ["amortval.duckdb"]),
    "value: MLflow database truncated": (_value, _damaged_tracking, ["mlflow.db is damaged", "malformed"]),
    "curate: MLflow database truncated": (_curate, _damaged_tracking, ["mlflow.db is damaged", "malformed"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_store_is_one_line_naming_the_file(name, files, tmp_path, capsys, bad_input):
    command, make, fragments = CASES[name]
    store = make(tmp_path)
    before = _snapshot(tmp_path)
    began = time.perf_counter()
    code = main(command(files, store))
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("amortval: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert _snapshot(tmp_path) == before, "a damaged store is reported, not written to"
    bad_input[f"store | {name}"] = seconds


def test_too_little_free_space_is_refused_before_any_work(files, tmp_path, capsys, monkeypatch, bad_input):
    """The run's samples (~64 bytes each in DuckDB) and outputs must fit on the store's disk."""
    import amortval.tasks.paths

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(amortval.tasks.paths.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    began = time.perf_counter()
    code = main(_value(files, tmp_path / "store"))
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--store" in err and "its disk has 1.0 MiB free and this run needs about" in err, err
    assert not (tmp_path / "store").exists()
    bad_input["disk | value: too little free space for the run"] = seconds


def _full_disk(path, *args, **kwargs):
    """What a write on a full disk does: a file is created, stays short, the write fails."""
    Path(path).write_bytes(b"")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_disk_full_at_the_first_write_is_one_line_and_leaves_no_temp_file(files, tmp_path, capsys, monkeypatch,
                                                                          bad_input):
    """The first file a run writes is its encoded problem; ENOSPC there names that file."""
    monkeypatch.setattr("amortval.data.problem.np.savez", _full_disk)
    began = time.perf_counter()
    code = main(_value(files, tmp_path / "store"))
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "problems" in err and ".npz: the disk is full" in err and "No space left on device" in err, err
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == [], "no partial or temporary file"
    bad_input["disk | value: ENOSPC writing the first file"] = seconds


def test_a_disk_full_writing_parquet_names_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """Values, curated rows and --out all go through write_parquet: a 0-byte .tmp used to stay."""
    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda self, path, *a, **k: _full_disk(path))
    with pytest.raises(StorageError, match=r"cannot write .*values\.parquet\.\d+\.tmp: the disk is full") as info:
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "values.parquet")
    assert info.value.errno is None or info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raw,problem", [
    (OSError(errno.ENOSPC, "No space left on device", "/s/x"), "the disk is full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/s/x"), "the disk is full"),
    (RuntimeError("TransactionContext Error: Failed to commit: Could not write file \"/s/a.duckdb.wal\": "
                  "No space left on device"), "the disk is full"),
    (sqlite3.OperationalError("database or disk is full"), "the disk is full"),
    (RuntimeError("Corrupt database file: computed checksum 1 does not match stored checksum 2"), "is damaged"),
    (sqlite3.DatabaseError("database disk image is malformed"), "is damaged"),
    (OSError(errno.EROFS, "Read-only file system", "/s/x"), "read-only"),
])
def test_storage_problems_are_recognized_through_wrappers(raw, problem):
    """MLflow wraps SQLAlchemy, which wraps sqlite3: the problem is found anywhere in the chain."""
    try:
        try:
            raise raw
        except Exception as inner:
            raise RuntimeError("(sqlalchemy.exc.OperationalError) wrapped by MLflow") from inner
    except RuntimeError as outer:
        translated = storage_error(outer, "/s/mlflow.db")
    assert translated is not None and problem in str(translated), translated
    assert storage_error(ValueError("a bug, not the disk"), "/s") is None
