"""One column at a time: its type family, its canonical dtype, and its unusable values.

The per-column vocabulary that ``schema.py`` (a frame against a schema) and
``encoding.py`` share; the module docstring of ``schema.py`` lists which polars types
are supported and why the others are refused.
"""

from __future__ import annotations

import polars as pl

# A string column with more levels than this is almost always an id or free text;
# one-hot encoding it would blow up memory without helping the utility model.
MAX_CATEGORIES = 200

_WIDE_INTEGERS = (pl.UInt64, pl.Int128, pl.UInt128)
_INT64_MAX = 2**63 - 1

# What to do instead, per refused dtype (matched on the dtype's base class).
_REFUSED = {
    pl.Date: "convert it to a number (e.g. days since a reference date) or drop it",
    pl.Datetime: "convert it to a number (e.g. seconds since a reference time) or drop it",
    pl.Duration: "convert it to a number (e.g. total seconds) or drop it",
    pl.Time: "convert it to a number (e.g. seconds since midnight) or drop it",
    pl.Binary: "decode it to a string or drop it",
    pl.List: "expand it into one numeric column per element or drop it",
    pl.Array: "expand it into one numeric column per element or drop it",
    pl.Struct: "unnest it into separate columns (DataFrame.unnest) or drop it",
    pl.Object: "convert it to a number or a string, or drop it",
    pl.Null: "it has no value in any row; drop it",
}


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


def refusal(dtype: pl.DataType) -> str | None:
    """Why a column of ``dtype`` cannot be valued and what to do instead; None if supported."""
    if column_type(dtype) is not None:
        return None
    for refused, advice in _REFUSED.items():
        if dtype == refused or isinstance(dtype, refused):
            return advice
    return "convert it to a number or a string, or drop it"


def canonical(series: pl.Series) -> pl.Series:
    """The series in a dtype numpy, pandas and MLflow take as is (see ``schema.py``).

    Categorical/Enum -> String, Decimal -> Float64, Float16 -> Float32, and
    UInt64/Int128/UInt128 -> Int64 when every value fits, else Float64 (the caller
    refuses that for labels). Other supported dtypes are returned unchanged.
    """
    dtype = series.dtype
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return series.cast(pl.String)
    if isinstance(dtype, pl.Decimal):
        return series.cast(pl.Float64)
    if dtype == pl.Float16:
        return series.cast(pl.Float32)
    if dtype in _WIDE_INTEGERS:
        low, high = series.min(), series.max()
        fits = high is None or (int(low) >= -_INT64_MAX - 1 and int(high) <= _INT64_MAX)
        return series.cast(pl.Int64 if fits else pl.Float64)
    return series


def float_collision(series: pl.Series) -> tuple | None:
    """Two distinct values of an integer or decimal column that are one float64, or None.

    The encoder computes in float64, whose integers are exact only up to 2**53: past
    that, neighbours merge (2**64 and 2**64 + 1 are one float), and a column made only
    of such neighbours would be encoded as a constant. Cheap when values are small.
    """
    if not (series.dtype.is_integer() or isinstance(series.dtype, pl.Decimal)):
        return None
    low, high = series.min(), series.max()
    if high is None or max(abs(int(low)), abs(int(high))) < 2**53:
        return None
    frame = pl.DataFrame({"raw": series.drop_nulls().unique()}).with_columns(as_float=pl.col("raw").cast(pl.Float64))
    merged = frame.filter(pl.col("as_float").is_duplicated()).sort("as_float", "raw")
    return None if merged.is_empty() else (merged["raw"][0], merged["raw"][1])


def missing_mask(series: pl.Series) -> pl.Series:
    """True where a value is missing: null, or NaN in a float column."""
    return series.is_nan().fill_null(True) if series.dtype.is_float() else series.is_null()


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


def label_values(series: pl.Series) -> list:
    """Labels as plain Python values; integral floats become ints (1.0 -> 1).

    Assumes the target passed ``schema.check_target`` (no null/NaN, integral if float).
    """
    series = canonical(series)
    if series.dtype.is_float():
        return [int(v) for v in series.to_list()]
    return series.to_list()


def whitespace_variants(series: pl.Series, *, role: str = "column") -> str | None:
    """A warning when string values differ only by surrounding whitespace, else None.

    'approved' and 'approved ' are almost always one value typed twice; kept apart they
    become two classes (or two one-hot levels) that the model must tell apart. They are
    not merged silently either: the caller reports the warning and the user decides.
    """
    series = canonical(series)
    if series.dtype != pl.String:
        return None
    levels = series.drop_nulls().unique().sort().to_list()
    groups: dict[str, list[str]] = {}
    for level in levels:
        groups.setdefault(level.strip(), []).append(level)
    clashes = [group for group in groups.values() if len(group) > 1]
    if not clashes:
        return None
    shown = "; ".join(" vs ".join(repr(v) for v in group) for group in clashes[:3])
    more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
    return (f"{role} '{series.name}' has values that differ only by surrounding whitespace: {shown}{more}; "
            "they are kept apart as different values (strip them if they mean the same)")

