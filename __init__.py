"""amortval: data valuation with stochastic amortization, orchestrated by Prefect."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("amortval")  # one place: pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """``amortval.value``, ``curate``, ``load``, ``RunConfig``: imported on first use, so
    ``import amortval`` stays instant."""
    if name in ("value", "curate", "load"):
        from amortval import api

        return getattr(api, name)
    if name == "RunConfig":
        from amortval.tasks.config import RunConfig

        return RunConfig
    if name in ("ValuationResult", "CurationResult"):
        from amortval import result

        return getattr(result, name)
    raise AttributeError(f"module 'amortval' has no attribute {name!r}")


__all__ = ["CurationResult", "RunConfig", "ValuationResult", "curate", "load", "value"]
