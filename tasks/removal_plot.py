"""A finished run's point-removal curve on a labelled test set (``ValuationResult.plot``).

Retrains the run's utility learner on the training rows (as the run encoded them) without
the lowest- or highest-valued ones and scores it on ``test``, encoded with the run's own
encoder: values that mean something lose accuracy slowest when the lowest go first.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from amortval.data.problem import load_problem
from amortval.data.store import ValuationStore
from amortval.errors import ConfigError

FRACTIONS = np.round(np.arange(0.0, 0.51, 0.05), 2)


def removal_figure(result, test: Any, fractions: Any = None):
    from amortval.data.encoding import as_polars
    from amortval.data.tabular import read_table
    from amortval.tasks import tracking
    from amortval.tasks.plots import removal_curves_figure
    from amortval.tasks.removal import removal_curves

    if result.merged or result.model_name is None or result.model_version is None:
        raise ConfigError("the removal curve needs one finished run with its registered network (not a merged result)")
    store = Path(result.store)
    with ValuationStore(store / "amortval.duckdb") as db:
        config = db.run(result.run_id)["config"]
    config = json.loads(config) if isinstance(config, str) else config
    problem = load_problem(str(store / "problems" / f"{result.dataset_id}.npz"))
    model, _, _ = tracking.load_registered_model(result.mlflow_uri, result.model_name, version=result.model_version)
    frame = read_table(str(test)) if isinstance(test, (str, Path)) else as_polars(test)
    x_test = model.encoder.transform(frame, name="test set")
    y_test = model.encoder.labels(frame, name="test set")
    on_test = dataclasses.replace(problem, x_valid=x_test, y_valid=y_test)
    train = result.values.filter(result.values["split"] == "train").sort("row")
    values = train["value"].to_numpy()
    if values.size != problem.n:
        raise ConfigError(f"run {result.run_id} has {values.size} training values for {problem.n} training rows")
    learner = config["utility"]["learner"]
    curves = removal_curves(on_test, learner, values, np.asarray(FRACTIONS if fractions is None else fractions),
                            seed=config["sampling"]["seed"], knn_k=config["utility"].get("knn_k", 5))
    figure = removal_curves_figure({"amortval": curves})
    figure.suptitle(f"Point removal, {learner} utility, test accuracy ({len(y_test):,} rows)")
    return figure
