"""Extreme numbers never become silent wrong values: encoded columns are finite and
keep their distinct values, or the input is refused naming column, row and value."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from amortval.data.encoding import TabularEncoder, build_problem
from amortval.data.tabular import load_training_data
from amortval.errors import AmortvalError, DataValidationError, SchemaMismatchError
from amortval.models.valuation_model import ValuationModel
from amortval.models.valuation_net import ValuationEnsemble, ValuationNet

N = 20
LABELS = ["yes", "no"] * (N // 2)


def load(tmp_path, x: list, *, valid: pl.DataFrame | None = None):
    df = pl.DataFrame({"x": x, "z": np.arange(N, dtype=np.float64), "label": LABELS})
    df.write_parquet(tmp_path / "d.parquet")
    if valid is not None:
        valid.write_parquet(tmp_path / "v.parquet")
    return load_training_data(tmp_path / "d.parquet", "label", valid=tmp_path / "v.parquet" if valid is not None
                              else None)


def test_plus_minus_1e308_encodes_to_finite_distinct_values(tmp_path):
    data = load(tmp_path, [1e308, -1e308] * (N // 2))
    problem, enc = build_problem(data)
    column = np.concatenate([problem.x_train[:, 0], problem.x_valid[:, 0]])
    assert np.isfinite(column).all()
    raw = np.concatenate([data.train["x"].to_numpy(), data.valid["x"].to_numpy()])
    np.testing.assert_allclose(column, np.sign(raw), rtol=1e-6)  # mean 0, std 1e308: exactly +-1
    assert enc.columns[0].std == pytest.approx(1e308)


def test_one_1e200_does_not_overflow_the_std(tmp_path):
    x = [float(i) for i in range(N - 1)] + [1e200]
    data = load(tmp_path, x, valid=pl.DataFrame({"x": [0.0, 1e200], "z": [0.0, 1.0], "label": ["yes", "no"]}))
    problem, enc = build_problem(data)
    expected_std = 1e200 * np.sqrt(N - 1) / N  # one outlier dominates: std = M sqrt(n-1) / n
    assert enc.columns[0].std == pytest.approx(expected_std, rel=1e-9)
    outlier = problem.x_train[:, 0]
    assert np.isfinite(outlier).all() and outlier[-1] == pytest.approx(np.sqrt(N - 1), rel=1e-6)
    assert problem.x_valid[:, 0].tolist() != [0.0, 0.0], "the column must not collapse to 0"


def test_value_beyond_float32_at_scoring_is_refused_with_column_and_row():
    train = pl.DataFrame({"x": [-1.0, 1.0] * 5, "label": ["a", "b"] * 5})  # mean 0, std 1
    enc = TabularEncoder.fit(train, "label")
    new = pl.DataFrame({"x": [0.5, 1e308, 5e38], "label": ["a", "b", "a"]})
    checked = enc.validate_scoring_frame(new)  # the values are finite: the schema is fine
    with pytest.raises(SchemaMismatchError, match=r"'x' value 1e\+308 at row 1 cannot be encoded.*\(2 such rows\)"):
        enc.transform(checked)


def test_value_beyond_float32_in_the_validation_file_is_a_data_error(tmp_path):
    data = load(tmp_path, [-1.0, 1.0] * (N // 2), valid=pl.DataFrame({"x": [1.0, -1e300], "z": [0.0, 1.0],
                                                                     "label": ["yes", "no"]}))
    with pytest.raises(DataValidationError, match=r"validation rows\): column 'x' value -1e\+300 at row 1") as info:
        build_problem(data)
    assert type(info.value) is DataValidationError and info.value.column == "x"


@pytest.mark.parametrize("dtype", [pl.Int64, pl.UInt64, pl.Decimal(38, 0)])
def test_integers_that_merge_in_float64_are_refused(tmp_path, dtype):
    big = [2**53 + i % 2 for i in range(N)]  # 2**53 + 1 is not a float64: the column would encode as 0
    with pytest.raises(DataValidationError, match=r"'x' has distinct values that are one 64-bit float "
                                                  r"\(e.g. 9007199254740992 and 9007199254740993\)"):
        load(tmp_path, pl.Series(big).cast(dtype))


def test_predict_raises_instead_of_returning_non_finite_values():
    frame = pl.DataFrame({"x": [0.0, 1.0, 2.0], "label": ["a", "b", "a"]})
    enc = TabularEncoder.fit(frame, "label")
    net = ValuationEnsemble([ValuationNet(enc.n_encoded, enc.n_classes, hidden=4, layers=1)])
    model = ValuationModel(enc, net, target_scale=1.0)
    assert np.isfinite(model.predict(frame)).all()
    with torch.no_grad():
        net.members[0].head.bias[1] = float("nan")  # a broken network: class 'b' reads NaN
    with pytest.raises(AmortvalError, match=r"1 non-finite values \(first at row 1"):
        model.predict(frame)
