"""Reading and validating the user's table, and splitting off the validation rows.

Everything here runs before any Monte Carlo work: a bad file or column fails with a
``DataValidationError`` that names the column and the problem, so nothing is written
for an input that could never be valued. Row numbers in messages are 0-based data rows
(header excluded), the same numbering as ``TabularData.train_rows``. The checks of a
frame against a schema live in ``schema.py``; the rules for the split in ``split.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from amortval.data.columns import label_values, whitespace_variants
from amortval.data.schema import FrameSchema, check_frame, mislabeled_flags
from amortval.data.split import check_training_rows, stratified_split
from amortval.errors import ConfigError, DataValidationError

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
MIN_ROWS = 4  # in the --data file, before any split


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


def feature_columns(frame: pl.DataFrame, target: str, exclude: Sequence[str] = ()) -> list[str]:
    """Feature columns in input order: everything except the target and ``exclude``."""
    skip = {target, *exclude}
    return [c for c in frame.columns if c not in skip]


def validate_training_frame(
    frame: pl.DataFrame,
    target: str,
    *,
    exclude: Sequence[str] = (),
    min_rows: int = MIN_ROWS,
    name: str = "data",
    allow_missing: bool = False,
    encode: bool = True,
) -> list:
    """Raise DataValidationError unless ``frame`` can be encoded and valued; return the
    sorted classes. The check itself is ``schema.check_frame`` (one for every input)."""
    schema = FrameSchema(target, allow_missing=allow_missing, encode=encode)
    return list(check_frame(frame, schema, name=name, ignore=exclude, min_rows=min_rows).schema.classes)


@dataclass(frozen=True)
class TabularData:
    """Validated training and validation rows, with their row numbers in the input file.

    Feature and label columns are in their canonical dtypes (``columns.canonical``).
    ``warnings`` are problems that do not stop the run but that the user should see
    (e.g. labels differing only by whitespace); the CLI prints each one.
    """

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
    warnings: tuple[str, ...] = ()

    @property
    def features(self) -> list[str]:
        exclude = [self.mislabeled_column] if self.mislabeled_column else []
        return feature_columns(self.train, self.target, exclude)


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

    Without ``valid`` a seeded stratified split of ``data`` gives the validation rows
    (and must leave enough training rows, see ``split.check_training_rows``). A ``valid``
    file must be another file with other rows: valuing points against themselves would
    reward memorization. ``allow_missing`` accepts null/NaN features (imputed by the
    encoder); ``encode=False`` refuses string columns instead of one-hot encoding them.
    The mislabeled column (known label errors, for evaluation only) is never a feature;
    it stays in ``train`` and is dropped from ``valid``.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if mislabeled_column is not None and mislabeled_column == target:
        raise ConfigError(f"mislabeled column '{mislabeled_column}' cannot be the target")
    if valid is not None and _same_file(data, valid):
        raise ConfigError(f"the validation file {valid} is the data file {data}; pass a different "
                          "validation file, or omit it to split one off the data")
    frame = read_table(data)
    name = Path(data).name
    exclude = [mislabeled_column] if mislabeled_column else []
    frame, schema = check_frame(frame, FrameSchema(target, allow_missing=allow_missing, encode=encode),
                                name=name, ignore=exclude, min_rows=MIN_ROWS)
    flags = mislabeled_flags(frame, mislabeled_column, name=name) if mislabeled_column else None
    keep = [*(c.name for c in schema.features), target]

    if valid is not None:
        valid_frame, _ = check_frame(read_table(valid), schema, name=Path(valid).name, ignore=exclude)
        valid_part = valid_frame.select(keep)
        if valid_part.equals(frame.select(keep)):
            raise DataValidationError(f"{Path(valid).name}: the validation file holds the same rows as "
                                      f"{name}; pass a separate validation file, or omit it to split one off")
        train_idx, valid_idx, train = np.arange(frame.height, dtype=np.int64), None, frame
        # relaxed: the schema check allows Int32 against Int64, or Float32 against Float64
        warnings = _warnings(pl.concat([frame.select(keep), valid_part], how="vertical_relaxed"), target, name)
    else:
        train_idx, valid_idx = stratified_split(label_values(frame[target]), valid_fraction, seed)
        train = frame[train_idx]
        check_training_rows(label_values(train[target]), valid_idx.size, valid_fraction,
                            n_classes=len(schema.classes), name=name)
        valid_part = frame[valid_idx].select(keep)
        warnings = _warnings(frame.select(keep), target, name)
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
        warnings=warnings,
    )


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Same path after resolving links, or the same file under two names (hard link)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one of them does not exist: read_table says so


def _warnings(frame: pl.DataFrame, target: str, name: str) -> tuple[str, ...]:
    found = (whitespace_variants(frame[c], role="target column" if c == target else "column")
             for c in [target, *(c for c in frame.columns if c != target)])
    return tuple(f"{name}: {w}" for w in found if w)
