"""The run config: one place for defaults, named random streams, two identities."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from amortval.errors import ConfigError
from amortval.flows.cli import build_parser, flag, options_table
from amortval.tasks.config import OPTION_PARTS, RunConfig, option_fields
from amortval.tasks.streams import STREAMS, stream

ROOT = Path(__file__).resolve().parents[1]


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return " ".join(sub.format_help().split())


def test_help_shows_every_option_with_the_config_default():
    text = _help("value")
    for name, field in option_fields().items():
        default = field.get_default(call_default_factory=True)
        if default is None and "(default:" in field.description:
            continue  # described in words ("the built-in demo dataset")
        shown = {True: "on", False: "off", None: "none"}.get(default, str(default)) \
            if isinstance(default, (bool, type(None))) else str(default)
        assert re.search(rf"{re.escape(flag(name))}\b.*?\(default: {re.escape(shown)}\)", text), name
    # Epochs: the drift that started it (the CLI said 30 where the flow said 10).
    assert "(default: 10)" in text.split("--epochs EPOCHS")[-1].split(" --")[0]


def test_the_cli_without_flags_is_the_default_config():
    args = build_parser().parse_args(["value"])
    given = {k: v for k, v in vars(args).items() if k in OPTION_PARTS}
    assert given == {} and RunConfig.from_options(**given) == RunConfig()


def test_the_flow_default_is_the_default_config():
    from amortval.flows.valuation import value_dataset

    assert inspect.signature(value_dataset.fn).parameters["config"].default == RunConfig()


def test_the_readme_option_table_is_generated_from_the_config():
    readme = (ROOT / "README.md").read_text()
    assert options_table() in readme, "regenerate with: python -c 'from amortval.flows.cli import options_table; print(options_table())'"


def test_deployments_name_only_real_overrides_and_share_the_cli_run():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    valuation = [d for d in spec["deployments"] if d["entrypoint"].endswith(":value_dataset")]
    assert valuation
    for deployment in valuation:
        overrides = (deployment.get("parameters") or {}).get("config", {})
        config = RunConfig.build(overrides)  # unknown or invalid options raise
        restated = {k: v for k, v in config.options().items() if k in overrides and v == RunConfig().options()[k]}
        assert not restated, f"{deployment['name']} restates defaults {restated}: drop them"
    demo = next(d for d in valuation if d["name"] == "nightly-demo")
    assert RunConfig.build((demo.get("parameters") or {}).get("config")) == RunConfig()


def test_bad_values_name_the_option():
    with pytest.raises(ConfigError, match=r"--alpha: .*finite"):
        RunConfig.from_options(method="beta", alpha=float("nan"))
    with pytest.raises(ConfigError, match=r"--samples: .*greater than or equal to 1"):
        RunConfig.from_options(samples=0)
    with pytest.raises(ConfigError, match=r"--seed: .*less than or equal"):
        RunConfig.from_options(seed=2**70)
    with pytest.raises(ConfigError, match=r"--sampler: .*cannot estimate method 'banzhaf'"):
        RunConfig.from_options(method="banzhaf", sampler="permutation")
    with pytest.raises(ConfigError, match="unknown option"):
        RunConfig.from_options(sample=3)
    with pytest.raises(ConfigError, match="--valid-fraction"):
        RunConfig.from_options(valid_fraction=1.0)


def test_sampling_identity_excludes_budget_batching_and_network():
    base = RunConfig()
    for change in ({"samples": 99}, {"batch_fits": 7}, {"epochs": 3}, {"hidden": 16}, {"folds": 3},
                   {"workers": 1}, {"store": "elsewhere"}, {"knn_k": 9}, {"alpha": 2.0}):
        assert base.replace(**change).sampling_id("d") == base.sampling_id("d"), change
    for change in ({"seed": 1}, {"learner": "mlp"}, {"method": "beta"}, {"sampler": "independent"}):
        assert base.replace(**change).sampling_id("d") != base.sampling_id("d"), change
    assert base.sampling_id("other data") != base.sampling_id("d")
    # knn_k and alpha matter only where they change the utility or the semivalue
    knn = base.replace(learner="knn")
    assert knn.replace(knn_k=9).sampling_id("d") != knn.sampling_id("d")
    beta = base.replace(method="beta")
    assert beta.replace(alpha=2.0).sampling_id("d") != beta.sampling_id("d")


def test_run_identity_adds_budget_and_network_but_not_execution():
    base = RunConfig()
    for change in ({"samples": 99}, {"epochs": 3}, {"lr": 1e-3}, {"folds": 3}):
        assert base.replace(**change).run_id("d") != base.run_id("d"), change
        assert base.replace(**change).run_id("d").startswith(base.sampling_id("d"))
    for change in ({"workers": 1}, {"runner": "dask"}, {"batch_fits": 7}, {"out": "x.parquet"}, {"model_name": "m"}):
        assert base.replace(**change).run_id("d") == base.run_id("d"), change


def test_random_streams_are_distinct_per_purpose_and_index():
    assert len(set(STREAMS.values())) == len(STREAMS)
    first = {name: stream(0, name).random(4) for name in STREAMS}
    for a in STREAMS:
        for b in STREAMS:
            if a < b:
                assert not np.array_equal(first[a], first[b]), (a, b)
    # A unit's stream is not a purpose's stream, nor the old per-batch stream of 0.1
    units = [stream(0, "units", u).random(4) for u in range(4)]
    old_batch_one = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,))).random(4)
    assert all(not np.array_equal(u, old_batch_one) for u in units)
    assert len({tuple(u) for u in units}) == 4
    with pytest.raises(ValueError, match="unknown random stream"):
        stream(0, "batches")


def test_config_round_trips_through_json_and_the_store_record():
    config = RunConfig.from_options(samples=7, epochs=4, learner="knn", knn_k=3, data="x.csv", target="y")
    again = RunConfig.build(config.model_dump(mode="json"))
    assert again == config and again.run_id("d") == config.run_id("d")


def test_budgets_that_cannot_run_are_refused_before_any_work():
    from amortval.tasks.run_plan import check_size

    with pytest.raises(ConfigError, match=r"--samples: .*less than or equal to 100000"):
        RunConfig.from_options(samples=1_000_000_000)  # issue 11: 8.3 GB before the first batch
    with pytest.raises(ConfigError, match=r"GiB to amortize.*lower --samples"):
        check_size(1_000_000, 100_000)
    check_size(500, 50)  # the demo fits
