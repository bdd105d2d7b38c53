"""Reading, validation, splitting, encoding and the demo dataset (data/*)."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import polars as pl
import pytest

from amortval.data.demo import DEMO_FLIP_COLUMN, DEMO_TARGET, make_demo, write_demo
from amortval.data.encoding import TabularEncoder, build_problem
from amortval.data.split import stratified_split
from amortval.data.tabular import (
    load_training_data,
    read_table,
    validate_training_frame,
)
from amortval.errors import ConfigError, DataValidationError, SchemaMismatchError


def frame(n: int = 12, **overrides) -> pl.DataFrame:
    """A small valid table: two numeric features, one categorical, a string label."""
    cols = {
        "age": [20 + i for i in range(n)],
        "income": [1000.0 + 10 * i for i in range(n)],
        "city": [("a", "b", "c")[i % 3] for i in range(n)],
        "label": [("yes", "no")[i % 2] for i in range(n)],
    }
    cols.update(overrides)
    return pl.DataFrame(cols)


def write(tmp_path, df: pl.DataFrame, name: str = "d.parquet"):
    path = tmp_path / name
    df.write_csv(path) if name.endswith(".csv") else df.write_parquet(path)
    return path


def raises(exc, *fragments):
    """pytest.raises that also checks every fragment appears in the message."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            for fragment in fragments:
                assert fragment in str(self.info.value), (fragment, str(self.info.value))
            return handled
    return _Check()


# --- reading -------------------------------------------------------------------------

def test_csv_and_parquet_load_the_same(tmp_path):
    df = frame()
    from_csv = read_table(write(tmp_path, df, "d.csv"))
    from_pq = read_table(write(tmp_path, df, "d.pq"))
    assert from_csv.equals(df) and from_pq.equals(df)


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("d.txt", b"a,b\n1,2\n", "supported: .csv, .parquet, .pq"),
    ("d.csv", b"", "empty"),
    ("d.csv", b"a,b\n", "no rows"),
    ("d.parquet", b"not a parquet file at all", "cannot read"),
    ("d.csv", b"a,b,a\n1,2,3\n", "duplicate column name 'a'"),
])
def test_bad_files(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with raises(DataValidationError, fragment):
        read_table(path)


def test_missing_file(tmp_path):
    with raises(DataValidationError, "does not exist"):
        read_table(tmp_path / "nope.csv")


def test_duplicate_parquet_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["x", "x"]), tmp_path / "d.parquet")
    with raises(DataValidationError, "'x'"):
        read_table(tmp_path / "d.parquet")


def test_csv_nan_and_inf_are_floats(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,label\n1.5,a\nNaN,b\ninf,a\n")
    df = read_table(path)
    assert df["x"].dtype == pl.Float64 and math.isnan(df["x"][1])


# --- training validation -------------------------------------------------------------

@pytest.mark.parametrize(("df", "column", "fragments"), [
    (frame().drop("label"), "label", ["'label' not found", "age, income, city"]),
    (frame(label=[None] + ["a", "b"] * 5 + ["a"]), "label", ["1 null values", "row 0"]),
    (frame(label=[0.0, 1.0, float("nan")] * 4), "label", ["4 NaN values", "row 2"]),
    (frame(label=["x"] * 12), "label", ["single class 'x'"]),
    (frame(income=[1.0] * 10 + [float("nan"), 2.0]), "income", ["1 NaN values (first at row 10)"]),
    (frame(income=[1.0] * 5 + [float("inf")] * 2 + [2.0] * 5), "income", ["2 infinite", "row 5"]),
    (frame(city=["a"] * 11 + [None]), "city", ["1 null values (first at row 11)"]),
    (frame(day=[date(2020, 1, i + 1) for i in range(12)]), "day", ["unsupported dtype Date"]),
    (frame(tags=[[1, 2]] * 12), "tags", ["unsupported dtype List"]),
    (frame(label=[0.5, 1.0] * 6), "label", ["non-integer"]),
])
def test_training_validation_names_column(df, column, fragments):
    with raises(DataValidationError, f"'{column}'", *fragments) as info:
        validate_training_frame(df, "label")
    assert info.value.column == column


def test_nan_string_label_is_a_label():
    validate_training_frame(frame(label=["NaN", "ok"] * 6), "label")


def test_no_features_and_too_few_rows():
    with raises(DataValidationError, "no feature columns"):
        validate_training_frame(pl.DataFrame({"label": [0, 1, 0, 1]}), "label")
    with raises(DataValidationError, "only 3 rows"):
        validate_training_frame(frame(3), "label")


def test_int_and_bool_targets():
    validate_training_frame(frame(label=[0, 1, 2] * 4), "label")
    validate_training_frame(frame(label=[True, False] * 6), "label")


# --- load_training_data: split, valid file, mislabeled column --------------------------

def test_split_is_seeded_and_stratified(tmp_path):
    labels = ["a"] * 30 + ["b"] * 15 + ["c"] * 5
    path = write(tmp_path, frame(50, label=labels))
    first = load_training_data(path, "label", seed=3)
    again = load_training_data(path, "label", seed=3)
    other = load_training_data(path, "label", seed=4)
    assert np.array_equal(first.valid_rows, again.valid_rows)
    assert not np.array_equal(first.valid_rows, other.valid_rows)
    assert sorted(set(first.valid["label"])) == ["a", "b", "c"]
    assert first.valid["label"].value_counts().sort("label")["count"].to_list() == [6, 3, 1]
    assert np.array_equal(np.sort(np.concatenate([first.train_rows, first.valid_rows])), np.arange(50))
    assert first.n_input_rows == 50 and first.name == "d"
    assert first.train["age"].to_list() == [20 + i for i in first.train_rows]


def test_split_keeps_one_row_per_part():
    train, valid = stratified_split(["a", "a", "b", "b"], 0.01, seed=0)
    assert len(valid) == 2 and len(train) == 2


def test_too_small_to_split(tmp_path):
    path = write(tmp_path, frame(4, label=["a", "b", "c", "d"]))
    with raises(DataValidationError, "too few rows per class"):
        load_training_data(path, "label")


def test_valid_file_checks(tmp_path):
    train = write(tmp_path, frame(), "train.parquet")
    ok = load_training_data(train, "label", valid=write(tmp_path, frame(6), "v.parquet"))
    assert ok.valid_rows is None and ok.train.height == 12 and ok.valid.height == 6
    cases = [
        (frame(6).drop("income"), ["missing", "'income'"]),
        (frame(6, extra=[1] * 6), ["extra", "'extra'"]),
        (frame(6, label=["yes", "maybe"] * 3), ["not in the training classes", "maybe"]),
        (frame(6, age=[1.0, float("nan")] * 3), ["'age'", "NaN"]),
        (frame(6, age=["x"] * 6), ["'age'", "dtype"]),
    ]
    narrower = load_training_data(train, "label", valid=write(tmp_path, frame(6).with_columns(
        pl.col("age").cast(pl.Int32), pl.col("income").cast(pl.Float32)), "v.parquet"))
    assert narrower.valid["age"].dtype == pl.Int32 and narrower.warnings == ()
    for df, fragments in cases:
        with raises(DataValidationError, *fragments):
            load_training_data(train, "label", valid=write(tmp_path, df, "v.parquet"))


def test_mislabeled_column(tmp_path):
    flags = [i % 4 == 0 for i in range(16)]
    data = load_training_data(write(tmp_path, frame(16, flag=flags)), "label", mislabeled_column="flag",
                              valid_fraction=0.25)
    assert np.array_equal(data.mislabeled, np.array(flags)[data.train_rows])
    assert "flag" not in data.features and "flag" not in data.valid.columns
    as_int = load_training_data(write(tmp_path, frame(16, flag=[int(f) for f in flags])), "label",
                                mislabeled_column="flag")
    assert as_int.mislabeled.dtype == bool
    with raises(DataValidationError, "'nope' not found"):
        load_training_data(write(tmp_path, frame()), "label", mislabeled_column="nope")
    with raises(DataValidationError, "'flag'", "boolean"):
        load_training_data(write(tmp_path, frame(flag=["y"] * 12)), "label", mislabeled_column="flag")
    with raises(DataValidationError, "'flag'", "value 2 at row 1"):
        load_training_data(write(tmp_path, frame(flag=[0, 2] * 6)), "label", mislabeled_column="flag")


def test_labels_differing_only_by_whitespace_warn_and_stay_apart(tmp_path):
    labels = ["approved", "approved ", "denied", " denied"] * 5
    data = load_training_data(write(tmp_path, frame(20, label=labels, city=["n", "n "] * 10)), "label")
    assert len(data.warnings) == 2, data.warnings
    target, city = data.warnings
    assert target.startswith("d.parquet: target column 'label'") and "'approved' vs 'approved '" in target
    assert "' denied' vs 'denied'" in target and "'city'" in city and "'n' vs 'n '" in city
    _, enc = build_problem(data)
    assert len(enc.classes) == 4, "not merged silently either: the user decides"
    assert load_training_data(write(tmp_path, frame(20)), "label").warnings == ()


def test_whitespace_variant_only_in_the_validation_file_warns(tmp_path):
    train = write(tmp_path, frame(), "train.parquet")
    valid = write(tmp_path, frame(6, city=["a ", "b", "c"] * 2), "v.parquet")
    warnings = load_training_data(train, "label", valid=valid).warnings
    assert len(warnings) == 1 and "'a' vs 'a '" in warnings[0]


def test_valid_naming_the_data_file_is_refused(tmp_path):
    data = write(tmp_path, frame(), "d.parquet")
    (tmp_path / "link.parquet").symlink_to(data)
    for same in (data, tmp_path / "." / "d.parquet", tmp_path / "link.parquet"):
        with raises(ConfigError, "is the data file"):
            load_training_data(data, "label", valid=same)
    copy = write(tmp_path, frame(), "copy.csv")
    with raises(DataValidationError, "copy.csv", "same rows as d.parquet"):
        load_training_data(data, "label", valid=copy)


@pytest.mark.parametrize(("n", "fraction", "left"), [(1000, 0.999, 2), (12, 0.5, 6), (40, 0.9, 4)])
def test_split_leaving_too_few_training_rows_is_refused(tmp_path, n, fraction, left):
    path = write(tmp_path, frame(n))
    with raises(DataValidationError, f"valid_fraction {fraction:g} leaves {left} training rows",
                "at least 10 training rows and 2 per class"):
        load_training_data(path, "label", valid_fraction=fraction)


def test_split_minimums_hold_at_the_boundary(tmp_path):
    assert load_training_data(write(tmp_path, frame(12)), "label").train.height == 10  # exactly the minimum
    skewed = ["a"] * 18 + ["b"] * 2  # b keeps 1 training row whatever the fraction
    with raises(DataValidationError, "class 'b': 1"):
        load_training_data(write(tmp_path, frame(20, label=skewed)), "label")


# --- encoder --------------------------------------------------------------------------

FIXTURE = pl.DataFrame({
    "x": [1, 2, 3],
    "flag": [True, False, True],
    "color": ["red", "blue", "red"],
    "y": ["b", "a", "b"],
})


def test_encoding_is_exact_on_three_rows():
    enc = TabularEncoder.fit(FIXTURE, "y")
    s = math.sqrt(2 / 3)
    f_std = math.sqrt(2 / 9)
    expected = np.array([
        [-1 / s, (1 - 2 / 3) / f_std, 0, 1],
        [0, (0 - 2 / 3) / f_std, 1, 0],
        [1 / s, (1 - 2 / 3) / f_std, 0, 1],
    ], dtype=np.float32)
    np.testing.assert_allclose(enc.transform(FIXTURE), expected, rtol=1e-6)
    assert enc.encoded_names == ["x", "flag", "color=blue", "color=red"]
    assert enc.classes == ("a", "b") and enc.labels(FIXTURE).tolist() == [1, 0, 1]
    assert enc.input_schema() == [("x", "long"), ("flag", "boolean"), ("color", "string"), ("y", "string")]
    unseen = FIXTURE.with_columns(pl.Series("color", ["green", "blue", "red"]))
    assert enc.transform(unseen)[0, 2:].tolist() == [0, 0]


def test_constant_column_encodes_to_zero():
    enc = TabularEncoder.fit(FIXTURE.with_columns(pl.lit(5.0).alias("x")), "y")
    assert enc.columns[0].std == 1.0
    assert enc.transform(FIXTURE.with_columns(pl.lit(5.0).alias("x")))[:, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("labels", [["b", "a", "b"], [2, 1, 2], [True, False, True]])
def test_encoder_json_round_trip(labels):
    df = FIXTURE.with_columns(pl.Series("y", labels), pl.Series("z", [0.1, 0.2, 0.7]))
    enc = TabularEncoder.fit(df, "y")
    back = TabularEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    assert np.array_equal(back.transform(df), enc.transform(df))
    assert np.array_equal(back.labels(df), enc.labels(df))


@pytest.mark.parametrize(("df", "kwargs", "fragments"), [
    (FIXTURE.drop("color"), {}, ["missing", "'color'"]),
    (FIXTURE.drop("y"), {}, ["missing", "'y'"]),
    (FIXTURE.with_columns(pl.lit(1).alias("id")), {}, ["extra", "'id'"]),
    (FIXTURE.with_columns(pl.Series("x", ["1", "2", "3"])), {}, ["'x'", "dtype", "numeric"]),
    (FIXTURE.with_columns(pl.Series("flag", [1, 0, 1])), {}, ["'flag'", "boolean"]),
    (FIXTURE.with_columns(pl.Series("y", ["a", "c", "d"])), {}, ["'y'", "2 labels", "'c'"]),
    (FIXTURE.with_columns(pl.Series("x", [1.0, float("nan"), 2.0])), {}, ["'x'", "NaN", "row 1"]),
    (FIXTURE.with_columns(pl.Series("color", ["red", None, "red"])), {}, ["'color'", "null"]),
    (FIXTURE.clear(), {}, ["no rows"]),
])
def test_scoring_validation(df, kwargs, fragments):
    enc = TabularEncoder.fit(FIXTURE, "y")
    with raises(SchemaMismatchError, *fragments):
        enc.validate_scoring_frame(df, **kwargs)


def test_scoring_accepts_compatible_frames():
    enc = TabularEncoder.fit(FIXTURE, "y")
    enc.validate_scoring_frame(FIXTURE.with_columns(pl.col("x").cast(pl.Float32)))
    enc.validate_scoring_frame(FIXTURE.drop("y"), require_target=False)
    enc.validate_scoring_frame(FIXTURE.with_columns(pl.lit(1).alias("id")), ignore=["id"])
    enc.validate_scoring_frame(FIXTURE.select(reversed(FIXTURE.columns)))
    pd = pytest.importorskip("pandas")
    enc.validate_scoring_frame(pl.from_pandas(FIXTURE.to_pandas()))
    with raises(SchemaMismatchError, "'x'", "null"):
        enc.validate_scoring_frame(pd.DataFrame({**FIXTURE.to_pandas(), "x": [1.0, np.nan, 2.0]}))


def test_build_problem(tmp_path):
    data = load_training_data(write(tmp_path, frame(20, flag=[False] * 20)), "label",
                              mislabeled_column="flag")
    problem, enc = build_problem(data)
    assert problem.x_train.dtype == np.float32 and problem.y_train.dtype == np.int64
    assert problem.x_train.shape == (data.train.height, enc.n_encoded) == (16, 5)
    assert problem.x_valid.shape == (4, 5) and problem.n_classes == 2
    assert "flag" not in enc.feature_columns
    np.testing.assert_allclose(problem.x_train[:, :2].mean(axis=0), 0, atol=1e-6)


# --- demo -----------------------------------------------------------------------------

def test_demo_is_reproducible_with_exact_flips():
    demo = make_demo(seed=7)
    assert demo.train.equals(make_demo(seed=7).train)
    assert not demo.train.equals(make_demo(seed=8).train)
    assert (demo.train.height, demo.valid.height, demo.new.height) == (500, 100, 300)
    assert demo.train[DEMO_FLIP_COLUMN].sum() == 100 and demo.new[DEMO_FLIP_COLUMN].sum() == 60
    assert demo.valid[DEMO_FLIP_COLUMN].sum() == 0
    for part, clean in ((demo.train, demo.clean_train), (demo.new, demo.clean_new)):
        differs = part[DEMO_TARGET].to_numpy() != clean
        assert np.array_equal(differs, part[DEMO_FLIP_COLUMN].to_numpy())
    assert set(demo.train[DEMO_TARGET]) == {"approved", "denied"}
    assert sorted(set(demo.train["region"])) == ["north", "south", "west"]
    assert make_demo(seed=1, n_train=50, flip_fraction=0.1).train[DEMO_FLIP_COLUMN].sum() == 5


def test_write_demo_round_trips(tmp_path):
    paths = write_demo(tmp_path / "demo", seed=2)
    assert sorted(paths) == ["new", "train", "valid"]
    assert read_table(paths["train"]).equals(make_demo(seed=2).train)
    assert not list((tmp_path / "demo").glob("*.tmp"))
    data = load_training_data(paths["train"], DEMO_TARGET, valid=paths["valid"],
                              mislabeled_column=DEMO_FLIP_COLUMN)
    problem, enc = build_problem(data)
    assert problem.n == 500 and enc.n_encoded == 6 + 3
    enc.validate_scoring_frame(read_table(paths["new"]), ignore=[DEMO_FLIP_COLUMN])
