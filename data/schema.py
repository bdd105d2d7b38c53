"""The one check of a table against a schema: training, validation and scoring alike.

A ``FrameSchema`` says which feature columns a frame must have (with their type
families), the label column and its classes, and the null/NaN/inf policy.
``check_frame`` holds a frame to it and returns the frame with every checked column in
its canonical dtype. Training builds the schema from the frame itself (features and
classes left open, to be learned); the encoder keeps the learned schema, so the
validation file and every scoring table are held to exactly what the network was
trained on. Training and validation input fails with ``DataValidationError``, scoring
input with its subclass ``SchemaMismatchError``; every message names the column.

Column types, as polars reads them from CSV or Parquet:

- supported: integers (Int8..Int128, UInt8..UInt128), floats (Float16/32/64),
  Decimal, Boolean, String, Categorical and Enum. Categorical and Enum become String,
  Decimal becomes Float64, Float16 becomes Float32, and UInt64/Int128/UInt128 become
  Int64 when every value fits (else Float64 for a feature; a label beyond 64 bits is
  refused, as it cannot be told apart from its neighbours once rounded). After this
  every column is one that numpy, pandas and MLflow's signature types (double, long,
  string, boolean) take without loss of meaning.
- refused, with what to do instead: Date, Datetime, Duration, Time (convert to a
  number), Binary (decode to a string), List, Array (one column per element), Struct
  (unnest), Object, and Null (a column with no values at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import polars as pl

from amortval.data.columns import (
    MAX_CATEGORIES,
    canonical,
    column_type,
    float_collision,
    label_values,
    missing_mask,
    refusal,
    type_family,
    value_problem,
)
from amortval.errors import DataValidationError


@dataclass(frozen=True)
class ColumnSpec:
    """One column as trained: MLflow-style ``type`` and the polars ``dtype`` (for messages)."""

    name: str
    type: str  # "double" | "long" | "string" | "boolean"
    dtype: str


@dataclass(frozen=True)
class FrameSchema:
    """What a frame must hold. ``None`` fields are learned from the frame (training)."""

    target: str
    features: tuple[ColumnSpec, ...] | None = None  # None: every column but target and ignored
    target_spec: ColumnSpec | None = None
    classes: tuple | None = None  # None: learned; at least 2 are needed
    allow_missing: bool = False  # null/NaN features are imputed (encoding.py), else refused
    encode: bool = True  # string features are one-hot encoded, else refused


class CheckedFrame(NamedTuple):
    frame: pl.DataFrame  # checked columns in canonical dtypes, others untouched
    schema: FrameSchema  # with features, target_spec and classes filled in


def check_frame(frame: pl.DataFrame, schema: FrameSchema, *, name: str, error: type = DataValidationError,
                ignore: Sequence[str] = (), require_target: bool = True, min_rows: int = 1) -> CheckedFrame:
    """Raise ``error`` naming the column and problem unless ``frame`` fits ``schema``.

    Order: rows present; columns missing, extra (not in ``ignore``), or no feature at all;
    the target (dtype, no null/NaN/inf, integral if float, known or >= 2 classes);
    each feature (dtype family, values, at most ``MAX_CATEGORIES`` levels when
    learned); then ``min_rows``. A target present but not required is checked too.
    """
    if frame.height == 0:
        raise error(f"{name}: no rows")
    learning = schema.features is None
    if learning and schema.target not in frame.columns:
        raise error(f"{name}: target column '{schema.target}' not found; available columns: "
                    f"{', '.join(frame.columns)}", schema.target)
    skip = {schema.target, *ignore}
    if learning:
        names = [c for c in frame.columns if c not in skip]
        if not names:
            raise error(f"{name}: no feature columns besides target '{schema.target}'")
    else:
        names = [c.name for c in schema.features]
        expected = [*names, *([schema.target] if require_target else [])]
        missing = [c for c in expected if c not in frame.columns]
        if missing:
            raise error(f"{name}: missing columns {', '.join(repr(c) for c in missing)} that the "
                        "training data has", missing[0])
        extra = [c for c in frame.columns if c not in {*names, *skip}]
        if extra:
            raise error(f"{name}: extra columns {', '.join(repr(c) for c in extra)} not in the training "
                        "data (drop them or list them as ignored)", extra[0])
    trained = {c.name: c for c in schema.features or ()}
    columns: dict[str, pl.Series] = {}
    classes = schema.classes
    target_spec = schema.target_spec
    if schema.target in frame.columns:
        series, classes, target_spec = check_target(frame[schema.target], schema, name=name, error=error)
        columns[schema.target] = series
    specs = []
    for column in names:
        columns[column], spec = _check_feature(frame[column], trained.get(column), schema, name=name, error=error)
        specs.append(spec)
    if frame.height < min_rows:
        raise error(f"{name}: only {frame.height} rows; at least {min_rows} are needed")
    learned = replace(schema, features=tuple(specs), target_spec=target_spec, classes=classes)
    return CheckedFrame(frame.with_columns(list(columns.values())), learned)


def check_target(series: pl.Series, schema: FrameSchema, *, name: str,
                 error: type = DataValidationError) -> tuple[pl.Series, tuple | None, ColumnSpec]:
    """The label column -> (canonical series, classes, spec). A label never may be missing."""
    column = series.name
    if schema.target_spec is not None and series.dtype == pl.Null:
        canon = series  # all null: the value check below names it, the clearer message
    else:
        canon = _check_dtype(series, schema.target_spec, name=name, error=error, role="target column",
                             advice="labels must be int, bool or string")
    if series.dtype.is_integer() and canon.dtype.is_float():
        first = int((canon.abs() >= 2.0 ** 63).arg_true()[0])
        raise error(f"{name}: target column '{column}' has label {series[first]} at row {first}, beyond "
                    "64-bit integers; convert the labels to strings", column)
    problem = value_problem(canon)
    if problem:
        raise error(f"{name}: target {problem}", column)
    if canon.dtype.is_float():
        fractional = canon != canon.floor()
        if fractional.any():
            first = int(fractional.arg_true()[0])
            raise error(f"{name}: target column '{column}' has non-integer values (e.g. {canon[first]} at "
                        f"row {first}); classification labels must be int, bool or string", column)
    values = label_values(canon)
    spec = schema.target_spec or ColumnSpec(column, column_type(canon.dtype), str(series.dtype))
    if schema.classes is None:
        classes = tuple(sorted(set(values)))
        if len(classes) < 2:
            raise error(f"{name}: target column '{column}' has a single class {classes[0]!r}; "
                        "valuation needs at least 2 classes", column)
        return canon, classes, spec
    known = set(schema.classes)
    bad = [i for i, v in enumerate(values) if v not in known]
    if bad:
        unknown = sorted({repr(values[i]) for i in bad})
        raise error(f"{name}: target column '{column}' has {len(bad)} labels not in the training classes "
                    f"{list(schema.classes)} (first at row {bad[0]}): {', '.join(unknown[:5])}", column)
    return canon, schema.classes, spec


def _check_feature(series: pl.Series, trained: ColumnSpec | None, schema: FrameSchema, *, name: str,
                   error: type) -> tuple[pl.Series, ColumnSpec]:
    column = series.name
    if trained is not None and series.dtype == pl.Null:
        canon = series  # all null: the value check below names it, the clearer message
    else:
        canon = _check_dtype(series, trained, name=name, error=error, role="column",
                             advice="supported: integers, floats, decimals, booleans, strings, categoricals")
    kind = column_type(canon.dtype) if canon.dtype != pl.Null else trained.type
    merged = float_collision(series)
    if merged:
        raise error(f"{name}: column '{column}' has distinct values that are one 64-bit float (e.g. {merged[0]} "
                    f"and {merged[1]}), so encoding would merge them; subtract an offset or rescale it", column)
    if not schema.encode and kind == "string":
        raise error(f"{name}: column '{column}' is non-numeric (dtype {series.dtype}) and encoding is disabled "
                    "(--no-encode); convert it to numbers, drop it, or allow one-hot encoding", column)
    problem = value_problem(canon, allow_missing=schema.allow_missing)
    if problem:
        if not schema.allow_missing and missing_mask(canon).any():
            problem += "; pass --allow-missing to impute missing feature values"
        raise error(f"{name}: {problem}", column)
    if trained is None and kind == "string":
        levels = canon.n_unique()
        if levels > MAX_CATEGORIES:
            raise error(f"{name}: string column '{column}' has {levels} distinct values (more than "
                        f"{MAX_CATEGORIES}); drop it or encode it numerically", column)
    return canon, trained or ColumnSpec(column, kind, str(series.dtype))


def _check_dtype(series: pl.Series, trained: ColumnSpec | None, *, name: str, error: type, role: str,
                 advice: str) -> pl.Series:
    """Refuse an unsupported dtype (with what to do) or one of another family than trained."""
    reason = refusal(series.dtype)
    if reason:
        raise error(f"{name}: {role} '{series.name}' has unsupported dtype {series.dtype}; {reason} "
                    f"({advice})", series.name)
    got = column_type(series.dtype)
    if trained is not None and type_family(got) != type_family(trained.type):
        raise error(f"{name}: column '{series.name}' has dtype {series.dtype} ({type_family(got)}); the "
                    f"training data has {trained.dtype} ({type_family(trained.type)})", series.name)
    return canonical(series)


def mislabeled_flags(frame: pl.DataFrame, column: str, *, name: str) -> np.ndarray:
    """The known-mislabeled flags (bool array, one per row) from ``column``.

    Flags are for evaluation only (AUROC of low values against known label errors), but
    a bad flag column would surface after every score is written, so training and
    curation both call this first. Boolean or 0/1 integer columns are accepted; a
    missing column, a null, or any other dtype or value raises ``DataValidationError``.
    """
    if column not in frame.columns:
        raise DataValidationError(f"{name}: mislabeled column '{column}' not found; available columns: "
                                  f"{', '.join(frame.columns)}", column)
    series = frame[column]
    problem = value_problem(series)
    if problem:
        raise DataValidationError(f"{name}: mislabeled {problem}; flags must be true or false", column)
    if series.dtype == pl.Boolean:
        return series.to_numpy().astype(bool)
    if series.dtype.is_integer():
        other = ~series.is_in([0, 1])
        if not other.any():
            return series.cast(pl.Boolean).to_numpy().astype(bool)
        first = int(other.arg_true()[0])
        detail = f"has value {series[first]} at row {first}"
    else:
        detail = f"has dtype {series.dtype}"
    raise DataValidationError(
        f"{name}: mislabeled column '{column}' must be boolean (or 0/1 integers) but {detail}", column)
