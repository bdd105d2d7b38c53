"""MLflow tracking and the model registry: the only package that imports mlflow.

- ``backend``: where the tracking store is, creating it safely, relocating a moved store;
- ``runs``: one MLflow run per valuation or curation;
- ``registry``: one registered model per dataset, the ``champion`` alias, loading;
- ``pyfunc``: the registered model's pyfunc flavour over raw columns.

Names load on first use (PEP 562): importing mlflow takes ~1 s and torch (the pyfunc)
~1.5 s more, which re-reporting a finished run (``tracking_uri``, ``local_run_active``)
never needs.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "backend": ("init_tracking", "local_run_active", "relocate", "tracking_uri"),
    "pyfunc": ("ValuationPyfunc", "model_signature"),
    "registry": ("CHAMPION", "Registered", "load_registered_model", "register", "source_experiment", "versions"),
    "runs": ("LoggedRun", "TrainingTable", "end_stale_runs", "flatten_params", "log_curation_run",
             "log_valuation_run", "run_exists"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE)


def __getattr__(name: str):
    module = _MODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
