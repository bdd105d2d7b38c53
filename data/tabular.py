"""Reading and validating the user's table, and splitting off the validation rows.

Everything here runs before any Monte Carlo work: a bad file or column fails with a
``DataValidationError`` that names the column and the problem, so nothing is written
for an input that could never be valued. Row numbers in messages are 0-based data rows
(header excluded), the same numbering as ``TabularData.train_rows``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from amortval.data.split import stratified_split
from amortval.errors import ConfigError, DataValidationError

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
# A string column with more levels than this is almost always an id or free text;
# one-hot encoding it would blow up memory without helping the utility model.
MAX_CATEGORIES = 200


def column_type(dtype: pl.DataType) -> str | None:
    """MLflow-style type of a supported column: double, long, string, boolean; else None."""
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "long"
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return "double"
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "string"
    return None


def type_family(column_type_name: str) -> str:
    """Compatibility family: long and double are both numeric; string and boolean stand alone."""
    return "numeric" if column_type_name in ("long", "double") else column_type_name


def value_problem(series: pl.Series, *, allow_missing: bool = False) -> str | None:
    """First null / NaN / inf problem of a column as a message, or None when all values are usable.

    ``allow_missing`` accepts null and NaN (they are imputed, see ``encoding.py``) but
    never infinity: an infinite value is a broken measurement, not a missing one.
    """
    checks = [] if allow_missing else [("null", series.is_null())]
    if series.dtype.is_float():
        checks += [] if allow_missing else [("NaN", series.is_nan())]
        checks += [("infinite", series.is_infinite())]
    for what, mask in checks:
        count = int(mask.sum() or 0)
        if count:
            first = int(mask.arg_true()[0])
            return f"column '{series.name}' has {count} {what} values (first at row {first})"
    if allow_missing and missing_mask(series).all():
        return f"column '{series.name}' has no values at all (every row is null or NaN)"
    return None


def missing_mask(series: pl.Series) -> pl.Series:
    """True where a value is missing: null, or NaN in a float column."""
    return series.is_nan().fill_null(True) if series.dtype.is_float() else series.is_null()


def label_values(series: pl.Series) -> list:
    """Labels as plain Python values; integral floats become ints (1.0 -> 1).

    Assumes ``validate_target`` passed (no null/NaN, integral if float).
    """
    if series.dtype.is_float():
        return [int(v) for v in series.to_list()]
    if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
        series = series.cast(pl.String)
    return series.to_list()


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a CSV or Parquet file with polars; every way it can be unusable is a DataValidationError.

    CSV types are inferred from the whole file (not the first rows), so a late float
    does not turn an int column into a parse error. Polars silently renames a repeated
    CSV header to ``name_duplicated_0``; the raw header is checked first so the user
    hears about the duplicate instead of getting a phantom feature.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataValidationError(
            f"unsupported file type {p.suffix or '(no suffix)'!r} for {p}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not p.is_file():
        raise DataValidationError(f"data file {p} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise DataValidationError(f"data file {p} is empty")
    try:
        if suffix == ".csv":
            header = pl.read_csv(p, has_header=False, n_rows=1, infer_schema=False).row(0)
            _check_unique([str(h) for h in header], p)
            frame = pl.read_csv(p, infer_schema_length=None)
        else:
            frame = pl.read_parquet(p)
    except pl.exceptions.DuplicateError as exc:
        match = re.search(r"name '(.+?)'", str(exc))
        column = match.group(1) if match else None
        raise DataValidationError(
            f"data file {p} has duplicate column name {column!r}" if column
            else f"data file {p} has duplicate column names: {exc}",
            column,
        ) from exc
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise DataValidationError(f"cannot read {p}: {exc}") from exc
    if frame.width == 0 or frame.height == 0:
        raise DataValidationError(f"data file {p} has no rows")
    return frame


def _check_unique(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataValidationError(f"data file {path} has duplicate column name {name!r}", name)
        seen.add(name)


def require_column(frame: pl.DataFrame, column: str, role: str, *, name: str) -> None:
    """Fail naming the missing column, its role, and what the file does have."""
    if column not in frame.columns:
        raise DataValidationError(
            f"{name}: {role} column '{column}' not found; available columns: "
            f"{', '.join(frame.columns)}",
            column,
        )


def validate_target(frame: pl.DataFrame, target: str, *, name: str = "data") -> list:
    """Check the label column and return its sorted classes (plain Python values)."""
    require_column(frame, target, "target", name=name)
    series = frame[target]
    kind = column_type(series.dtype)
    if kind is None:
        raise DataValidationError(
            f"{name}: target column '{target}' has unsupported dtype {series.dtype}; "
            "labels must be int, bool or string",
            target,
        )
    problem = value_problem(series)
    if problem:
        raise DataValidationError(f"{name}: target {problem}", target)
    if kind == "double":
        values = series.cast(pl.Float64)
        fractional = values != values.floor()
        if fractional.any():
            first = int(fractional.arg_true()[0])
            raise DataValidationError(
                f"{name}: target column '{target}' has non-integer values (e.g. {values[first]} "
                f"at row {first}); classification labels must be int, bool or string",
                target,
            )
    classes = sorted(set(label_values(series)))
    if len(classes) < 2:
        raise DataValidationError(
            f"{name}: target column '{target}' has a single class {classes[0]!r}; "
            "valuation needs at least 2 classes",
            target,
        )
    return classes


def feature_columns(frame: pl.DataFrame, target: str, exclude: Sequence[str] = ()) -> list[str]:
    """Feature columns in input order: everything except the target and ``exclude``."""
    skip = {target, *exclude}
    return [c for c in frame.columns if c not in skip]


def check_feature(series: pl.Series, *, name: str = "data", allow_missing: bool = False,
                  encode: bool = True) -> None:
    """One feature column: supported dtype, no null/NaN/inf (null/NaN allowed with
    ``allow_missing``), bounded number of categories; numeric only unless ``encode``."""
    if series.dtype != pl.Null and column_type(series.dtype) is None:
        raise DataValidationError(
            f"{name}: column '{series.name}' has unsupported dtype {series.dtype}; "
            "supported: integers, floats, booleans, strings/categoricals",
            series.name,
        )
    if not encode and column_type(series.dtype) == "string":
        raise DataValidationError(
            f"{name}: column '{series.name}' is non-numeric (dtype {series.dtype}) and encoding "
            "is disabled (--no-encode); convert it to numbers, drop it, or allow one-hot encoding",
            series.name,
        )
    problem = value_problem(series, allow_missing=allow_missing)
    if problem:
        if not allow_missing and missing_mask(series).any():
            problem += "; pass --allow-missing to impute missing feature values"
        raise DataValidationError(f"{name}: {problem}", series.name)
    if column_type(series.dtype) == "string":
        levels = series.cast(pl.String).n_unique()
        if levels > MAX_CATEGORIES:
            raise DataValidationError(
                f"{name}: string column '{series.name}' has {levels} distinct values "
                f"(more than {MAX_CATEGORIES}); drop it or encode it numerically",
                series.name,
            )


def validate_training_frame(
    frame: pl.DataFrame,
    target: str,
    *,
    exclude: Sequence[str] = (),
    min_rows: int = 4,
    name: str = "data",
    allow_missing: bool = False,
    encode: bool = True,
) -> list:
    """Raise DataValidationError unless ``frame`` can be encoded and valued; return the
    sorted classes (so callers need not validate the target a second time).

    The target never may be missing, whatever ``allow_missing`` says: a row without a
    label has no marginal contribution to measure.
    """
    classes = validate_target(frame, target, name=name)
    features = feature_columns(frame, target, exclude)
    if not features:
        raise DataValidationError(f"{name}: no feature columns besides target '{target}'")
    for column in features:
        check_feature(frame[column], name=name, allow_missing=allow_missing, encode=encode)
    if frame.height < min_rows:
        raise DataValidationError(f"{name}: only {frame.height} rows; at least {min_rows} are needed")
    return classes


@dataclass(frozen=True)
class TabularData:
    """Validated training and validation rows, with their row numbers in the input file."""

    train: pl.DataFrame
    valid: pl.DataFrame
    target: str
    train_rows: np.ndarray
    valid_rows: np.ndarray | None
    n_input_rows: int
    mislabeled: np.ndarray | None
    mislabeled_column: str | None
    name: str
    allow_missing: bool = False  # null/NaN features imputed (encoding.py), else an error
    encode: bool = True  # one-hot string columns; without it they are an error

    @property
    def features(self) -> list[str]:
        exclude = [self.mislabeled_column] if self.mislabeled_column else []
        return feature_columns(self.train, self.target, exclude)


def _mislabeled_flags(frame: pl.DataFrame, column: str, *, name: str) -> np.ndarray:
    require_column(frame, column, "mislabeled", name=name)
    series = frame[column]
    problem = value_problem(series)
    if problem:
        raise DataValidationError(f"{name}: mislabeled {problem}", column)
    if series.dtype == pl.Boolean:
        return series.to_numpy()
    if series.dtype.is_integer():
        other = ~series.is_in([0, 1])
        if not other.any():
            return series.cast(pl.Boolean).to_numpy()
        first = int(other.arg_true()[0])
        detail = f"has value {series[first]} at row {first}"
    else:
        detail = f"has dtype {series.dtype}"
    raise DataValidationError(
        f"{name}: mislabeled column '{column}' must be boolean (or 0/1 integers) but {detail}",
        column,
    )


def _check_valid_frame(valid: pl.DataFrame, train: pl.DataFrame, target: str,
                       features: list[str], classes: list, extra_ok: Sequence[str], name: str,
                       allow_missing: bool, encode: bool) -> None:
    missing = [c for c in [*features, target] if c not in valid.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing columns {', '.join(repr(c) for c in missing)} (present in training data)",
            missing[0],
        )
    extra = [c for c in valid.columns if c not in {*features, target, *extra_ok}]
    if extra:
        raise DataValidationError(
            f"{name}: extra columns {', '.join(repr(c) for c in extra)} not in training data", extra[0]
        )
    for column in [*features, target]:
        if column != target:
            check_feature(valid[column], name=name, allow_missing=allow_missing, encode=encode)
        want, got = column_type(train[column].dtype), column_type(valid[column].dtype)
        if got is None or type_family(want) != type_family(got):
            raise DataValidationError(
                f"{name}: column '{column}' has dtype {valid[column].dtype}, training data has "
                f"{train[column].dtype}",
                column,
            )
    series = valid[target]
    problem = value_problem(series)
    if problem:
        raise DataValidationError(f"{name}: target {problem}", target)
    unknown = sorted({v for v in label_values(series)} - set(classes), key=repr)
    if unknown:
        raise DataValidationError(
            f"{name}: target column '{target}' has labels not in the training classes "
            f"{classes}: {unknown[:5]}",
            target,
        )


def load_training_data(
    data: str | Path,
    target: str,
    *,
    valid: str | Path | None = None,
    valid_fraction: float = 0.2,
    seed: int = 0,
    mislabeled_column: str | None = None,
    allow_missing: bool = False,
    encode: bool = True,
) -> TabularData:
    """Read and validate everything, then split; raises before any work and writes nothing.

    Without ``valid`` a seeded stratified split of ``data`` gives the validation rows.
    ``allow_missing`` accepts null/NaN features (imputed by the encoder); ``encode=False``
    refuses string columns instead of one-hot encoding them.
    The mislabeled column (known label errors, for evaluation only) is never a feature;
    it stays in ``train`` and is dropped from ``valid``.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    frame = read_table(data)
    name = Path(data).name
    if mislabeled_column is not None and mislabeled_column == target:
        raise ConfigError(f"mislabeled column '{mislabeled_column}' cannot be the target")
    exclude = [mislabeled_column] if mislabeled_column else []
    classes = validate_training_frame(frame, target, exclude=exclude, name=name,
                                      allow_missing=allow_missing, encode=encode)
    features = feature_columns(frame, target, exclude)
    flags = _mislabeled_flags(frame, mislabeled_column, name=name) if mislabeled_column else None
    keep = [*features, target]

    if valid is not None:
        valid_frame = read_table(valid)
        _check_valid_frame(valid_frame, frame, target, features, classes, exclude, Path(valid).name,
                           allow_missing, encode)
        train_idx, valid_idx = np.arange(frame.height, dtype=np.int64), None
        train, valid_part = frame, valid_frame.select(keep)
    else:
        train_idx, split_idx = stratified_split(label_values(frame[target]), valid_fraction, seed)
        train = frame[train_idx]
        if split_idx.size == 0 or train[target].n_unique() < 2:
            raise DataValidationError(
                f"{name}: too few rows per class to split off a validation set "
                f"({frame.height} rows, {len(classes)} classes); pass a validation file"
            )
        valid_idx, valid_part = split_idx, frame[split_idx].select(keep)
    return TabularData(
        train=train,
        valid=valid_part,
        target=target,
        train_rows=train_idx,
        valid_rows=valid_idx,
        n_input_rows=frame.height,
        mislabeled=None if flags is None else flags[train_idx].astype(bool),
        mislabeled_column=mislabeled_column,
        name=Path(data).stem,
        allow_missing=allow_missing,
        encode=encode,
    )
