"""Resolve what to value (user file or the built-in demo), validate it, and encode it.

Everything here runs before any Monte Carlo work and writes nothing for user data, so a
bad file fails fast with the column and the problem named. The demo is generated into
the store folder (it is the only thing written before validation, and it is valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from amortval.data.demo import DEMO_FLIP_COLUMN, DEMO_TARGET, write_demo
from amortval.data.encoding import TabularEncoder, build_problem
from amortval.data.problem import Problem
from amortval.data.tabular import TabularData, load_training_data
from amortval.errors import ConfigError

DEFAULT_STORE = "amortval-store"
STORE_FILE = "amortval.duckdb"


@dataclass(frozen=True)
class Inputs:
    data: TabularData
    problem: Problem
    encoder: TabularEncoder
    source: str  # the --data path, or "demo"
    valid_source: str | None  # the --valid path, the demo's, or None for a split

    def model_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The columns the valuation model takes: features and label, no error flags."""
        column = self.data.mislabeled_column
        return frame.drop(column, strict=False) if column else frame


def load_inputs(
    data: str | None,
    target: str | None,
    *,
    valid: str | None,
    valid_fraction: float,
    seed: int,
    mislabeled_column: str | None,
    store: str | Path,
    allow_missing: bool = False,
    encode: bool = True,
) -> Inputs:
    """Read, validate and encode; with ``data=None`` use the demo (known flipped labels).

    ``allow_missing`` imputes null/NaN features (see ``data/encoding.py``) instead of
    refusing them; ``encode=False`` refuses string columns instead of one-hot encoding.
    """
    if data is None:
        if valid is not None or target not in (None, DEMO_TARGET):
            raise ConfigError("--target and --valid need --data (without --data the built-in demo is used)")
        paths = write_demo(Path(store) / "demo")
        data, valid, target = str(paths["train"]), str(paths["valid"]), DEMO_TARGET
        mislabeled_column = mislabeled_column or DEMO_FLIP_COLUMN
        source = "demo"
    elif target is None:
        raise ConfigError("--target is required with --data: name the label column")
    else:
        source = str(data)
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"--valid-fraction must be in (0, 1), got {valid_fraction}")
    table = load_training_data(
        data,
        target,
        valid=valid,
        valid_fraction=valid_fraction,
        seed=seed,
        mislabeled_column=mislabeled_column,
        allow_missing=allow_missing,
        encode=encode,
    )
    problem, encoder = build_problem(table)
    return Inputs(table, problem, encoder, source, None if valid is None else str(valid))


def store_paths(store: str | Path) -> dict[str, Path]:
    root = Path(store).resolve()
    return {
        "root": root,
        "duckdb": root / STORE_FILE,
        "problems": root / "problems",
        "values": root / "values",
        "curated": root / "curated",
    }
