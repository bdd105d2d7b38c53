"""Raw table columns -> the float32 matrix the learners and the valuation network see.

The encoder is fitted on the training rows only and travels with the valuation network
(inside the MLflow model, as JSON), so rows scored months later are encoded exactly as
the rows the network was trained on, and a scoring table with a different schema is
refused with a message instead of being silently mis-encoded.

Encoding, per raw feature column (input order):
- numeric (ints, floats, decimals; booleans as 0/1): ``(x - mean) / std`` with the
  training mean and population std (std 0 -> 1, so a constant column encodes to 0).
  Mean and std are computed in float64 on values divided by the column's largest
  magnitude, so no value up to float64's limit (1e308) overflows them: summing squares
  of 1e200 directly gives an infinite std, which would encode the column as all 0.
  Every encoded value must be finite in float32: a row that is not (1e308 scored
  against a training std of 1) is refused with its column and row, never returned as
  NaN or inf. A column whose distinct values become one float64 (integers past 2**53
  that differ by less than their spacing) is refused too, rather than collapsed to 0;
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

from amortval.data.columns import label_values, missing_mask
from amortval.data.problem import Problem
from amortval.data.schema import ColumnSpec, FrameSchema, check_frame, check_target
from amortval.data.tabular import TabularData
from amortval.errors import DataValidationError, SchemaMismatchError

ENCODER_FORMAT = 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
            allow_missing: bool = False, name: str = "training data") -> TabularEncoder:
        """Fit on training rows (validated here: a bad frame raises DataValidationError)."""
        frame, schema = check_frame(as_polars(frame), FrameSchema(target, allow_missing=allow_missing),
                                    name=name, ignore=exclude, min_rows=2)
        columns = []
        for spec in schema.features:
            series = frame[spec.name]
            if spec.type == "string":
                levels = series.drop_nulls().unique().to_list()
                columns.append(ColumnEncoding(spec.name, "categorical", spec.dtype, spec.type,
                                              categories=tuple(sorted(levels))))
            else:
                mean, std = _moments(series)
                columns.append(ColumnEncoding(spec.name, "numeric", spec.dtype, spec.type, mean=mean, std=std))
        return cls(
            target=target,
            columns=tuple(columns),
            classes=schema.classes,
            target_dtype=schema.target_spec.dtype,
            target_type=schema.target_spec.type,
            allow_missing=allow_missing,
        )

    def schema(self, *, encode: bool = True) -> FrameSchema:
        """The schema every frame scored (or validated) with this encoder is held to."""
        return FrameSchema(
            target=self.target,
            features=tuple(ColumnSpec(c.name, c.type, c.dtype) for c in self.columns),
            target_spec=ColumnSpec(self.target, self.target_type, self.target_dtype),
            classes=self.classes,
            allow_missing=self.allow_missing,
            encode=encode,
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

    def transform(self, frame: pl.DataFrame, *, name: str = "scoring data",
                  error: type = SchemaMismatchError) -> np.ndarray:
        """Encoded features, float32 (rows, n_encoded). Validate untrusted frames first.

        A numeric value whose encoding is not finite in float32 raises ``error`` naming
        the column, the row and the value (``name`` says which input it came from).
        """
        frame = as_polars(frame)
        out = np.zeros((frame.height, self.n_encoded), dtype=np.float32)
        j = 0
        for c in self.columns:
            series = frame[c.name]
            if c.kind == "numeric":
                # Missing -> the training mean -> 0 (only reachable with allow_missing).
                filled = series.cast(pl.Float64).fill_nan(None).fill_null(c.mean).to_numpy()
                out[:, j] = _standardize(filled, c, name=name, error=error)
            elif c.categories:
                codes = series.cast(pl.String).replace_strict(
                    list(c.categories), list(range(len(c.categories))), default=-1,
                    return_dtype=pl.Int64,
                ).to_numpy()
                rows = np.flatnonzero(codes >= 0)
                out[rows, j + codes[rows]] = 1.0
            j += c.width
        return out

    def labels(self, frame: pl.DataFrame, *, name: str = "scoring data",
               error: type = SchemaMismatchError) -> np.ndarray:
        """Class indices (int64, 0..K-1, in sorted-class order); unknown labels raise ``error``."""
        frame = as_polars(frame)
        if self.target not in frame.columns:
            raise error(f"{name}: target column '{self.target}' not found", self.target)
        series, _, _ = check_target(frame[self.target], self.schema(), name=name, error=error)
        index = {v: i for i, v in enumerate(self.classes)}
        return np.array([index[v] for v in label_values(series)], dtype=np.int64)

    def validate_scoring_frame(
        self, frame: pl.DataFrame, *, require_target: bool = True, ignore: Sequence[str] = ()
    ) -> pl.DataFrame:
        """SchemaMismatchError unless ``frame`` has exactly the training schema; returns
        the frame with its columns in canonical dtypes (``schema.check_frame``).

        Checks, in order: rows present; missing feature (and target, when required)
        columns; extra columns not listed in ``ignore``; the target's labels must be
        training classes (a target present but not required is checked too); per
        feature the dtype family (numeric / string / boolean), then null/NaN/inf.
        """
        checked = check_frame(as_polars(frame), self.schema(), name="scoring data", error=SchemaMismatchError,
                              ignore=ignore, require_target=require_target)
        return checked.frame

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
    """Encode train and validation rows with an encoder fitted on the training rows only.

    Runs before any Monte Carlo work, so a value that cannot be encoded (see the module
    docstring) fails here with a ``DataValidationError`` naming column, row and value.
    """
    exclude = [data.mislabeled_column] if data.mislabeled_column else []
    train_name, valid_name = f"{data.name} (training rows)", f"{data.name} (validation rows)"
    encoder = TabularEncoder.fit(data.train, data.target, exclude=exclude, allow_missing=data.allow_missing,
                                 name=train_name)
    problem = Problem(
        x_train=encoder.transform(data.train, name=train_name, error=DataValidationError),
        y_train=encoder.labels(data.train, name=train_name, error=DataValidationError),
        x_valid=encoder.transform(data.valid, name=valid_name, error=DataValidationError),
        y_valid=encoder.labels(data.valid, name=valid_name, error=DataValidationError),
        n_classes=encoder.n_classes,
    )
    return problem, encoder


def _moments(series: pl.Series) -> tuple[float, float]:
    """(mean, population std) of the observed values, without overflow; std 0 -> 1.

    Dividing by the largest magnitude first keeps every intermediate within [-1, 1]
    (squares too), so values up to float64's limit give finite moments. Distinct values
    that merge in float64 were refused by ``columns.float_collision`` already.
    """
    values = series.filter(~missing_mask(series)).cast(pl.Float64).to_numpy()
    scale = float(np.abs(values).max())
    if scale == 0.0:
        return 0.0, 1.0
    unit = values / scale
    mean, std = float(unit.mean()) * scale, float(unit.std()) * scale
    return mean, std if std > 0.0 else 1.0


def _standardize(values: np.ndarray, c: ColumnEncoding, *, name: str, error: type) -> np.ndarray:
    """(values - mean) / std in float64, refusing any result beyond float32's range."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = (values - c.mean) / c.std
        spilled = ~np.isfinite(z)  # x - mean overflowed float64; the quotients may still fit
        z[spilled] = values[spilled] / c.std - c.mean / c.std
    bad = np.flatnonzero(~(np.abs(z) <= _FLOAT32_MAX))
    if bad.size:
        row = int(bad[0])
        raise error(
            f"{name}: column '{c.name}' value {values[row]:g} at row {row} cannot be encoded: it lies "
            f"{abs(z[row]):g} training standard deviations (std {c.std:g}) from the training mean "
            f"{c.mean:g}, beyond 32-bit floats ({len(bad)} such rows)", c.name)
    return z
