"""Stochastic amortization on a game with a known value function.

The true value is a smooth function of (x, y), phi = 0.01 * x0 * (2y - 1); each point
gets m = 5 samples phi + N(0, 0.05^2) (noise five times the spread of phi). Plain Monte
Carlo averages them per point; the cross-fitted networks pool across similar points, so
their error against the *true* phi must be far lower.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from amortval.errors import SchemaMismatchError
from amortval.models.valuation_net import ValuationEnsemble, ValuationNet
from amortval.tasks.amortize import amortize
from amortval.tasks.config import AmortizationConfig

N, M, SIGMA = 400, 5, 0.05


def make_game(seed: int = 0, n: int = N, m: int = M):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 1]))).astype(np.int64)
    phi = 0.01 * x[:, 0] * (2 * y - 1)
    values = phi[:, None] + rng.normal(scale=SIGMA, size=(n, m))
    samples = pl.DataFrame({
        "point": np.repeat(np.arange(n), m),
        "draw": np.tile(np.arange(m), n),
        "value": values.ravel(),
    })
    return x, y, phi, samples


def means(samples: pl.DataFrame, n: int, keep=None) -> np.ndarray:
    """Per-point mean of the samples (of the draws ``keep`` accepts); 0 without samples."""
    frame = samples if keep is None else samples.filter(keep)
    out = np.zeros(n)
    for point, value in frame.group_by("point").agg(pl.col("value").mean()).iter_rows():
        out[point] = value
    return out


def mse_against(estimate: np.ndarray, frame: pl.DataFrame) -> float:
    return float(np.mean((estimate[frame["point"].to_numpy()] - frame["value"].to_numpy()) ** 2))


@pytest.fixture(scope="module")
def game():
    return make_game(0)


@pytest.fixture(scope="module")
def result(game):
    x, y, _, samples = game
    seen: list[dict] = []
    res = amortize(x, y, 2, samples, config=AmortizationConfig(), seed=0, progress=seen.append)
    return res, seen


def test_network_and_combination_beat_monte_carlo_against_true_values(game, result):
    _, _, phi, samples = game
    res, _ = result
    mc = means(samples, N)
    np.testing.assert_allclose(res.monte_carlo, mc, rtol=1e-12)
    mc_error = np.mean((mc - phi) ** 2)
    assert np.mean((res.network_values - phi) ** 2) / mc_error < 0.3  # measured ~0.05
    assert np.mean((res.values - phi) ** 2) / mc_error < 0.3
    assert res.gate_passed and res.gate_mse_network < res.gate_mse_monte_carlo
    assert res.values.dtype == np.float64 and res.values.shape == (N,)
    assert res.n_folds == AmortizationConfig().folds and len(res.net.members) == res.n_folds


def test_combination_is_the_variance_weighted_mean(game, result):
    _, _, _, samples = game
    res, _ = result
    assert np.all((res.combine_weight >= 0) & (res.combine_weight <= 1))
    np.testing.assert_allclose(res.values, res.network_values + res.combine_weight * (res.monte_carlo - res.network_values))
    # lambda = e / (e + s^2/m) with s^2 shrunk halfway to the pooled within-point variance.
    var = samples.group_by("point").agg(pl.col("value").var()).sort("point")["value"].to_numpy()
    shrunk = 0.5 * var + 0.5 * var.mean()
    e = res.network_error
    np.testing.assert_allclose(res.combine_weight, e / (e + shrunk / M), rtol=1e-9)


def test_combination_follows_monte_carlo_when_samples_are_many():
    x, y, phi, samples = make_game(2, n=200, m=400)
    res = amortize(x, y, 2, samples, config=AmortizationConfig(pretrain_epochs=2, epochs=3), seed=0)
    mc_error = np.mean((res.monte_carlo - phi) ** 2)
    assert np.mean(res.combine_weight) > 0.5
    assert np.mean((res.values - phi) ** 2) <= 1.05 * min(mc_error, np.mean((res.network_values - phi) ** 2))


def test_history_folds_rates_and_epochs(result):
    res, seen = result
    config = AmortizationConfig()
    assert [h["epoch"] for h in res.history] == list(range(config.epochs + 1))
    assert len(seen) == res.n_folds * config.lr_tries * (config.epochs + 1)
    rates = sorted({h["lr"] for h in seen}, reverse=True)
    assert rates == pytest.approx([config.lr / 5 ** k for k in range(config.lr_tries)])
    # One rate for every fold: the one with the lowest mean (over folds) of each fold's best held-out MSE.
    best = {lr: np.mean([min(h["heldout_mse"] for h in seen if h["fold"] == f and h["lr"] == lr)
                         for f in range(res.n_folds)]) for lr in rates}
    chosen = min(best, key=best.get)
    assert res.fold_lrs == [chosen] * res.n_folds
    kept = [h for h in seen if h["lr"] == chosen]
    for epoch, entry in enumerate(res.history):  # the history is the chosen rate's, averaged over folds
        fold_entries = [h for h in kept if h["epoch"] == epoch]
        assert entry["heldout_mse"] == pytest.approx(np.mean([h["heldout_mse"] for h in fold_entries]), rel=1e-12)
    for fold, epoch in enumerate(res.fold_epochs):
        curve = [h["heldout_mse"] for h in kept if h["fold"] == fold]
        assert epoch == int(np.argmin(curve))
    assert res.best_epoch == int(np.argmin([h["heldout_mse"] for h in res.history]))


def test_one_rate_reproduces_the_single_rate_fit(game):
    x, y, _, samples = game
    one = amortize(x, y, 2, samples, config=AmortizationConfig(lr_tries=1, pretrain_epochs=2, epochs=3), seed=0)
    two = amortize(x, y, 2, samples, config=AmortizationConfig(lr_tries=2, pretrain_epochs=2, epochs=3), seed=0)
    assert one.fold_lrs == [5e-4] * one.n_folds
    assert two.gate_mse_network <= one.gate_mse_network + 1e-15  # the choice includes the first rate's fits
    if two.fold_lrs[0] == 5e-4:
        np.testing.assert_array_equal(two.network_values, one.network_values)


def test_gate_compares_on_the_held_out_fold(game, result):
    x, y, _, samples = game
    res, seen = result
    # Draw d belongs to fold d % folds; fold f's Monte Carlo uses the other draws only.
    k = res.n_folds
    mc = [mse_against(means(samples, N, pl.col("draw") % k != f), samples.filter(pl.col("draw") % k == f))
          for f in range(k)]
    assert res.gate_mse_monte_carlo == pytest.approx(np.mean(mc), rel=1e-12)
    lr = res.fold_lrs[0]
    kept = [min(h["heldout_mse"] for h in seen if h["fold"] == f and h["lr"] == lr) for f in range(k)]
    assert res.gate_mse_network == pytest.approx(np.mean(kept), rel=1e-12)
    # Epoch 0 is the zero head: its held-out MSE is the mean square of the held-out samples.
    zero = [h["heldout_mse"] for h in seen if h["fold"] == 0 and h["epoch"] == 0][0]
    assert zero == pytest.approx(mse_against(np.zeros(N), samples.filter(pl.col("draw") % k == 0)), rel=1e-12)


def test_one_sample_per_point_folds_the_points():
    x, y, phi, samples = make_game(3, n=300, m=1)
    res = amortize(x, y, 2, samples, config=AmortizationConfig(pretrain_epochs=2, epochs=4), seed=0)
    assert res.n_folds == AmortizationConfig().folds
    assert np.mean((res.values - phi) ** 2) < np.mean((res.monte_carlo - phi) ** 2)


def test_point_without_samples_gets_the_network_value():
    x, y, _, samples = make_game(1, n=60)
    samples = samples.filter(pl.col("point") != 7)
    res = amortize(x, y, 2, samples, config=AmortizationConfig(pretrain_epochs=1, epochs=2), seed=0)
    assert res.monte_carlo[7] == 0.0 and res.combine_weight[7] == 0.0
    assert res.values[7] == res.network_values[7] and np.isfinite(res.values[7])


def test_same_seed_identical_other_seed_differs(game, result):
    x, y, _, samples = game
    res, _ = result
    config = AmortizationConfig()
    global_state = torch.get_rng_state()
    again = amortize(x, y, 2, samples, config=config, seed=0)
    other = amortize(x, y, 2, samples, config=config, seed=1)
    assert torch.equal(torch.get_rng_state(), global_state)  # global RNG never drawn from
    assert np.array_equal(again.values, res.values)
    assert again.history == res.history
    assert not np.array_equal(other.values, res.values)


def test_pretraining_is_reused_across_rounds_with_identical_results(game, result, monkeypatch):
    """A run in rounds passes one dict to every round: round 2 skips pretraining (no call)
    and gives the values a run pretraining again gives (the pretraining stream is the fold's)."""
    import amortval.tasks.amortize as amortize_module

    x, y, _, samples = game
    res, _ = result
    config = AmortizationConfig()
    calls = []
    pretrain = amortize_module._pretrain
    monkeypatch.setattr(amortize_module, "_pretrain", lambda *a: calls.append(1) or pretrain(*a))
    kept: dict = {}
    first = amortize(x, y, 2, samples.filter(pl.col("point") < 300), config=config, seed=0, pretrained=kept)
    assert len(calls) == config.folds and len(kept) == config.folds
    again = amortize(x, y, 2, samples, config=config, seed=0, pretrained=kept)
    assert len(calls) == config.folds, "round 2 pretrained nothing"
    assert np.array_equal(again.values, res.values), "the same values as pretraining again"
    assert not np.array_equal(first.values, again.values)
    other_seed = amortize(x, y, 2, samples, config=config, seed=1, pretrained=kept)
    assert len(calls) == 2 * config.folds, "another seed is another pretraining"
    assert not np.array_equal(other_seed.values, res.values)


def test_value_is_read_at_the_label(game, result):
    x, y, _, _ = game
    res, _ = result
    xt, yt = torch.from_numpy(x[:50]), torch.from_numpy(y[:50])
    with torch.no_grad():
        out = res.net(xt)
        own = res.net.value(xt, yt)
        swapped = res.net.value(xt, 1 - yt)
    assert torch.equal(own, out[torch.arange(50), yt])
    assert torch.equal(swapped, out[torch.arange(50), 1 - yt])
    assert not torch.allclose(own, swapped)
    assert np.allclose(own.double().numpy() * res.target_scale, res.network_values[:50])


def test_net_init_is_seeded_and_zero_head_zeroes_output():
    def make(seed: int) -> ValuationNet:
        return ValuationNet(4, 3, hidden=8, layers=2, generator=torch.Generator().manual_seed(seed))

    a, b, c = make(5), make(5), make(6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    a.zero_head()
    assert torch.count_nonzero(a(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)))) == 0


def test_ensemble_is_the_mean_of_its_members():
    members = [ValuationNet(4, 3, hidden=8, layers=2, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    ensemble = ValuationEnsemble(members)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    want = torch.stack([m.value(x, y) for m in members]).mean(dim=0)
    assert torch.allclose(ensemble.value(x, y), want)
    assert ensemble.architecture() == {**members[0].architecture(), "members": 3}
    with pytest.raises(ValueError, match="architecture"):
        ValuationEnsemble([members[0], ValuationNet(4, 3, hidden=16, layers=2)])


def test_bad_samples_are_refused(game):
    x, y, _, samples = game
    config = AmortizationConfig(pretrain_epochs=0, epochs=1)
    with pytest.raises(ValueError, match="value"):
        amortize(x, y, 2, samples.drop("value"), config=config, seed=0)
    with pytest.raises(ValueError, match="two samples"):
        amortize(x, y, 2, samples.filter((pl.col("point") == 0) & (pl.col("draw") == 0)), config=config, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        amortize(x, y, 2, samples.with_columns(pl.lit(float("nan")).alias("value")), config=config, seed=0)


def test_valuation_model_round_trip(tmp_path):
    from amortval.data.encoding import TabularEncoder
    from amortval.models.valuation_model import ValuationModel

    rng = np.random.default_rng(3)
    n = 80
    frame = pl.DataFrame({
        "income": rng.normal(50.0, 10.0, n),
        "region": rng.choice(["north", "south", "west"], n).tolist(),
        "label": rng.choice(["approved", "denied"], n).tolist(),
    })
    encoder = TabularEncoder.fit(frame, "label")
    x, y = encoder.transform(frame), encoder.labels(frame)
    phi = 0.01 * x[:, 0] * (2 * y - 1)
    samples = pl.DataFrame({
        "point": np.repeat(np.arange(n), 4),
        "draw": np.tile(np.arange(4), n),
        "value": (phi[:, None] + rng.normal(scale=0.02, size=(n, 4))).ravel(),
    })
    config = AmortizationConfig(pretrain_epochs=2, epochs=3)
    res = amortize(x, y, encoder.n_classes, samples, config=config, seed=0)

    model = ValuationModel(encoder, res.net, res.target_scale)
    predicted = model.predict(frame)
    assert predicted.dtype == np.float64
    np.testing.assert_allclose(predicted, res.network_values, rtol=1e-6, atol=1e-12)

    model.save(tmp_path / "model")
    loaded = ValuationModel.load(tmp_path / "model")
    assert np.array_equal(loaded.predict(frame), predicted)
    pandas_frame = frame.to_pandas()
    assert isinstance(pandas_frame, pd.DataFrame)
    assert np.array_equal(loaded.predict(pandas_frame), predicted)
    assert loaded.encoder.input_schema() == encoder.input_schema()

    with pytest.raises(SchemaMismatchError, match="region"):
        loaded.predict(frame.drop("region"))
    assert np.array_equal(loaded.predict(frame.with_columns(pl.lit(1).alias("id")), ignore=["id"]), predicted)


def test_gate_against_a_constant_and_the_estimated_error(game, result):
    """The constant is each fold's mean training sample; the estimated normalized error of
    the reported values (no truth used) is within two standard errors of the true one."""
    x, y, phi, samples = game
    res, _ = result
    k = res.n_folds
    constant = [mse_against(np.full(N, samples.filter(pl.col("draw") % k != f)["value"].mean()),
                            samples.filter(pl.col("draw") % k == f)) for f in range(k)]
    assert res.gate_mse_constant == pytest.approx(np.mean(constant), rel=1e-12)
    true_nmse = float(np.mean((res.values - phi) ** 2) / phi.var())
    assert abs(res.error.nmse - true_nmse) <= 2 * res.error.nmse_se + 0.02, (res.error, true_nmse)
    assert res.error.true_variance == pytest.approx(phi.var(), rel=0.5)


def test_a_network_of_pure_noise_fails_the_gate():
    """Samples with no signal (every true value 0): the network cannot beat the constant,
    whatever it does against the noisier per-point Monte Carlo means."""
    x, y, _, samples = make_game(1)
    noise = samples.with_columns(pl.Series("value", np.random.default_rng(2).normal(scale=SIGMA, size=samples.height)))
    res = amortize(x, y, 2, noise, config=AmortizationConfig(epochs=3), seed=0)
    assert not res.gate_passed and res.gate_mse_network < res.gate_mse_monte_carlo
    assert res.error.nmse + res.error.nmse_se > 0.5  # and no error target would be met


def test_pretraining_epochs_take_at_most_pretrain_rows(monkeypatch, game):
    """A large table's pretraining epoch is a random PRETRAIN_ROWS of it, not every row."""
    from torch import nn

    import amortval.tasks.amortize as module

    seen: list[int] = []

    class Counting(nn.CrossEntropyLoss):
        def forward(self, logits, target):
            seen.append(int(target.shape[0]))
            return super().forward(logits, target)

    monkeypatch.setattr(module, "PRETRAIN_ROWS", 50)
    monkeypatch.setattr(module.nn, "CrossEntropyLoss", Counting)
    x, y, _, samples = game
    amortize(x, y, 2, samples, config=AmortizationConfig(pretrain_epochs=3, epochs=1, folds=2), seed=0)
    assert sum(seen) == 2 * 3 * 50  # 2 fold networks x 3 epochs x 50 rows, of the game's 400
