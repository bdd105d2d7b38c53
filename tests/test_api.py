"""The Python entry point: frames or paths in, a result with values and metadata out."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

import amortval
from amortval.data.demo import make_demo
from amortval.errors import ConfigError

pytestmark = pytest.mark.usefixtures("prefect_harness")

FAST = dict(samples=4, epochs=2, pretrain_epochs=2, batch_fits=100, mislabeled_column="flipped")


def test_value_a_frame_then_load_and_curate(tmp_path):
    demo = make_demo(seed=2, n_train=40, n_valid=30, n_new=20)
    demo.valid.drop("flipped").write_parquet(tmp_path / "valid.parquet")
    store = str(tmp_path / "store")
    result = amortval.value(demo.train, target="label", valid=str(tmp_path / "valid.parquet"), store=store,
                            name="loans", **FAST)
    assert isinstance(result, amortval.ValuationResult)
    assert result.model_uri == "models:/amortval-loans/1" and result.metrics["samples_stored"] == 40 * 4
    values = result.values
    assert values.height == 40 and values["sampled"].all() and (values["samples"] == 4).all()
    assert values.columns[:9] == ["row", "split", "label", "value", "stderr", "samples", "network_value",
                                  "monte_carlo_value", "sampled"]
    low, high = result.lowest(5), result.highest(5)
    assert low["value"].to_list() == sorted(values["value"].to_list())[:5]
    assert high["value"].max() == values["value"].max() and low["value"].max() <= high["value"].min()
    assert result.to_pandas().shape == values.shape
    assert isinstance(result.plot(), Figure)
    # the same rows as pandas are the same dataset, so the same (finished) run
    again = amortval.value(demo.train.to_pandas(), target="label", valid=str(tmp_path / "valid.parquet"),
                           store=store, name="loans", **FAST)
    assert again.run_id == result.run_id and again.mlflow_run_id == result.mlflow_run_id
    loaded = amortval.load(result.run_id[:30], store=store)
    assert loaded.values.equals(values) and loaded.model_version == "1"
    curated = amortval.curate(demo.new, store=store, name="new", mislabeled_column="flipped", drop_fraction=0.25,
                              model_version="1")  # a 4-sample network may not earn the champion alias
    assert curated.model_name == "amortval-loans" and curated.kept.height == 15 and curated.dropped_rows.height == 5
    with pytest.raises(ConfigError, match="no run"):
        amortval.load("nope", store=store)


def test_options_are_the_cli_options():
    with pytest.raises(ConfigError, match="unknown option"):
        amortval.value(None, samplez=3)
    with pytest.raises(ConfigError, match="--samples"):
        amortval.value(None, samples=-1)
