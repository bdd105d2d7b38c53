"""One schema check for training, validation and scoring (data/schema.py), and the
mislabeled-flag column that curation checks before scoring."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from amortval.data.encoding import TabularEncoder
from amortval.data.schema import FrameSchema, check_frame, mislabeled_flags
from amortval.data.tabular import load_training_data
from amortval.errors import DataValidationError, SchemaMismatchError

N = 12
GOOD = pl.DataFrame({
    "age": list(range(N)),
    "income": [1000.0 + 10 * i for i in range(N)],
    "city": [("a", "b", "c")[i % 3] for i in range(N)],
    "label": [("yes", "no")[i % 2] for i in range(N)],
})
BAD = {
    "missing feature": GOOD.drop("income"),
    "extra column": GOOD.with_columns(pl.lit(1).alias("extra")),
    "retyped feature": GOOD.with_columns(pl.col("age").cast(pl.String)),
    "NaN feature": GOOD.with_columns(pl.when(pl.int_range(N) == 4).then(float("nan")).otherwise(pl.col("income"))
                                     .alias("income")),
    "null category": GOOD.with_columns(pl.when(pl.int_range(N) == 2).then(None).otherwise(pl.col("city"))
                                       .alias("city")),
    "null label": GOOD.with_columns(pl.when(pl.int_range(N) == 1).then(None).otherwise(pl.col("label"))
                                    .alias("label")),
    "unknown label": GOOD.with_columns(pl.Series("label", ["yes", "maybe", "perhaps"] * 4)),
    "retyped label": GOOD.with_columns((pl.col("label") == "yes").alias("label")),
}


def _body(error: Exception) -> str:
    """The message without the input's name ('v.parquet: ...', 'scoring data: ...')."""
    return str(error).split(": ", 1)[1]


@pytest.mark.parametrize("case", list(BAD))
def test_validation_file_and_scoring_get_the_same_check(tmp_path, case):
    GOOD.write_parquet(tmp_path / "train.parquet")
    BAD[case].write_parquet(tmp_path / "v.parquet")
    with pytest.raises(DataValidationError) as valid_error:
        load_training_data(tmp_path / "train.parquet", "label", valid=tmp_path / "v.parquet")
    with pytest.raises(SchemaMismatchError) as scoring_error:
        TabularEncoder.fit(GOOD, "label").validate_scoring_frame(BAD[case])
    assert type(valid_error.value) is DataValidationError, "validation input is not a scoring mismatch"
    assert str(valid_error.value).startswith("v.parquet: ")
    assert _body(valid_error.value) == _body(scoring_error.value)
    assert valid_error.value.column == scoring_error.value.column is not None


@pytest.mark.parametrize(("labels", "trained"), [(["yes", None] * 6, ["yes", "no"] * 6),
                                                   ([0.0, 1.5] * 6, [0, 1] * 6)])
def test_training_and_scoring_check_the_target_alike(labels, trained):
    bad = GOOD.with_columns(pl.Series("label", labels))
    with pytest.raises(DataValidationError) as training:
        check_frame(bad, FrameSchema("label"), name="d.csv")
    encoder = TabularEncoder.fit(GOOD.with_columns(pl.Series("label", trained)), "label")
    with pytest.raises(SchemaMismatchError) as scoring:
        encoder.validate_scoring_frame(bad)
    assert _body(training.value) == _body(scoring.value)
    assert training.value.column == "label"


def test_an_all_null_column_at_scoring_is_reported_as_nulls():
    enc = TabularEncoder.fit(GOOD, "label")
    for column in ("income", "label"):
        with pytest.raises(SchemaMismatchError, match=f"'{column}' has {N} null values"):
            enc.validate_scoring_frame(GOOD.with_columns(pl.lit(None, pl.Null).alias(column)))


def test_scoring_without_the_target_and_with_ignored_columns():
    enc = TabularEncoder.fit(GOOD, "label")
    checked = enc.validate_scoring_frame(GOOD.drop("label").with_columns(pl.lit(True).alias("flag")),
                                         require_target=False, ignore=["flag"])
    assert checked.columns == ["age", "income", "city", "flag"]
    with pytest.raises(SchemaMismatchError, match="extra columns 'flag'"):
        enc.validate_scoring_frame(GOOD.with_columns(pl.lit(True).alias("flag")))


def test_schema_learned_from_training_is_what_the_encoder_keeps():
    checked = check_frame(GOOD.with_columns(pl.col("city").cast(pl.Categorical)), FrameSchema("label"), name="d")
    assert checked.frame["city"].dtype == pl.String
    assert [(c.name, c.type) for c in checked.schema.features] == [
        ("age", "long"), ("income", "double"), ("city", "string")]
    assert checked.schema.classes == ("no", "yes")
    assert TabularEncoder.fit(GOOD, "label").schema().classes == checked.schema.classes


# --- mislabeled flags -----------------------------------------------------------------

def test_mislabeled_flags_accepts_booleans_and_0_1():
    flags = mislabeled_flags(pl.DataFrame({"f": [True, False, True]}), "f", name="new.parquet")
    assert flags.dtype == bool and flags.tolist() == [True, False, True]
    assert mislabeled_flags(pl.DataFrame({"f": [0, 1, 1]}), "f", name="n").tolist() == [False, True, True]


@pytest.mark.parametrize(("values", "fragments"), [
    (None, ["'flipped' not found", "available columns: x"]),
    ([True, None, False], ["'flipped' has 1 null values (first at row 1)"]),
    (["yes", "no", "yes"], ["'flipped' must be boolean", "dtype String"]),
    ([0.0, 1.0, 0.0], ["'flipped' must be boolean", "dtype Float64"]),
    ([0, 2, 1], ["'flipped' must be boolean", "value 2 at row 1"]),
])
def test_mislabeled_flags_refuses_bad_columns_naming_them(values, fragments):
    frame = pl.DataFrame({"x": [1, 2, 3]})
    if values is not None:
        frame = frame.with_columns(pl.Series("flipped", values))
    with pytest.raises(DataValidationError) as info:
        mislabeled_flags(frame, "flipped", name="new.parquet")
    assert info.value.column == "flipped" and str(info.value).startswith("new.parquet: ")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_training_uses_the_same_flag_check(tmp_path):
    GOOD.with_columns(pl.Series("flag", [True, None] * 6)).write_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataValidationError, match="'flag' has 6 null values"):
        load_training_data(tmp_path / "d.parquet", "label", mislabeled_column="flag")
    assert np.array_equal(mislabeled_flags(GOOD.with_columns(pl.lit(False).alias("f")), "f", name="d"),
                          np.zeros(N, bool))
