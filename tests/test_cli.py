"""Bad input through the command line: exit 2, the column or problem named, nothing written.

One catalogue of bad training inputs, each run through ``amortval value`` in-process and
timed from the call to the error; every case must leave no store folder (so no DuckDB
rows and no MLflow database). Scoring-time cases live in test_flows.py (they need a
registered model); both report to the ``bad_input`` figure.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import sys
import time
import types
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from amortval.data.demo import make_demo
from amortval.data.encoding import build_problem
from amortval.data.tabular import load_training_data
from amortval.errors import DataValidationError
from amortval.flows.cli import main
from test_column_types import REFUSED


@pytest.fixture(scope="module")
def good() -> pl.DataFrame:
    return make_demo(seed=2, n_train=30, n_valid=10, n_new=10).train.drop("flipped")


@pytest.fixture(scope="module")
def other() -> pl.DataFrame:
    """Rows of the same schema that are not in ``good``: a valid --valid file."""
    return make_demo(seed=3, n_train=20, n_valid=10, n_new=10).train.drop("flipped")


def _write(frame: pl.DataFrame, path: Path) -> Path:
    (frame.write_csv if str(path).endswith(".csv") else frame.write_parquet)(path)
    return path


def _at(row: int, value, column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def mutate(f: pl.DataFrame) -> pl.DataFrame:
        return f.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(column)).alias(column))
    return mutate


def _frame(mutate: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[pl.DataFrame, Path], Path]:
    """A file maker: the good frame, changed, written in the path's format."""
    return lambda good, path: _write(mutate(good), path)


def _raw(content: bytes) -> Callable[[pl.DataFrame, Path], Path]:
    def make(_: pl.DataFrame, path: Path) -> Path:
        path.write_bytes(content)
        return path
    return make


def _nan_label(f: pl.DataFrame) -> pl.DataFrame:
    return _at(2, float("nan"), "label")(f.with_columns((pl.col("label") == "approved").cast(pl.Float64)))


def _duplicate_header(good: pl.DataFrame, path: Path) -> Path:
    """Polars would rename a repeated CSV header (income_duplicated_0): write it by hand."""
    header, rest = good.write_csv().split("\n", 1)
    path.write_text(header.replace("debt_ratio", "income", 1) + "\n" + rest)
    return path


def _folder(_: pl.DataFrame, path: Path) -> Path:
    path.mkdir()
    return path


SAME = _frame(lambda f: f)
# name -> (file suffixes, file maker (good frame, path), extra options, fragments the error must contain)
CASES: dict[str, tuple] = {
    "NaN feature": ((".csv", ".parquet"), _frame(_at(3, float("nan"), "income")), [],
                    ["'income'", "NaN", "--allow-missing"]),
    "null feature": ((".parquet",), _frame(_at(4, None, "region")), [], ["'region'", "null"]),
    "inf feature": ((".csv", ".parquet"), _frame(_at(0, float("inf"), "income")), [], ["'income'", "infinite"]),
    "inf feature, missing values allowed": ((".parquet",), _frame(_at(0, float("-inf"), "income")),
                                            ["--allow-missing"], ["'income'", "infinite"]),
    "all-missing feature, missing values allowed": ((".parquet",), _frame(lambda f: f.with_columns(
        pl.lit(None, pl.Float64).alias("income"))), ["--allow-missing"], ["'income'", "no values"]),
    "missing target column": ((".csv", ".parquet"), _frame(lambda f: f.drop("label")), [], ["'label' not found"]),
    "null in the target": ((".csv", ".parquet"), _frame(_at(5, None, "label")), [], ["'label'", "null"]),
    "NaN in the target": ((".parquet",), _frame(_nan_label), [], ["'label'", "NaN"]),
    "NaN target, missing values allowed": ((".parquet",), _frame(_nan_label), ["--allow-missing"],
                                           ["'label'", "NaN"]),
    "single class": ((".csv", ".parquet"), _frame(lambda f: f.with_columns(pl.lit("approved").alias("label"))), [],
                     ["'label'", "single class"]),
    "header only": ((".csv", ".parquet"), _frame(lambda f: f.head(0)), [], ["no rows"]),
    "empty file": ((".csv", ".parquet"), _raw(b""), [], ["is empty"]),
    "fewer rows than needed": ((".csv",), _frame(lambda f: f.head(3)), [], ["only 3 rows", "at least 4"]),
    "too few rows per class to split": ((".csv",), _frame(lambda f: f.head(4).with_columns(
        pl.Series("label", ["a", "b", "c", "d"]))), [], ["too few rows per class"]),
    "duplicate column names": ((".csv",), _duplicate_header, [], ["duplicate column name 'income'"]),
    "non-numeric column, encoding disabled": ((".csv", ".parquet"), SAME, ["--no-encode"],
                                              ["'region'", "non-numeric", "--no-encode"]),
    "unsupported column type": ((".parquet",), _frame(lambda f: f.with_columns(pl.lit([1, 2]).alias("tags"))), [],
                                ["'tags'", "unsupported dtype"]),
    "unknown file type": ((".txt",), _raw(b"income,label\n1,a\n"), [], ["'.txt'", "supported: .csv"]),
    "unreadable file (not Parquet)": ((".parquet",), _raw(b"PAR1 this is not parquet at all"), [], ["cannot read"]),
    "unreadable file (a folder)": ((".csv",), _folder, [], ["not a file"]),
    "missing file": ((".csv",), lambda good, path: path, [], ["does not exist"]),
    "validation file with other columns": ((".parquet",), SAME, ["--valid", "{valid_without_region}"],
                                           ["missing columns 'region'"]),
    "empty CSV column (read as all-null text)": ((".csv",), _frame(lambda f: f.with_columns(
        pl.lit(None, pl.String).alias("notes"))), [], ["'notes'", "null values"]),
    "--valid is the --data file": ((".csv", ".parquet"), SAME, ["--valid", "{data}"], ["is the data file"]),
    "--valid-fraction leaves too few training rows": ((".csv",), SAME, ["--valid-fraction", "0.999"],
                                                      ["leaves", "training rows", "--valid-fraction"]),
    "--min-size not below --max-size": ((".parquet",), SAME, ["--method", "distributional", "--min-size", "5",
                                                              "--max-size", "5"], ["--max-size", "--min-size"]),
}


def _typed_column(values) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Feature 'x' of the tested dtype, its values repeated down the frame."""
    def mutate(f: pl.DataFrame) -> pl.DataFrame:
        series = values if isinstance(values, pl.Series) else pl.Series(values)
        series = pl.concat([series] * (f.height // len(series) + 1))[:f.height]
        return f.with_columns(series.alias("x"))
    return mutate


# Every dtype polars reads that the encoder refuses, with the remedy the message must give
# (test_column_types.py holds the list). Polars infers none of them from CSV (which gives
# Int64, Int128, Float64, Boolean or String, all supported), so they come as Parquet.
for _name, (_values, _remedy) in REFUSED.items():
    CASES[f"{_name} column"] = ((".parquet",), _frame(_typed_column(_values)), [],
                                ["'x'", f"unsupported dtype {_name}", _remedy])


def _params():
    for name, (suffixes, *_rest) in CASES.items():
        for suffix in suffixes:
            yield pytest.param(name, suffix, id=f"{name}{suffix}")


def _make(name: str, suffix: str, good: pl.DataFrame, tmp_path: Path) -> tuple[Path, list[str]]:
    _, make, options, _ = CASES[name]
    made = make(good, tmp_path / f"train{suffix}")
    valid = _write(good.drop("region"), tmp_path / "valid_without_region.parquet")
    return made, [o.replace("{valid_without_region}", str(valid)).replace("{data}", str(made)) for o in options]


@pytest.mark.parametrize("name,suffix", list(_params()))
def test_bad_training_input_fails_before_any_work(name, suffix, good, tmp_path, capsys, bad_input):
    data, options = _make(name, suffix, good, tmp_path)
    store = tmp_path / "store"
    began = time.perf_counter()
    code = main(["value", "--data", str(data), "--target", "label", "--store", str(store), *options])
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("amortval: error:"), err
    for fragment in CASES[name][3]:
        assert fragment in err, (fragment, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not store.exists(), "nothing may be written for bad input: no store, no DuckDB, no MLflow database"
    kind = "column type" if name.endswith(" column") and "dtype" in " ".join(CASES[name][3]) else "data"
    bad_input[f"{kind} | value: {name}{suffix}"] = seconds


def test_a_user_meets_the_error_in_a_fresh_process_within_seconds(good, tmp_path, bad_input):
    """The user's view: a new process, imports included, never starting Prefect."""
    data = _write(_at(3, float("nan"), "income")(good), tmp_path / "train.csv")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "amortval.flows.cli", "value", "--data", str(data), "--target",
                           "label", "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - began
    assert done.returncode == 2 and "'income'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "prefect" not in done.stderr.lower()
    assert not (tmp_path / "store").exists()
    assert seconds < 15, seconds
    bad_input["fresh process: NaN feature"] = seconds


def test_allow_missing_imputes_the_training_mean(good, tmp_path):
    """The opt-in: a missing numeric value encodes to exactly 0 (the training mean on the
    standardized scale), a missing category to no level; the encoder keeps the rule."""
    frame = _at(3, None, "region")(_at(0, float("nan"), "income")(good))
    data, valid = _write(frame, tmp_path / "train.parquet"), _write(good, tmp_path / "valid.parquet")
    problem, encoder = build_problem(load_training_data(data, "label", valid=valid, allow_missing=True))
    names = encoder.encoded_names
    regions = [i for i, n in enumerate(names) if n.startswith("region=")]
    assert encoder.columns[0].mean == pytest.approx(float(np.nanmean(frame["income"].to_numpy())))
    assert problem.x_train[0, names.index("income")] == 0.0
    assert problem.x_train[3, regions].sum() == 0.0 and problem.x_train[4, regions].sum() == 1.0
    assert np.isfinite(problem.x_train).all()
    assert encoder.allow_missing and type(encoder).from_dict(encoder.to_dict()).allow_missing
    encoder.validate_scoring_frame(frame)  # scoring imputes alike instead of refusing
    with pytest.raises(DataValidationError, match="'income' has 1 NaN"):
        load_training_data(data, "label", valid=valid)  # without the opt-in: refused


def test_bad_options(good, tmp_path, capsys):
    store = tmp_path / "store"
    ok = _write(good, tmp_path / "ok.csv")
    for argv, needle in [
        (["--data", str(ok)], "--target"),
        (["--data", str(ok), "--target", "label", "--samples", "0"], "--samples"),
        (["--data", str(ok), "--target", "label", "--out", str(tmp_path / "x.csv")], "--out"),
        (["--data", str(ok), "--target", "label", "--method", "shapley", "--sampler", "msr"], "msr"),
        (["--data", str(ok), "--target", "label", "--workers", "0"], "--workers"),
    ]:
        assert main(["value", *argv, "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert needle in err, (argv, err)
    assert not store.exists()


def test_curate_rule_conflict_and_missing_file(tmp_path, capsys):
    # argparse's own errors (mutually exclusive options) are one line too, not the usage text
    assert main(["curate", "--data", "x.parquet", "--threshold", "0", "--drop-fraction", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("amortval: error: argument --drop-fraction: not allowed"), err
    assert main(["curate", "--data", str(tmp_path / "missing.parquet"), "--store", str(tmp_path / "s")]) == 2
    assert "missing.parquet" in capsys.readouterr().err
    assert main(["curate", "--data", str(tmp_path / "m.parquet"), "--drop-fraction", "1.5"]) == 2
    assert "--drop-fraction" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# Paths a command would write: refused before any work, nothing written, inputs untouched.
# name -> (command, options maker (ctx), fragments the error must contain). ``ctx`` has the
# good input files (data, valid, new), ``tmp`` and ``read_only`` (an unwritable folder).
def _new_dropped(c) -> list[str]:
    """curate writes <out stem>.dropped.parquet beside --out: here that is the input."""
    clash = c.tmp / "new.dropped.parquet"
    clash.write_bytes(c.new.read_bytes())
    return ["--data", str(clash), "--out", str(c.tmp / "new.parquet")]


def _link(kind: str):
    def make(c) -> list[str]:
        link = c.tmp / f"{kind}.parquet"
        link.symlink_to(c.data) if kind == "symlink" else os.link(c.data, link)
        return ["--out", str(link)]
    return make


def _file(c) -> Path:
    (c.tmp / "a-file").write_text("not a folder")
    return c.tmp / "a-file"


PATH_CASES: dict[str, tuple] = {
    "--out is the --data file": ("value", lambda c: ["--out", str(c.data)], ["is the input file", "train.parquet"]),
    "--out is the --data file, relative": ("value", lambda c: ["--out", os.path.relpath(c.data)],
                                           ["is the input file"]),
    "--out is the --valid file": ("value", lambda c: ["--out", str(c.valid)], ["is the input file", "valid.parquet"]),
    "--out is a symlink to --data": ("value", _link("symlink"), ["is the input file"]),
    "--out is a hard link of --data": ("value", _link("hardlink"), ["is the input file"]),
    "--out names a folder": ("value", lambda c: ["--out", str(c.folder)], ["is a folder"]),
    "--out in a missing folder": ("value", lambda c: ["--out", str(c.tmp / "nowhere" / "v.parquet")],
                                  ["--out folder does not exist", "nowhere"]),
    "--out in a read-only folder": ("value", lambda c: ["--out", str(c.read_only / "v.parquet")],
                                    ["--out folder", "read-only is not writable"]),
    "--out without .parquet": ("value", lambda c: ["--out", str(c.tmp / "v.csv")], ["must name a .parquet file"]),
    "--store is a regular file": ("value", lambda c: ["--store", str(_file(c))], ["a-file is a file, not a folder"]),
    "--store under a regular file": ("value", lambda c: ["--store", str(_file(c) / "s")],
                                     ["cannot be created", "a-file is a file"]),
    "--store is a read-only folder": ("value", lambda c: ["--store", str(c.read_only)],
                                      ["--store folder", "read-only is not writable"]),
    "--store inside a read-only folder": ("value", lambda c: ["--store", str(c.read_only / "s")],
                                          ["cannot be created", "read-only is not writable"]),
    "curate --out is the --data file": ("curate", lambda c: ["--out", str(c.new)], ["is the input file", "new.parquet"]),
    "curate dropped file is the --data file": ("curate", _new_dropped, ["is the input file", "new.dropped.parquet"]),
    "curate --out names a folder": ("curate", lambda c: ["--out", str(c.folder)], ["is a folder"]),
    "curate --out in a missing folder": ("curate", lambda c: ["--out", str(c.tmp / "nowhere" / "k.parquet")],
                                         ["folder does not exist"]),
    "curate --out in a read-only folder": ("curate", lambda c: ["--out", str(c.read_only / "k.parquet")],
                                           ["read-only is not writable"]),
    "curate --out without .parquet": ("curate", lambda c: ["--out", str(c.tmp / "k.csv")], [".parquet"]),
    "curate --store is a regular file": ("curate", lambda c: ["--store", str(_file(c))], ["is a file, not a folder"]),
    "curate --store is a read-only folder": ("curate", lambda c: ["--store", str(c.read_only)],
                                             ["read-only is not writable"]),
    "--store is the --data file": ("value", lambda c: ["--store", str(c.data)],
                                   ["train.parquet is a file, not a folder"]),
    "--valid is a folder": ("value", lambda c: ["--valid", str(c.folder)], ["folder.parquet", "not a file"]),
    "curate --store is the --data file": ("curate", lambda c: ["--store", str(c.new)],
                                          ["new.parquet is a file, not a folder"]),
    "curate --data is a folder": ("curate", lambda c: ["--data", str(c.folder)], ["folder.parquet", "not a file"]),
}


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders and links): what 'nothing written' means."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", list(PATH_CASES))
def test_bad_paths_fail_before_any_work_and_write_nothing(name, good, other, tmp_path, capsys, bad_input, request,
                                                         monkeypatch):
    command, options, fragments = PATH_CASES[name]
    monkeypatch.chdir(tmp_path)
    c = types.SimpleNamespace(tmp=tmp_path, data=_write(good, tmp_path / "train.parquet"),
                              valid=_write(other, tmp_path / "valid.parquet"), new=_write(good, tmp_path / "new.parquet"),
                              folder=tmp_path / "folder.parquet")
    c.folder.mkdir()
    if "read-only" in name:
        c.read_only = request.getfixturevalue("read_only_folder")
    argv = ["--data", str(c.new), "--store", str(tmp_path / "store"), *options(c)]
    argv = (["value", "--target", "label", "--valid", str(c.valid)] if command == "value" else ["curate"]) + argv
    if command == "value":
        argv[argv.index(str(c.new))] = str(c.data)
    before = _snapshot(tmp_path)
    began = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("amortval: error:") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "store").exists(), "no store folder for a bad path"
    assert _snapshot(tmp_path) == before, "inputs unchanged byte for byte, nothing created (no temp or probe file)"
    assert seconds < 5, seconds
    bad_input[f"path | {command}: {name}"] = seconds


@contextmanager
def _held(store: Path):
    """Another process holding the store's DuckDB file, as a running ``amortval value`` does."""
    from amortval.tasks.prepare import store_paths

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from amortval.data.store import ValuationStore
        store = ValuationStore({str(store_paths(store)["duckdb"])!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("amortval: error:")]
    assert len(lines) == 1 and stderr.count("amortval: error:") == 1, stderr
    return lines[0]


def test_curate_on_a_store_held_by_a_running_value_fails_at_once(good, tmp_path, capsys, bad_input):
    new = _write(good, tmp_path / "new.parquet")
    with _held(tmp_path / "store") as pid:
        began = time.perf_counter()
        code = main(["curate", "--data", str(new), "--store", str(tmp_path / "store")])
        seconds = time.perf_counter() - began
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and f"in use by process {pid}" in line, line
    assert seconds < 1, seconds  # before any model load or Prefect start (was 12.8 s)
    bad_input["path | curate: store held by a running value"] = seconds


def test_curate_user_errors_are_one_line_in_a_fresh_process_without_prefect(good, tmp_path, bad_input):
    """The user's terminal: no Prefect traceback before the message, no flow run at all."""
    from amortval.data.store import ValuationStore
    from amortval.tasks.prepare import store_paths

    new = _write(good, tmp_path / "new.parquet")
    ValuationStore(store_paths(tmp_path / "empty")["duckdb"]).close()  # a store, but nothing valued in it

    def curate(store: Path) -> tuple[str, float]:
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "amortval.flows.cli", "curate", "--data", str(new),
                               "--store", str(store)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "temporary server" not in done.stderr and "Flow run" not in done.stderr, done.stderr
        return _one_error_line(done.stderr), time.perf_counter() - began

    line, seconds = curate(tmp_path / "empty")
    assert "no valuation model is registered" in line, line
    bad_input["fresh process: curate, no model"] = seconds
    with _held(tmp_path / "held") as pid:
        line, seconds = curate(tmp_path / "held")
    assert f"in use by process {pid}" in line, line
    bad_input["fresh process: curate, store held"] = seconds


def test_our_error_inside_the_value_flow_is_one_line_without_traceback(good, other, tmp_path, cli_environment):
    """A store taken between the CLI's check and the flow's open (a race the check cannot
    close) fails inside the flow: still one ``amortval: error:`` line, no Prefect traceback."""
    data, valid = _write(good, tmp_path / "train.parquet"), _write(other, tmp_path / "valid.parquet")
    lose_the_race = textwrap.dedent(f"""
        import sys
        import amortval.data.store
        import amortval.tasks.run_plan
        from amortval.flows.cli import main
        amortval.data.store.ensure_store_free = lambda path: None
        amortval.tasks.run_plan.stored_status = lambda plan: None  # the pre-flow report opens it too
        amortval.tasks.run_plan.storage_needed = lambda config, inputs: 0  # and so does the space check
        sys.exit(main(["value", "--data", {str(data)!r}, "--valid", {str(valid)!r}, "--target", "label",
                       "--samples", "2", "--store", {str(tmp_path / "store")!r}]))
    """)
    with _held(tmp_path / "store") as pid:
        done = subprocess.run([sys.executable, "-c", lose_the_race], env=cli_environment, capture_output=True,
                              text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert f"in use by process {pid}" in _one_error_line(done.stderr), done.stderr
    assert "Flow run" in done.stderr, "the error must come from inside the flow for this test to mean anything"
    assert "Encountered exception" not in done.stderr and "Finished in state Failed" not in done.stderr, done.stderr
