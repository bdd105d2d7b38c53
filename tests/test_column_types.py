"""Every column type polars reads from CSV or Parquet: supported end to end, or refused
before any work with the column's name and what to do (data/schema.py docstring)."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from amortval.data.columns import column_type
from amortval.data.encoding import TabularEncoder, build_problem
from amortval.data.tabular import load_training_data
from amortval.errors import DataValidationError, SchemaMismatchError

N = 20
SUPPORTED = {
    **{name: getattr(pl, name) for name in ("Int8", "Int16", "Int32", "Int64", "Int128", "UInt8", "UInt16",
                                            "UInt32", "UInt64", "UInt128", "Float16", "Float32", "Float64")},
    "Decimal": pl.Decimal(10, 2),
    "Boolean": pl.Boolean,
    "String": pl.String,
    "Categorical": pl.Categorical,
    "Enum": pl.Enum(["c0", "c1", "c2"]),
}
REFUSED = {
    "Date": ([datetime.date(2020, 1, 1 + i % 3) for i in range(N)], "days since"),
    "Datetime": ([datetime.datetime(2020, 1, 1, i % 3) for i in range(N)], "convert it to a number"),
    "Duration": ([datetime.timedelta(seconds=i % 3) for i in range(N)], "total seconds"),
    "Time": ([datetime.time(i % 3) for i in range(N)], "seconds since midnight"),
    "Binary": ([b"ab"[i % 2:] for i in range(N)], "decode it to a string"),
    "List": ([[i % 3, 1] for i in range(N)], "one numeric column per element"),
    "Array": (pl.Series([[i % 3, 1] for i in range(N)], dtype=pl.Array(pl.Int64, 2)), "one numeric column"),
    "Struct": ([{"a": i % 3} for i in range(N)], "unnest"),
    "Null": (pl.Series([None] * N, dtype=pl.Null), "no value in any row"),
}
CANONICAL = (pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt32, pl.UInt16, pl.UInt8, pl.Float64, pl.Float32,
             pl.Boolean, pl.String)


def column(dtype: pl.DataType, n: int = N) -> pl.Series:
    """Three levels (0/1/2, 'c0'..'c2'; booleans two) in the dtype, as a user's file would hold them."""
    if dtype == pl.Boolean:
        return pl.Series([i % 2 == 0 for i in range(n)])
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return pl.Series([f"c{i % 3}" for i in range(n)]).cast(dtype)
    if isinstance(dtype, pl.Decimal):
        return pl.Series([Decimal(i % 3) for i in range(n)]).cast(dtype)
    return pl.Series([i % 3 for i in range(n)]).cast(dtype)


def table(tmp_path, role: str, series: pl.Series) -> tuple:
    """A Parquet file holding ``series`` as feature 'x' (with a numeric feature and a string
    label) or as the label (with two numeric features); and the file read back."""
    noise = pl.Series("z", np.random.default_rng(0).normal(size=N))
    if role == "feature":
        df = pl.DataFrame([series.alias("x"), noise, pl.Series("label", ["yes", "no", "no", "yes"] * (N // 4))])
    else:
        df = pl.DataFrame([pl.Series("x", np.arange(N) % 5, pl.Int64), noise, series.alias("label")])
    path = tmp_path / f"{role}.parquet"
    df.write_parquet(path)
    back = pl.read_parquet(path)
    assert back.schema == df.schema, "the Parquet round trip keeps the dtype under test"
    return path, back


@pytest.mark.parametrize("role", ["feature", "target"])
@pytest.mark.parametrize("type_name", list(SUPPORTED))
def test_supported_type_end_to_end(tmp_path, type_name, role):
    raw = column(SUPPORTED[type_name])
    if role == "target" and type_name in ("Boolean",):
        raw = pl.Series([i % 4 in (0, 3) for i in range(N)])
    path, read = table(tmp_path, role, raw)
    data = load_training_data(path, "label")
    problem, enc = build_problem(data)
    for df in (data.train, data.valid):
        assert all(df[c].dtype in CANONICAL for c in ("x", "z", "label")), df.schema
    assert np.isfinite(problem.x_train).all() and np.isfinite(problem.x_valid).all()

    back = TabularEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    scored = back.validate_scoring_frame(read)  # the file as read: Categorical, Decimal, UInt128...
    x, y = back.transform(scored), back.labels(scored)
    np.testing.assert_array_equal(x[data.train_rows], problem.x_train)
    np.testing.assert_array_equal(y[data.valid_rows], problem.y_valid)

    if role == "feature":
        assert enc.classes == ("no", "yes")
    else:  # plain Python labels, whatever the dtype: what label_values gives and JSON keeps
        kind = column_type(raw.dtype)
        assert enc.classes == {"boolean": (False, True), "string": ("c0", "c1", "c2")}.get(kind, (0, 1, 2))
        assert all(type(c) is type(enc.classes[0]) for c in enc.classes)
    if role == "feature":
        encoded = x[:, [i for i, n in enumerate(enc.encoded_names) if n.split("=")[0] == "x"]]
        levels = raw.cast(pl.String).to_numpy()
        for a, b in [(0, 1), (0, 2), (0, 3)]:  # same raw value <=> same encoding, both directions
            assert (levels[a] == levels[b]) == np.array_equal(encoded[a], encoded[b])


@pytest.mark.parametrize("type_name", ["Categorical", "Enum", "UInt64", "Int128", "Decimal"])
def test_loaded_frames_pass_mlflow_signature_enforcement(tmp_path, type_name):
    """The valuation flow logs ``data.train.head(5).to_pandas()`` as the MLflow input example;
    a category or uint64 column used to fail MLflow's check after all the work was done."""
    pytest.importorskip("mlflow")
    from mlflow.models.utils import _enforce_schema
    from mlflow.types.schema import ColSpec, Schema

    for role in ("feature", "target"):
        path, _ = table(tmp_path, role, column(SUPPORTED[type_name]))
        data = load_training_data(path, "label")
        _, enc = build_problem(data)
        signature = Schema([ColSpec(kind, name) for name, kind in enc.input_schema()])
        _enforce_schema(data.train.head(5).to_pandas(), signature)


@pytest.mark.parametrize("role", ["feature", "target"])
@pytest.mark.parametrize("type_name", list(REFUSED))
def test_refused_type_names_column_and_remedy(tmp_path, type_name, role):
    values, remedy = REFUSED[type_name]
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    path, _ = table(tmp_path, role, series)
    column_name = "x" if role == "feature" else "label"
    with pytest.raises(DataValidationError) as info:
        load_training_data(path, "label")
    message = str(info.value)
    assert info.value.column == column_name
    assert f"'{column_name}' has unsupported dtype {type_name}" in message and remedy in message, message


def test_refused_type_at_scoring_time_is_a_schema_mismatch():
    good = pl.DataFrame({"x": [0.0, 1.0, 2.0], "label": ["a", "b", "a"]})
    enc = TabularEncoder.fit(good, "label")
    dated = good.with_columns(pl.Series("x", [datetime.date(2020, 1, d) for d in (1, 2, 3)]))
    with pytest.raises(SchemaMismatchError, match="'x' has unsupported dtype Date; convert it to a number"):
        enc.validate_scoring_frame(dated)


def test_csv_types_are_supported(tmp_path):
    """CSV infers Int64, Int128 (past 2**63), Float64, Boolean and String; all encode.
    (The 'big' values are 4096 apart, float64's spacing at 2**64, so they stay distinct.)"""
    path = tmp_path / "d.csv"
    rows = [f"{i},{(i % 3) * 4096 + 2**64},{i / 7},{'true' if i % 2 else 'false'},c{i % 3},{'ab'[i % 2]}"
            for i in range(N)]
    path.write_text("a,big,f,flag,s,label\n" + "\n".join(rows) + "\n")
    assert pl.read_csv(path, infer_schema_length=None)["big"].dtype == pl.Int128
    data = load_training_data(path, "label")
    problem, enc = build_problem(data)
    assert [column_type(data.train[c].dtype) for c in ("a", "big", "f", "flag", "s")] == \
        ["long", "double", "double", "boolean", "string"]
    big = problem.x_train[:, enc.encoded_names.index("big")]
    assert len(set(big.tolist())) == 3 and np.isfinite(problem.x_train).all()


def test_wide_integer_label_beyond_64_bits_is_refused(tmp_path):
    labels = pl.Series([2**64 + i % 2 for i in range(N)], dtype=pl.UInt128)
    path, _ = table(tmp_path, "target", labels)
    with pytest.raises(DataValidationError, match="'label' has label 18446744073709551616 at row 0, beyond 64-bit"):
        load_training_data(path, "label")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_every_supported_type_end_to_end_through_the_cli(tmp_path, capsys):
    """The documented support, for real: ``amortval value`` on a Parquet file holding one
    feature of every supported dtype (and labels that differ only by a trailing space,
    which warn), then ``amortval curate`` scoring the same rows with the registered network;
    and ``amortval value`` on a CSV file with every dtype polars infers from CSV."""
    from amortval.flows.cli import main

    n = 40
    rng = np.random.default_rng(0)
    labels = ["yes", "no"] * (n // 2)
    labels[1:8:2] = ["no "] * 4
    parquet = pl.DataFrame([column(dtype, n).alias(f"x_{name}") for name, dtype in SUPPORTED.items()]
                           + [pl.Series("z", rng.normal(size=n)), pl.Series("label", labels)])
    parquet.write_parquet(tmp_path / "typed.parquet")
    rows = [f"{i},{(i % 3) * 4096 + 2**64},{i / 7},{'true' if i % 2 else 'false'},c{i % 3},{'ab'[i % 2]}"
            for i in range(n)]
    (tmp_path / "typed.csv").write_text("a,big,f,flag,s,label\n" + "\n".join(rows) + "\n")
    store = str(tmp_path / "store")
    common = ["--target", "label", "--samples", "2", "--epochs", "2", "--pretrain-epochs", "1", "--folds", "2",
              "--hidden", "8", "--layers", "1", "--store", store]

    assert main(["value", "--data", str(tmp_path / "typed.parquet"), *common]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "amortval: warning:" in err and "'no '" in err, err
    assert main(["curate", "--data", str(tmp_path / "typed.parquet"), "--store", store,
                 "--model-name", "amortval-typed", "--model-version", "1", "--drop-fraction", "0.25"]) == 0, \
        capsys.readouterr().err
    curated = pl.read_parquet(tmp_path / "store" / "curated" / "typed.curated.parquet")
    assert curated.height == n - n // 4 and curated["value"].is_finite().all()
    assert main(["value", "--data", str(tmp_path / "typed.csv"), *common]) == 0, capsys.readouterr().err
    tables = [pl.read_parquet(path) for path in (tmp_path / "store" / "values").glob("*.parquet")]
    assert len(tables) == 2 and all(t.height == n and t["value"].is_finite().all() for t in tables)
