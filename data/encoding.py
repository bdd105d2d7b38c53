"""Raw table columns -> the float32 matrix the learners and the valuation network see.

The encoder is fitted on the training rows only and travels with the valuation network
(inside the MLflow model, as JSON), so rows scored months later are encoded exactly as
the rows the network was trained on, and a scoring table with a different schema is
refused with a message instead of being silently mis-encoded.

Encoding, per raw feature column (input order):
- numeric (ints, floats, decimals; booleans as 0/1): ``(x - mean) / std`` with the
  training mean and population std (std 0 -> 1, so a constant column encodes to 0);
- string / categorical: one-hot over the sorted training categories; a category never
  seen in training encodes to all zeros (the row is still scored, as "none of the
  known levels").

Missing values (only when fitted with ``allow_missing``, the ``--allow-missing`` opt-in;
otherwise a null/NaN is refused by validation): a numeric null/NaN is imputed with the
training mean of the observed values, i.e. it encodes to exactly 0, "no information"
on the standardized scale; a missing category encodes to all zeros, like an unseen
one. The mean ignores missing values. Infinity is never imputed; the label never may
be missing. The rule is saved with the encoder, so scoring imputes the same way.

All methods take polars frames. A pandas frame is converted with ``pl.from_pandas``
(which turns float NaN into null), so callers holding pandas may pass it directly or
convert first; either way NaN is reported as a null value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from amortval.data.problem import Problem
from amortval.data.tabular import (
    TabularData,
    column_type,
    feature_columns,
    label_values,
    missing_mask,
    type_family,
    validate_training_frame,
    value_problem,
)
from amortval.errors import SchemaMismatchError

ENCODER_FORMAT = 1


def as_polars(frame: Any) -> pl.DataFrame:
    """A polars DataFrame from a polars (eager or lazy) or pandas frame."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    try:
        return pl.from_pandas(frame)
    except (TypeError, ValueError, ImportError) as exc:
        raise SchemaMismatchError(
            f"expected a polars or pandas DataFrame, got {type(frame).__name__}"
        ) from exc


@dataclass(frozen=True)
class ColumnEncoding:
    """How one raw column is encoded; ``dtype`` is the training polars dtype, for messages."""

    name: str
    kind: str  # "numeric" | "categorical"
    dtype: str
    type: str  # "double" | "long" | "string" | "boolean"
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == "categorical" else 1


@dataclass(frozen=True)
class TabularEncoder:
    """Fitted encoding of features and labels; JSON round trip via to_dict/from_dict."""

    target: str
    columns: tuple[ColumnEncoding, ...]
    classes: tuple
    target_dtype: str
    target_type: str
    allow_missing: bool = False  # impute null/NaN features (module docstring) instead of refusing

    @classmethod
    def fit(cls, frame: pl.DataFrame, target: str, *, exclude: Sequence[str] = (),
            allow_missing: bool = False) -> TabularEncoder:
        """Fit on training rows (validated here: a bad frame raises DataValidationError)."""
        frame = as_polars(frame)
        classes = validate_training_frame(frame, target, exclude=exclude, min_rows=2, name="training data",
                                          allow_missing=allow_missing)
        columns = []
        for name in feature_columns(frame, target, exclude):
            series = frame[name]
            kind = column_type(series.dtype)
            if kind == "string":
                levels = series.cast(pl.String).drop_nulls().unique().to_list()
                columns.append(ColumnEncoding(name, "categorical", str(series.dtype), kind,
                                              categories=tuple(sorted(levels))))
            else:
                values = series.filter(~missing_mask(series)).cast(pl.Float64).to_numpy()
                std = float(values.std())
                columns.append(ColumnEncoding(name, "numeric", str(series.dtype), kind,
                                              mean=float(values.mean()),
                                              std=std if std > 0 else 1.0))
        target_series = frame[target]
        return cls(
            target=target,
            columns=tuple(columns),
            classes=tuple(classes),
            target_dtype=str(target_series.dtype),
            target_type=column_type(target_series.dtype) or "string",
            allow_missing=allow_missing,
        )

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Raw input feature columns, input order."""
        return tuple(c.name for c in self.columns)

    @property
    def n_encoded(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def encoded_names(self) -> list[str]:
        """Names of the encoded columns: ``age`` or ``region=north``."""
        names: list[str] = []
        for c in self.columns:
            names += [f"{c.name}={v}" for v in c.categories] if c.kind == "categorical" else [c.name]
        return names

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        """Encoded features, float32 (rows, n_encoded). Validate untrusted frames first."""
        frame = as_polars(frame)
        out = np.zeros((frame.height, self.n_encoded), dtype=np.float32)
        j = 0
        for c in self.columns:
            series = frame[c.name]
            if c.kind == "numeric":
                # Missing -> the training mean -> 0 (only reachable with allow_missing).
                filled = series.cast(pl.Float64).fill_nan(None).fill_null(c.mean).to_numpy()
                out[:, j] = (filled - c.mean) / c.std
            elif c.categories:
                codes = series.cast(pl.String).replace_strict(
                    list(c.categories), list(range(len(c.categories))), default=-1,
                    return_dtype=pl.Int64,
                ).to_numpy()
                rows = np.flatnonzero(codes >= 0)
                out[rows, j + codes[rows]] = 1.0
            j += c.width
        return out

    def labels(self, frame: pl.DataFrame) -> np.ndarray:
        """Class indices (int64, 0..K-1, in sorted-class order); unknown labels raise."""
        frame = as_polars(frame)
        if self.target not in frame.columns:
            raise SchemaMismatchError(f"target column '{self.target}' not found", self.target)
        self._check_target(frame[self.target])
        index = {v: i for i, v in enumerate(self.classes)}
        return np.array([index[v] for v in label_values(frame[self.target])], dtype=np.int64)

    def validate_scoring_frame(
        self, frame: pl.DataFrame, *, require_target: bool = True, ignore: Sequence[str] = ()
    ) -> None:
        """SchemaMismatchError unless ``frame`` has exactly the training schema.

        Checks, in order: rows present; missing feature (and target, when required)
        columns; extra columns not listed in ``ignore``; per column the dtype family
        (numeric / string / boolean), then null/NaN/inf; the target's labels must be
        training classes. A target present but not required is checked too.
        """
        frame = as_polars(frame)
        if frame.height == 0:
            raise SchemaMismatchError("scoring data has no rows")
        expected = [*self.feature_columns, *([self.target] if require_target else [])]
        missing = [c for c in expected if c not in frame.columns]
        if missing:
            raise SchemaMismatchError(
                f"scoring data is missing columns {', '.join(repr(c) for c in missing)} "
                "that the model was trained on",
                missing[0],
            )
        allowed = {*self.feature_columns, self.target, *ignore}
        extra = [c for c in frame.columns if c not in allowed]
        if extra:
            raise SchemaMismatchError(
                f"scoring data has extra columns {', '.join(repr(c) for c in extra)} "
                "not seen in training (drop them or list them as ignored)",
                extra[0],
            )
        for c in self.columns:
            self._check_dtype(frame[c.name], c.type, c.dtype)
            problem = value_problem(frame[c.name], allow_missing=self.allow_missing)
            if problem:
                raise SchemaMismatchError(f"scoring data: {problem}", c.name)
        if self.target in frame.columns:
            self._check_target(frame[self.target])

    def _check_dtype(self, series: pl.Series, want: str, trained: str) -> None:
        if series.dtype == pl.Null:
            return  # all null: value_problem names it, which is the clearer message
        got = column_type(series.dtype)
        if got is None or type_family(got) != type_family(want):
            raise SchemaMismatchError(
                f"scoring data: column '{series.name}' has dtype {series.dtype} "
                f"({type_family(got) if got else 'unsupported'}); the model was trained on "
                f"{trained} ({type_family(want)})",
                series.name,
            )

    def _check_target(self, series: pl.Series) -> None:
        self._check_dtype(series, self.target_type, self.target_dtype)
        problem = value_problem(series)
        if problem:
            raise SchemaMismatchError(f"scoring data: target {problem}", self.target)
        if series.dtype.is_float():
            fractional = series != series.floor()
            if fractional.any():
                first = int(fractional.arg_true()[0])
                raise SchemaMismatchError(
                    f"scoring data: target column '{self.target}' has non-integer label "
                    f"{series[first]} at row {first}", self.target,
                )
        known = set(self.classes)
        values = label_values(series)
        bad = [i for i, v in enumerate(values) if v not in known]
        if bad:
            unknown = sorted({repr(values[i]) for i in bad})
            raise SchemaMismatchError(
                f"scoring data: target column '{self.target}' has {len(bad)} labels not among "
                f"the training classes {list(self.classes)} (first at row {bad[0]}): "
                f"{', '.join(unknown[:5])}",
                self.target,
            )

    def input_schema(self) -> list[tuple[str, str]]:
        """[(column, "double" | "long" | "string" | "boolean")]: features, then the target."""
        return [(c.name, c.type) for c in self.columns] + [(self.target, self.target_type)]

    def to_dict(self) -> dict:
        return {
            "format": ENCODER_FORMAT,
            "target": self.target,
            "target_dtype": self.target_dtype,
            "target_type": self.target_type,
            "allow_missing": self.allow_missing,
            "classes": list(self.classes),
            "columns": [
                {**dataclasses.asdict(c), "categories": list(c.categories)} for c in self.columns
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> TabularEncoder:
        if d.get("format") != ENCODER_FORMAT:
            raise ValueError(f"unsupported encoder format {d.get('format')!r}")
        columns = tuple(
            ColumnEncoding(**{**c, "categories": tuple(c["categories"])}) for c in d["columns"]
        )
        return cls(
            target=d["target"],
            columns=columns,
            classes=tuple(d["classes"]),
            target_dtype=d["target_dtype"],
            target_type=d["target_type"],
            allow_missing=bool(d.get("allow_missing", False)),  # absent in models saved before the option
        )


def build_problem(data: TabularData) -> tuple[Problem, TabularEncoder]:
    """Encode train and validation rows with an encoder fitted on the training rows only."""
    exclude = [data.mislabeled_column] if data.mislabeled_column else []
    encoder = TabularEncoder.fit(data.train, data.target, exclude=exclude, allow_missing=data.allow_missing)
    problem = Problem(
        x_train=encoder.transform(data.train),
        y_train=encoder.labels(data.train),
        x_valid=encoder.transform(data.valid),
        y_valid=encoder.labels(data.valid),
        n_classes=encoder.n_classes,
    )
    return problem, encoder
