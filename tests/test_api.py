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


def test_rounds_stop_by_rule_and_merge_across_seeds(tmp_path):
    """Rounds double up to the cap and are stored and logged per round; a composed rule
    travels from Python to the flow; two seeds merge with their counts added."""
    from mlflow.tracking import MlflowClient

    from amortval.stopping import MaxSamples, TargetError

    demo = make_demo(seed=3, n_train=60, n_valid=40, n_new=20)
    demo.valid.drop("flipped").write_parquet(tmp_path / "valid.parquet")
    store = str(tmp_path / "store")
    options = dict(FAST, samples=8, store=store, name="loans", valid=str(tmp_path / "valid.parquet"))
    # an unreachable target: every round runs, and the cap (a rule of its own here) stops it
    result = amortval.value(demo.train, target="label", stop=TargetError(1e-9) | MaxSamples(6), **options)
    rounds = result.rounds
    assert rounds["samples"].to_list() == [2, 4, 6]  # doubling, then the rule's own cap of 6
    assert rounds["fits"].to_list() == sorted(rounds["fits"].to_list())
    assert rounds["stop_reason"].to_list()[:-1] == [None, None]
    assert result.stop_reason == "cap of 6 samples per point reached"
    assert (result.values["samples"] == 6).all() and result.metrics["samples_per_point"] == 6
    history = MlflowClient(result.mlflow_uri).get_metric_history(result.mlflow_run_id, "round_estimated_nmse")
    assert sorted(m.step for m in history) == [2, 4, 6]
    # the same seed shares its draws: refused; another seed merges
    with pytest.raises(ConfigError, match="count them twice"):
        result.merge(amortval.value(demo.train, target="label", target_error=None, samples=4,
                                    **{k: v for k, v in options.items() if k != "samples"}))
    other = amortval.value(demo.train, target="label", seed=1, target_error=None, samples=4,
                           **{k: v for k, v in options.items() if k != "samples"})
    merged = result + other
    assert (merged.values["samples"] == 10).all() and merged.merged == (result, other)
    a, b = result.values.sort("row"), other.values.sort("row")
    expected = (6 * a["monte_carlo_value"] + 4 * b["monte_carlo_value"]) / 10
    assert (merged.values.sort("row")["monte_carlo_value"] - expected).abs().max() < 1e-12
    with pytest.raises(ConfigError, match="differ"):
        result.merge(amortval.value(demo.train, target="label", learner="knn", target_error=None, samples=2,
                                    **{k: v for k, v in options.items() if k != "samples"}))


def test_plot_with_a_test_set_draws_the_removal_curve(tmp_path):
    demo = make_demo(seed=4, n_train=50, n_valid=30, n_new=40)
    result = amortval.value(demo.train, target="label", store=str(tmp_path / "store"), name="loans",
                            target_error=None, **FAST)
    distribution, removal = result.plot(test=demo.new.drop("flipped"), fractions=[0.0, 0.2, 0.4])
    assert isinstance(distribution, Figure) and isinstance(removal, Figure)
    lines = [line for ax in removal.axes for line in ax.get_lines()]
    assert lines and all(len(line.get_xdata()) == 3 for line in lines)
