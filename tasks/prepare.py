"""Resolve what to value (user file or the built-in demo), validate it, and encode it.

Everything here runs before any Monte Carlo work and writes nothing for user data, so a
bad file fails fast with the column and the problem named. The demo is generated into
the store folder (it is the only thing written before validation, and it is valid).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from amortval.data.demo import DEMO_FLIP_COLUMN, DEMO_TARGET, write_demo
from amortval.data.encoding import TabularEncoder, build_problem
from amortval.data.problem import Problem
from amortval.data.tabular import TabularData, load_training_data
from amortval.errors import ConfigError
from amortval.tasks.config import InputsConfig

STORE_FILE = "amortval.duckdb"
MODEL_PREFIX = "amortval-"


@dataclass(frozen=True)
class Inputs:
    data: TabularData
    problem: Problem
    encoder: TabularEncoder
    source: str  # the --data path, or "demo"
    valid_source: str | None  # the --valid path, the demo's, or None for a split
    path: str  # the file read (the demo's generated file for the demo)

    def model_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The columns the valuation model takes: features and label, no error flags."""
        column = self.data.mislabeled_column
        return frame.drop(column, strict=False) if column else frame

    @property
    def schema(self) -> dict:
        """What the data looks like to a model: raw columns with types, target, classes."""
        return {"columns": self.encoder.input_schema(), "target": self.data.target,
                "classes": [repr(c) for c in self.encoder.classes], "allow_missing": self.data.allow_missing}

    @functools.cached_property
    def dataset_id(self) -> str:
        """Content *and* schema: renamed columns or other label types are another dataset."""
        text = json.dumps({"content": self.problem.fingerprint, "schema": self.schema}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def dataset_name(self) -> str:
        """The data file's stem ("demo" for the built-in dataset)."""
        return "demo" if self.source == "demo" else Path(self.source).stem


def default_model_name(dataset_name: str) -> str:
    """``amortval-<data file stem>``, reduced to the characters every MLflow backend takes."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset_name).strip("-.") or "data"
    return f"{MODEL_PREFIX}{stem}"[:100]


def load_inputs(options: InputsConfig, *, seed: int, store: str | Path) -> Inputs:
    """Read, validate and encode; without ``options.data`` use the demo (known flipped labels).

    ``allow_missing`` imputes null/NaN features (see ``data/encoding.py``) instead of
    refusing them; ``encode=False`` refuses string columns instead of one-hot encoding.
    """
    data, target, valid = options.data, options.target, options.valid
    mislabeled_column, valid_fraction = options.mislabeled_column, options.valid_fraction
    allow_missing, encode = options.allow_missing, options.encode
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
    return Inputs(table, problem, encoder, source, None if valid is None else str(valid), str(Path(data).resolve()))


def store_paths(store: str | Path) -> dict[str, Path]:
    """Every file of a store lives under its folder (so the folder can be moved)."""
    root = Path(store).expanduser().resolve()
    return {
        "root": root,
        "duckdb": root / STORE_FILE,
        "problems": root / "problems",
        "values": root / "values",
        "curated": root / "curated",
    }
