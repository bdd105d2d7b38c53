"""MLflow tracking and the model registry: the only package that imports mlflow.

- ``backend``: where the tracking store is, creating it safely, relocating a moved store;
- ``runs``: one MLflow run per valuation or curation;
- ``registry``: one registered model per dataset, the ``champion`` alias, loading;
- ``pyfunc``: the registered model's pyfunc flavour over raw columns.
"""

from amortval.tasks.tracking.backend import init_tracking, relocate, tracking_uri
from amortval.tasks.tracking.pyfunc import ValuationPyfunc, model_signature
from amortval.tasks.tracking.registry import (
    CHAMPION,
    Registered,
    load_registered_model,
    register,
    source_experiment,
    versions,
)
from amortval.tasks.tracking.runs import (
    LoggedRun,
    TrainingTable,
    end_stale_runs,
    flatten_params,
    log_curation_run,
    log_valuation_run,
    run_exists,
)

__all__ = [
    "CHAMPION", "LoggedRun", "Registered", "TrainingTable", "ValuationPyfunc", "end_stale_runs", "flatten_params",
    "init_tracking", "load_registered_model", "log_curation_run", "log_valuation_run", "model_signature", "register",
    "relocate", "run_exists", "source_experiment", "tracking_uri", "versions",
]
