"""Which registered valuation network scores a table: the one whose columns it has.

Each dataset registers its own model (``amortval-<data file stem>`` by default), so a
store can hold several. Without ``--model-name`` the store's runs say which model was
trained on which columns; the table's columns (minus ignored ones) pick exactly one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from amortval.data.store import ValuationStore
from amortval.errors import ModelNotFoundError
from amortval.models.valuation_model import ValuationModel
from amortval.tasks import tracking


@dataclass(frozen=True)
class ChosenModel:
    model: ValuationModel
    name: str
    uri: str  # models:/<name>/<version>
    version: str
    how: str  # why this model: "named", "matched the columns of ..."


def registered_schemas(db: ValuationStore) -> dict[str, list[str]]:
    """Model name -> the raw columns (features and target) it was trained on, newest run first."""
    rows = db.query(
        "SELECT r.model_name, d.schema FROM runs r JOIN datasets d USING (dataset_id) "
        "WHERE r.model_name IS NOT NULL ORDER BY r.updated_at DESC")
    schemas: dict[str, list[str]] = {}
    for name, schema in rows.iter_rows():
        if name not in schemas:
            schemas[name] = [column for column, _ in json.loads(schema)["columns"]]
    return schemas


def require_registered(db: ValuationStore) -> dict[str, list[str]]:
    """``registered_schemas``, or ModelNotFoundError when nothing was valued into the store yet."""
    schemas = registered_schemas(db)
    if not schemas:
        raise ModelNotFoundError("no valuation model is registered in this store yet; run `amortval value` first")
    return schemas


def choose_model(db: ValuationStore, uri: str, columns: Sequence[str], *, name: str | None,
                 alias: str, version: str | None, ignore: Sequence[str] = ()) -> ChosenModel:
    """Load the named model, or the one registered model whose columns the table has."""
    how = "named"
    if name is None:
        schemas = require_registered(db)
        have = set(columns) - set(ignore)
        matches = [model for model, cols in schemas.items() if set(cols) == have]
        listing = "; ".join(f"{model}: {', '.join(cols)}" for model, cols in schemas.items())
        if not matches and len(schemas) == 1:
            # One candidate: its schema check names exactly what differs (a missing or retyped column).
            matches = list(schemas)
        if not matches:
            raise ModelNotFoundError(
                f"no registered valuation model was trained on these columns ({', '.join(sorted(have))}); "
                f"registered models and their columns: {listing}")
        if len(matches) > 1:
            raise ModelNotFoundError(
                f"several registered models match these columns: {', '.join(matches)}; pass --model-name")
        name, how = matches[0], "the store's model for these columns"
    model, uri_loaded, loaded_version = tracking.load_registered_model(uri, name, alias, version)
    return ChosenModel(model, name, uri_loaded, loaded_version, how)
