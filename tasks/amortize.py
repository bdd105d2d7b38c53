"""Stochastic amortization: fit the valuation network to noisy Monte Carlo samples.

Each training point i has noisy, unbiased samples of its value phi_i (``value`` =
weight * delta, numbered by ``draw``). The recipe follows Covert et al. (2024) --
classifier pretraining on (x, y), zeroed last layer, MSE regression of the samples with
Adam and a cosine-decayed learning rate, the epoch kept by its MSE against *held-out*
samples of the same points -- with four changes, each measured on UCI adult against
exact KNN-Shapley values (README, "Accuracy"):

1. **Cross-fitting, no sample wasted.** The draws are split into ``folds`` folds by draw
   number (with permutation sampling a draw is one permutation, so whole permutations
   are held out). Network f trains on every fold but f and keeps the epoch with the
   lowest MSE against fold f. The reported network is the ensemble (mean) of the
   ``folds`` networks: every sample trains all but one of them and selects the epoch of
   one, instead of 20% of the samples only ever choosing the epoch. With one draw per
   point the folds split the points instead (the only split left).
2. **A short schedule** (10 epochs by default): the best epoch on noisy targets is early,
   and a cosine schedule that ends there anneals the learning rate where it matters.
   The rate itself is chosen too: every fold network regresses from its pretrained
   weights at ``lr_tries`` rates (``lr``, ``lr``/5, ...), and the rate with the lowest
   held-out MSE averaged over the folds is kept (``_chosen_rate``).
3. **Combination with Monte Carlo.** The network has an error floor (it smooths
   across points); the per-point Monte Carlo mean has none but a variance s_i^2 / m_i.
   The reported value is the variance-weighted combination
   ``net_i + lambda_i (mc_i - net_i)``, ``lambda_i = e / (e + s_i^2 / m_i)``, where e is
   the network's estimated squared error (see below) and s_i^2 the point's sample variance shrunk halfway to the
   pooled one. With few samples lambda is ~0 (the network wins); as samples grow it
   goes to 1 for every point, so the result tracks the better of the two at every m.

For held-out h independent of an estimate with E[h] = phi,
E[(est - h)^2] = E[(est - phi)^2] + Var(h). Comparing each fold's network with the
Monte Carlo mean of the same training draws, on the same held-out samples, therefore
compares their *true* errors: that is the quality gate (``gate_passed``). The network's own
error e comes from the same held-out samples paired with a constant, where Var(h) cancels
sample by sample (``tasks/error_estimate.py``). The gate also compares the network with a
constant (each fold's mean sample value for every point), paired on the same held-out
samples, and must beat it by more than one standard error of that comparison: a network
no better than the mean value has learned nothing, however noisy the Monte Carlo means are. e and the
Monte Carlo noise give the values' estimated normalized error (``tasks/error_estimate.py``),
the quantity ``--target-error`` sets.

4. **A control variate for small coalitions** (``tasks/control_variate.py``, on when the
   samples carry their cardinality, as a run's stored samples do): each sample at a
   cardinality below ``control_below`` has its (cardinality, label) mean taken out and
   that mean's expectation put back, the same value in expectation with most of the
   variance of the few tiny-coalition samples gone (on adult n = 5,000 at m = 50: sample
   variance 0.56x, probe Pearson 0.900 -> 0.927).

Training rows are points, not samples: sum_j (f - t_j)^2 = m (f - mean)^2 + const, so
regressing each point's mean, weighted by its sample count, has the loss (and optimum)
of regressing every sample at a fraction of the cost. Targets are divided by
``target_scale`` (the std of the sample values) so the regression works on O(1) numbers.

All randomness (initialization, shuffling, point folds) comes from the run ``seed``
through its own named streams (``tasks/streams.py``: ``network``, ``point_folds``): the
same inputs and seed give bit-identical values on CPU.

**Pretraining once per run.** Fold f's network starts from its own stream
(``network``, f): initialization and classifier pretraining depend on the features,
labels, seed and fold only, never on the samples. A run sampling in rounds passes one
``pretrained`` dict to every round's ``amortize``: the first round pretrains and keeps
each fold's weights, later rounds start from them, with the same values as pretraining
again. Pretraining is 20 epochs of up to 20,000 rows per fold against 10 regression
epochs over the sampled rows, the larger part of a round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import polars as pl
import torch
from torch import nn

from amortval.models.valuation_net import ValuationEnsemble, ValuationNet
from amortval.tasks.config import AmortizationConfig
from amortval.tasks import control_variate, error_estimate
from amortval.tasks.control_variate import Adjustment
from amortval.tasks.error_estimate import ErrorEstimate
from amortval.tasks.streams import stream, torch_generator

@dataclass
class AmortizationResult:
    net: ValuationEnsemble
    target_scale: float
    values: np.ndarray  # reported: network and Monte Carlo combined (float64, (n,))
    network_values: np.ndarray  # the ensemble's predictions
    monte_carlo: np.ndarray  # per-point mean of all samples (0 where a point has none)
    combine_weight: np.ndarray  # lambda_i, the weight of the Monte Carlo mean
    network_error: float  # estimated mean squared error of a fold network against phi
    history: list[dict]  # per epoch, averaged over folds
    best_epoch: int  # epoch of the lowest fold-averaged held-out MSE (for the plot)
    fold_epochs: list[int]  # epoch kept by each fold network
    fold_lrs: list[float]  # learning rate of the fold networks (``lr_tries``; one for all)
    gate_mse_network: float
    gate_mse_monte_carlo: float
    gate_mse_constant: float  # the held-out MSE of each fold's mean sample value for every point
    gate_passed: bool  # the network beats the Monte Carlo means, and the constant by more than one standard error
    error: ErrorEstimate  # the reported values' estimated error (no ground truth)
    n_samples: int
    n_folds: int
    seconds: float
    control: Adjustment  # the small-coalition control variate applied to the samples first


@dataclass(frozen=True)
class _Samples:
    point: np.ndarray  # int64 (S,)
    value: np.ndarray  # float64 (S,)
    fold: np.ndarray  # int64 (S,) fold of each sample
    n_folds: int


@dataclass(frozen=True)
class _Fold:
    """Per-point sufficient statistics of one fold's training draws, and its held-out draws."""

    count: np.ndarray  # float64 (n,) training samples per point
    mean: np.ndarray  # float64 (n,) mean of training samples (0 where count == 0)
    sum_sq_dev: np.ndarray  # float64 (n,) sum_j (t_j - mean)^2 per point
    held_point: np.ndarray  # int64 (H,)
    held_value: np.ndarray  # float64 (H,)


def _read(samples: pl.DataFrame, n: int, folds: int, seed: int) -> _Samples:
    missing = [c for c in ("point", "draw", "value") if c not in samples.columns]
    if missing:
        raise ValueError(f"samples frame lacks column(s) {missing}; has {samples.columns}")
    point = samples["point"].to_numpy().astype(np.int64, copy=False)
    draw = samples["draw"].to_numpy().astype(np.int64, copy=False)
    value = samples["value"].to_numpy().astype(np.float64, copy=False)
    if point.size == 0:
        raise ValueError("no samples to amortize")
    if point.min() < 0 or point.max() >= n:
        raise ValueError(f"samples 'point' must lie in [0, {n}), got [{point.min()}, {point.max()}]")
    if not np.all(np.isfinite(value)):
        bad = int(np.flatnonzero(~np.isfinite(value))[0])
        raise ValueError(f"samples 'value' has non-finite entries (first at row {bad})")
    draws = np.unique(draw)
    if draws.size >= 2:  # hold out whole draws (permutations): the same points, other samples
        k = min(folds, draws.size)
        fold = np.searchsorted(draws, draw) % k
    else:  # one draw per point: only a split of the points is left
        sampled = np.unique(point)
        if sampled.size < 2:
            raise ValueError("amortization needs at least two samples (two draws, or two points)")
        k = min(folds, sampled.size)
        rng = stream(seed, "point_folds")
        point_fold = np.zeros(n, dtype=np.int64)
        point_fold[sampled] = rng.permutation(sampled.size) % k
        fold = point_fold[point]
    return _Samples(point, value, fold, int(k))


def _moments(point: np.ndarray, value: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: sample count, mean (0 without samples) and sum of squared deviations."""
    count = np.bincount(point, minlength=n).astype(np.float64)
    mean = np.divide(np.bincount(point, weights=value, minlength=n), count, out=np.zeros(n), where=count > 0)
    return count, mean, np.bincount(point, weights=(value - mean[point]) ** 2, minlength=n)


def _fold(s: _Samples, f: int, n: int) -> _Fold:
    train = s.fold != f
    count, mean, sum_sq_dev = _moments(s.point[train], s.value[train], n)
    return _Fold(count, mean, sum_sq_dev, s.point[~train], s.value[~train])


def _heldout_mse(pred: np.ndarray, f: _Fold) -> float:
    """Mean over held-out samples h of (pred[point] - h)^2, in original units."""
    return float(np.mean((pred[f.held_point] - f.held_value) ** 2))


def _train_mse(pred: np.ndarray, f: _Fold) -> float:
    """Exact mean over training samples t of (pred[point] - t)^2 (comparable to held-out)."""
    return float(np.sum(f.count * (pred - f.mean) ** 2 + f.sum_sq_dev) / f.count.sum())


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float) -> np.ndarray:
    net.eval()
    out = net.value(x, y).double().numpy() * scale
    net.train()
    return out


def _predict_at(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float, rows: np.ndarray) -> np.ndarray:
    """The network's values at ``rows`` (0 elsewhere), as an array over every point."""
    out = np.zeros(x.shape[0])
    index = torch.as_tensor(rows)
    out[rows] = _predict(net, x[index], y[index], scale)
    return out


PRETRAIN_ROWS = 20_000  # rows per pretraining epoch, at most


def _pretrain(net: ValuationNet, x: torch.Tensor, y: torch.Tensor, config: AmortizationConfig,
              generator: torch.Generator) -> None:
    """Classifier pretraining (cross-entropy on the point's own label)."""
    if config.pretrain_epochs == 0:
        return
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for _ in range(config.pretrain_epochs):
        # A large table's epoch is a fresh random PRETRAIN_ROWS of it: the classifier only
        # initializes the network, and a full pass over a million rows per fold and epoch
        # made pretraining the largest cost of a run (README, "Scale benchmark").
        order = torch.randperm(n, generator=generator)[:PRETRAIN_ROWS]
        for start in range(0, order.numel(), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()


def _pretrained(xt: torch.Tensor, yt: torch.Tensor, n_classes: int, config: AmortizationConfig, seed: int,
                fold: int, cache: dict | None) -> ValuationNet:
    """Fold ``fold``'s network, initialized and pretrained on its own stream; taken from
    ``cache`` (and stored there) when one is given."""
    generator = torch_generator(seed, "network", fold)
    net = ValuationNet(xt.shape[1], n_classes, config.hidden, config.layers, generator=generator)
    key = (fold, seed, config.hidden, config.layers, config.pretrain_epochs, config.batch_size, config.lr,
           tuple(xt.shape), n_classes)
    if cache is not None and key in cache:
        net.load_state_dict(cache[key])
        return net
    net.train()
    _pretrain(net, xt, yt, config, generator)
    if cache is not None:
        cache[key] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return net


def _regress(net: ValuationNet, xt: torch.Tensor, yt: torch.Tensor, f: _Fold, scale: float, lr: float,
             epochs: int, batch_size: int, generator: torch.Generator,
             record: Callable[[int, np.ndarray], float]) -> tuple[float, int, dict, np.ndarray]:
    """Zero the head and regress the fold's means at one learning rate; returns the lowest
    held-out MSE, its epoch, the weights there and their predictions."""
    net.train()
    net.zero_head()
    rows = torch.as_tensor(np.flatnonzero(f.count > 0))
    target = torch.as_tensor(f.mean / scale, dtype=torch.float32)
    # Count weights normalized by their mean over trained points: each batch's loss is an
    # unbiased estimate of the per-sample objective, and equals plain MSE when counts match.
    weight = torch.as_tensor(f.count / f.count[f.count > 0].mean(), dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    total_steps = epochs * math.ceil(rows.numel() / batch_size)
    min_lr = lr * 0.01

    # Each epoch's MSEs read the points with samples only: predicting those, not every row,
    # keeps an epoch's cost with the samples (2,500 sampled of a million rows).
    active = f.count > 0
    active[f.held_point] = True
    active = np.flatnonzero(active)
    pred = _predict_at(net, xt, yt, scale, active)
    best = (record(0, pred), 0, {k: v.detach().clone() for k, v in net.state_dict().items()}, pred)
    step = 0
    for epoch in range(1, epochs + 1):
        order = rows[torch.randperm(rows.numel(), generator=generator)]
        for start in range(0, order.numel(), batch_size):
            idx = order[start:start + batch_size]
            group_lr = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = group_lr
            optimizer.zero_grad(set_to_none=True)
            err = net.value(xt[idx], yt[idx]) - target[idx]
            (weight[idx] * err.square()).mean().backward()
            optimizer.step()
            step += 1
        pred = _predict_at(net, xt, yt, scale, active)
        heldout = record(epoch, pred)
        if heldout < best[0]:
            best = (heldout, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()}, pred)
    return best


LR_STEP = 5.0  # each further learning rate tried is the last one divided by this


@dataclass(frozen=True)
class _Try:
    """One fold network regressed at one learning rate, at its best held-out epoch."""

    lr: float
    heldout_mse: float
    epoch: int
    state: dict
    pred: np.ndarray
    curve: np.ndarray  # (epoch, [train, held-out])


def _fit_fold(net: ValuationNet, xt: torch.Tensor, yt: torch.Tensor, f: _Fold, scale: float,
              config: AmortizationConfig, seed: int, fold: int,
              record: Callable[[float, int, np.ndarray], tuple[float, float]]) -> list[_Try]:
    """One pretrained network, regressed from its pretrained weights at each of
    ``config.lr_tries`` learning rates, each with its own shuffling stream (``network``,
    fold, rate), so a rate's fit does not depend on how many were tried (``record``
    returns an epoch's train and held-out MSE)."""
    pretrained = {k: v.detach().clone() for k, v in net.state_dict().items()}
    tries = []
    for k in range(config.lr_tries):
        lr = config.lr / LR_STEP ** k
        net.load_state_dict(pretrained)
        curve = np.zeros((config.epochs + 1, 2))

        def held_out(epoch: int, pred: np.ndarray, lr: float = lr, curve: np.ndarray = curve) -> float:
            curve[epoch] = record(lr, epoch, pred)
            return float(curve[epoch, 1])

        mse, epoch, state, pred = _regress(net, xt, yt, f, scale, lr, config.epochs, config.batch_size,
                                           torch_generator(seed, "network", fold, k), held_out)
        tries.append(_Try(lr, mse, epoch, state, pred, curve))
    return tries


def _chosen_rate(tries: list[list[_Try]]) -> int:
    """The learning rate (index) whose fold networks have the lowest mean held-out MSE.

    Why more than one rate: the right one follows the number of optimizer steps, which
    follows the sampled rows. On 10,000 sampled rows of UCI adult (2 samples each) 5e-4
    overfits the noise within the first epoch (probe Pearson 0.84-0.89 over 3 seeds, 1e-4
    gave 0.95); on 250 rows 1e-4 is far too slow (network nMSE 0.52 against 0.18 at
    m = 50). One rate for every fold: each fold's held-out draws alone chose wrongly, the
    mean over folds did not (README, "Accuracy").
    """
    mse = np.array([[t.heldout_mse for t in fold] for fold in tries])  # (fold, rate)
    return int(np.argmin(mse.mean(axis=0)))


def combine(network: np.ndarray, mc: np.ndarray, count: np.ndarray, variance: np.ndarray,
            network_error: float) -> tuple[np.ndarray, np.ndarray]:
    """Variance-weighted combination of the network with each point's Monte Carlo mean.

    ``variance`` is each point's per-sample variance (``_shrunk_variance``). Returns
    (combined values, lambda); points without samples keep the network's value.
    """
    mc_var = np.divide(variance, count, out=np.full(count.shape, np.inf), where=count > 0)
    lam = np.where(count > 0, network_error / (network_error + mc_var), 0.0)
    lam = np.nan_to_num(lam, nan=1.0)  # both variances 0: the sample mean is exact
    return network + lam * (mc - network), lam


def amortize(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    samples: pl.DataFrame,
    *,
    config: AmortizationConfig,
    seed: int,
    progress: Callable[[dict], None] | None = None,
    pretrained: dict | None = None,
) -> AmortizationResult:
    """Cross-fit ``config.folds`` valuation networks on the samples and combine with MC.

    ``x`` (n, d) encoded features, ``y`` (n,) class indices, ``samples`` with columns
    point, draw, value. Returns the ensemble, its values, the combined values (float64,
    original units) and the quality gate. ``progress`` is called once per fold and
    regression epoch (epoch 0 included) with that epoch's history entry. ``pretrained``
    (a dict the caller keeps across calls on the same features and labels) holds each
    fold's pretrained weights: given again, pretraining is skipped with identical results.
    """
    started = time.perf_counter()
    n = int(x.shape[0])
    s = _read(samples, n, config.folds, seed)  # checks the frame before anything is computed
    # Only samples that carry their cardinality can be adjusted (off: the frame comes back as is).
    below = config.control_below if "cardinality" in samples.columns else 0
    samples, control = control_variate.adjust(samples, y, below)
    if control.samples_adjusted:
        s = replace(s, value=samples["value"].to_numpy().astype(np.float64, copy=False))
    scale = float(np.std(s.value))
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64))

    curves = np.zeros((s.n_folds, config.epochs + 1, 2))  # (fold, epoch, [train, held-out])
    members, rates, epochs, net_mse, mc_mse, const_mse, paired = [], [], [], [], [], [], []
    tries: list[list[_Try]] = []  # (fold, learning rate)
    folds: list[_Fold] = []
    count, mc, sum_sq_dev = _moments(s.point, s.value, n)
    variance = _shrunk_variance(count, sum_sq_dev, s.value)
    for f in range(s.n_folds):
        fold = _fold(s, f, n)

        def record(lr: float, epoch: int, pred: np.ndarray, f: int = f, fold: _Fold = fold) -> tuple[float, float]:
            train, heldout = _train_mse(pred, fold), _heldout_mse(pred, fold)
            if progress is not None:
                progress({"fold": f, "lr": lr, "epoch": epoch, "train_mse": train, "heldout_mse": heldout})
            return train, heldout

        net = _pretrained(xt, yt, n_classes, config, seed, f, pretrained)
        tries.append(_fit_fold(net, xt, yt, fold, scale, config, seed, f, record))
        members.append(net)
        folds.append(fold)

    rate = _chosen_rate(tries)
    for f, (net, fold) in enumerate(zip(members, folds)):
        chosen = tries[f][rate]
        net.load_state_dict(chosen.state)
        net.eval()
        curves[f] = chosen.curve  # the history plotted is the chosen rate's
        rates.append(chosen.lr)
        epochs.append(chosen.epoch)
        net_mse.append(chosen.heldout_mse)
        mc_mse.append(_heldout_mse(fold.mean, fold))
        constant = float(np.sum(fold.count * fold.mean) / fold.count.sum())
        const_mse.append(float(np.mean((constant - fold.held_value) ** 2)))
        # Against the constant on the same held-out samples, Var(h) cancels sample by sample.
        paired.append((chosen.pred[fold.held_point] - fold.held_value) ** 2 - (constant - fold.held_value) ** 2)

    ensemble = ValuationEnsemble(members)
    network_values = _predict(ensemble, xt, yt, scale)
    paired = np.concatenate(paired)
    spread_se = error_estimate.true_variance_se(count, mc, variance)
    network_error, network_se = error_estimate.network_error(error_estimate.true_variance(count, mc, variance), paired)
    # Better than the constant by more than one standard error of the held-out comparison.
    beats_constant = bool(paired.size and float(np.mean(paired)) + network_se < 0)
    values, lam = combine(network_values, mc, count, variance, network_error)
    mean_curve = curves.mean(axis=0)
    history = [{"epoch": e, "train_mse": float(mean_curve[e, 0]), "heldout_mse": float(mean_curve[e, 1])}
               for e in range(config.epochs + 1)]
    gate_network, gate_mc, gate_constant = float(np.mean(net_mse)), float(np.mean(mc_mse)), float(np.mean(const_mse))
    return AmortizationResult(
        net=ensemble, target_scale=scale, values=values, network_values=network_values, monte_carlo=mc,
        combine_weight=lam, network_error=network_error, history=history,
        best_epoch=int(np.argmin(mean_curve[:, 1])), fold_epochs=[int(e) for e in epochs], fold_lrs=rates,
        gate_mse_network=gate_network, gate_mse_monte_carlo=gate_mc, gate_mse_constant=gate_constant,
        gate_passed=bool(gate_network < gate_mc and beats_constant),
        error=error_estimate.estimate_error(count, mc, variance, lam, network_error, network_se, spread_se),
        n_samples=int(s.point.size), n_folds=s.n_folds, seconds=time.perf_counter() - started, control=control,
    )


def _shrunk_variance(count: np.ndarray, sum_sq_dev: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each point's per-sample variance, shrunk halfway to the pooled within-point one.

    With m = 2..10 samples a single point's variance is itself very noisy; points with
    fewer than two samples get the pooled one (the variance of all samples if no point
    has two).
    """
    several = count >= 2
    var = np.divide(sum_sq_dev, count - 1, out=np.zeros(count.shape), where=several)
    pooled = float(var[several].mean()) if several.any() else float(np.var(values))
    return np.where(several, 0.5 * var + 0.5 * pooled, pooled)
