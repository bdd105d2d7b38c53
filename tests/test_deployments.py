"""prefect.yaml: every deployment names a real flow, valid parameters and a cron schedule."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_deployments_point_at_flows_with_known_parameters_and_cron():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly-demo", "nightly-curation"} <= names
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]
        crons = [s["cron"] for s in deployment["schedules"]]
        assert crons and all(len(c.split()) == 5 for c in crons)
    assert "pull" not in spec, "a set_working_directory pull step breaks workers (see prefect.yaml)"
