"""Serve ``prefect.yaml``'s deployments from this process: schedules without a work pool.

``python -m amortval.flows.serve`` registers every deployment of the packaged
``prefect.yaml`` (same names, parameters, schedules and descriptions; the work pool is
dropped) with the Prefect API named by ``PREFECT_API_URL`` and runs their flow runs as
subprocesses of this one until Ctrl-C (which pauses the schedules). Flow runs work in
this process's folder, so relative paths (the store) resolve where it was started, as
for a bare ``amortval value``. Reading the YAML, not a copy of it, keeps the served and
the deployed schedules from drifting apart.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import yaml

from amortval.flows.cli import ENVIRONMENT

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def load_flow(entrypoint: str):
    """``flows/valuation.py:value_dataset`` -> the flow object of ``amortval.flows.valuation``."""
    path, name = entrypoint.split(":")
    module = "amortval." + path.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), name)


def runner_deployments(spec: dict, names: list[str] | None = None) -> list:
    """One served deployment per ``prefect.yaml`` entry (all, or those named)."""
    from prefect.types.entrypoint import EntrypointType

    chosen = [d for d in spec["deployments"] if not names or d["name"] in names]
    missing = set(names or ()) - {d["name"] for d in chosen}
    if missing:
        raise SystemExit(f"no deployment named {', '.join(sorted(missing))} in prefect.yaml")
    return [
        load_flow(d["entrypoint"]).to_deployment(
            name=d["name"], description=d.get("description"), parameters=d.get("parameters") or {},
            schedules=[schedule(s) for s in d.get("schedules", [])],
            # `amortval.flows.valuation.value_dataset`: Prefect's default is a file path relative
            # to this folder, and taking over a `prefect deploy`ed deployment of the same name
            # with it crashed every run while loading the flow (stale storage, path "None").
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for d in chosen
    ]


def schedule(entry: dict):
    """A ``prefect.yaml`` schedule entry: ``cron`` (with its timezone) or ``interval`` (seconds)."""
    from prefect.schedules import Cron, Interval

    if "interval" in entry:
        return Interval(entry["interval"], timezone=entry.get("timezone"))
    return Cron(entry["cron"], timezone=entry.get("timezone"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m amortval.flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="deployments to serve (default: all in prefect.yaml)")
    parser.add_argument("--prefect-yaml", type=Path, default=PREFECT_YAML, help="deployments file (default: the packaged one)")
    args = parser.parse_args(argv)
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    from prefect import serve

    serve(*runner_deployments(yaml.safe_load(args.prefect_yaml.read_text()), args.names))


if __name__ == "__main__":
    main()
