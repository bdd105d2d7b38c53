"""The model registry: one registered model per dataset, the ``champion`` alias, loading.

A version is registered for every valuation network; the alias ``champion`` moves to it
only when its run passed the quality gate (network beats the Monte Carlo averages on
held-out samples), so scoring always uses the last network that earned it. Each dataset
gets its own registered name (``amortval-<data file stem>`` by default), so valuing one
dataset never moves another's alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from amortval.errors import ModelNotFoundError, storage_errors
from amortval.models.valuation_model import ValuationModel
from amortval.tasks.tracking.backend import (
    ALREADY_EXISTS,
    DOES_NOT_EXIST,
    check_sqlite,
    client,
    quiet,
    relocate,
    sqlite_path,
    using,
)

CHAMPION = "champion"


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    alias_set: bool  # True when this version became the champion

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``: stable, unlike the alias."""
        return f"models:/{self.name}/{self.version}"


def register(uri: str, name: str, *, model_uri: str, run_id: str, model_id: str | None,
             gate_passed: bool, tags: dict[str, str]) -> Registered:
    """Register a logged model under ``name`` (created on first use); move the alias if it earned it.

    Registration goes through the client: ``mlflow.register_model`` prints to stderr. The
    registry resolves a ``models:/m-...`` source through MLflow's *global* tracking URI,
    so that is pointed at ``uri`` too (else a fresh process looks in ``./mlflow.db``).
    """
    mlflow_client = client(uri)
    with quiet(), using(uri), storage_errors(sqlite_path(uri) or uri):
        try:
            mlflow_client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != ALREADY_EXISTS:
                raise
        created = mlflow_client.create_model_version(name, source=model_uri, run_id=run_id,
                                                     tags=tags | {"gate_passed": str(bool(gate_passed))},
                                                     model_id=model_id)
        if gate_passed:
            mlflow_client.set_registered_model_alias(name, CHAMPION, created.version)
    return Registered(name, str(created.version), bool(gate_passed))


def versions(uri: str, name: str) -> list[str]:
    """Version numbers of ``name`` (as text, ascending); empty if it is not registered."""
    try:
        found = client(uri).search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return [str(v) for v in sorted(int(m.version) for m in found)]


def load_registered_model(uri: str, name: str, alias: str = CHAMPION,
                          version: str | None = None) -> tuple[ValuationModel, str, str]:
    """Load ``models:/<name>@<alias>`` (or ``models:/<name>/<version>`` when pinned) ->
    (model, ``models:/<name>/<version>``, version).

    The alias is resolved once and the exact version loaded, so the URI returned is the
    one that scored. Raises ``ModelNotFoundError`` (naming model, alias or version,
    backend and the versions that do exist) when there is nothing to load; never
    creates a database.
    """
    db = sqlite_path(uri)
    if db is not None:
        if not db.exists():
            raise ModelNotFoundError(
                f"no MLflow database at {db}: no valuation has run against this store; run `amortval value` first")
        check_sqlite(db)
        relocate(db, db.parent)  # a moved or copied store still finds its artifacts
    mlflow_client = client(uri)
    with quiet():
        try:
            registered = mlflow_client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != DOES_NOT_EXIST:
                raise
            raise ModelNotFoundError(
                f"no registered model '{name}' in {uri}; `amortval runs` lists the valuations of this store "
                "and their models") from None
        existing = versions(uri, name)
        if version is not None:
            if str(version) not in existing:
                raise ModelNotFoundError(f"model '{name}' has no version {version} in {uri} "
                                         f"(existing versions: {', '.join(existing) or 'none'})")
        else:
            try:
                version = mlflow_client.get_model_version_by_alias(name, alias).version
            except MlflowException:
                aliases: dict[str, list[str]] = {}
                for other, number in (registered.aliases or {}).items():
                    aliases.setdefault(str(number), []).append(other)
                listing = ", ".join(
                    v + (f" (aliases: {', '.join(sorted(aliases[v]))})" if v in aliases else "")
                    for v in existing) or "none"
                raise ModelNotFoundError(
                    f"no version of '{name}' has alias '{alias}' in {uri}: no valuation of it passed its "
                    f"quality gate yet; pin one with --model-version (existing versions: {listing})") from None
        model_uri = f"models:/{name}/{version}"
        with using(uri):
            loaded = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
    return loaded.unwrap_python_model().model, model_uri, str(version)


def source_experiment(uri: str, name: str, version: str) -> str | None:
    """The experiment holding the run that logged a registered version (None if unknown)."""
    mlflow_client = client(uri)
    try:
        run_id = mlflow_client.get_model_version(name, version).run_id
        return mlflow_client.get_experiment(mlflow_client.get_run(run_id).info.experiment_id).name
    except MlflowException:
        return None
