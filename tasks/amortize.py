"""Stochastic amortization: fit the valuation network to noisy Monte Carlo samples.

Each training point i has noisy, unbiased samples of its value phi_i (``value`` =
weight * delta, numbered by ``draw``). Draws ``>= heldout_from_draw`` are held out: a
share of *every* point's samples, so the held-out error reveals a network memorizing a
point's own noise. The recipe follows Covert et al. (2024):

1. pretrain the network as a classifier on (x, y) (cross-entropy), so the trunk
   already separates the points the way the utility's learner sees them;
2. zero the last layer;
3. regress the training samples with MSE (Adam, cosine-decayed learning rate);
4. after every epoch -- and at epoch 0, the zero head -- measure the MSE against the
   held-out samples and keep the best epoch.

For held-out h independent of an estimate with E[h] = phi,
E[(est - h)^2] = E[(est - phi)^2] + Var(h), so comparing the kept network and the plain
per-point Monte Carlo means on the same held-out samples compares their *true* errors:
that is the quality gate (``gate_passed``).

Training rows are points, not samples: sum_j (f - t_j)^2 = m (f - mean)^2 + const, so
regressing each point's mean of its training samples, weighted by its sample count,
has the loss (and optimum) of regressing every sample, at a fraction of the cost. Targets
are divided by ``target_scale`` (the std of the training sample values) so the
regression works on O(1) numbers whatever the utility's units; predictions are
multiplied back. Points without training samples get weight 0 in the regression and
value 0 as their Monte Carlo estimate (the semivalue of a point nobody sampled is
unknown; 0 is the "no evidence" prior the zero head starts from).

All randomness (initialization, shuffling) comes from ``seed`` through
``torch.Generator``: the same inputs and seed give bit-identical values on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl
import torch
from torch import nn

from amortval.models.valuation_net import ValuationNet
from amortval.tasks.config import AmortizationConfig


@dataclass
class AmortizationResult:
    net: ValuationNet
    target_scale: float
    values: np.ndarray
    history: list[dict]
    best_epoch: int
    gate_mse_network: float
    gate_mse_monte_carlo: float
    gate_passed: bool
    n_train_samples: int
    n_heldout_samples: int
    seconds: float


@dataclass(frozen=True)
class _SplitSamples:
    """Per-point sufficient statistics of the training draws, and the held-out draws."""

    count: np.ndarray        # float64 (n,) training samples per point
    mean: np.ndarray         # float64 (n,) mean of training samples (0 where count == 0)
    sum_sq_dev: np.ndarray   # float64 (n,) sum_j (t_j - mean)^2 per point
    held_point: np.ndarray   # int64 (H,)
    held_value: np.ndarray   # float64 (H,)
    scale: float


def _split(samples: pl.DataFrame, n: int, heldout_from_draw: int) -> _SplitSamples:
    missing = [c for c in ("point", "draw", "value") if c not in samples.columns]
    if missing:
        raise ValueError(f"samples frame lacks column(s) {missing}; has {samples.columns}")
    point = samples["point"].to_numpy().astype(np.int64, copy=False)
    draw = samples["draw"].to_numpy().astype(np.int64, copy=False)
    value = samples["value"].to_numpy().astype(np.float64, copy=False)
    if point.size and (point.min() < 0 or point.max() >= n):
        raise ValueError(f"samples 'point' must lie in [0, {n}), got [{point.min()}, {point.max()}]")
    if not np.all(np.isfinite(value)):
        bad = int(np.flatnonzero(~np.isfinite(value))[0])
        raise ValueError(f"samples 'value' has non-finite entries (first at row {bad})")
    train = draw < heldout_from_draw
    if not train.any():
        raise ValueError(f"no training samples: every draw is >= heldout_from_draw={heldout_from_draw}")
    if train.all():
        raise ValueError(f"no held-out samples: every draw is < heldout_from_draw={heldout_from_draw}")
    tp, tv = point[train], value[train]
    count = np.bincount(tp, minlength=n).astype(np.float64)
    total = np.bincount(tp, weights=tv, minlength=n)
    mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
    sum_sq_dev = np.bincount(tp, weights=(tv - mean[tp]) ** 2, minlength=n)
    scale = float(np.std(tv))
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    return _SplitSamples(count, mean, sum_sq_dev, point[~train], value[~train], scale)


def _heldout_mse(pred: np.ndarray, s: _SplitSamples) -> float:
    """Mean over held-out samples h of (pred[point] - h)^2, in original units."""
    return float(np.mean((pred[s.held_point] - s.held_value) ** 2))


def _train_mse(pred: np.ndarray, s: _SplitSamples) -> float:
    """Exact mean over training samples t of (pred[point] - t)^2 (comparable to held-out)."""
    total = np.sum(s.count * (pred - s.mean) ** 2 + s.sum_sq_dev)
    return float(total / s.count.sum())


@torch.no_grad()
def _predict(net: ValuationNet, x: torch.Tensor, y: torch.Tensor, scale: float) -> np.ndarray:
    net.eval()
    out = net.value(x, y).double().numpy() * scale
    net.train()
    return out


def _pretrain(net: ValuationNet, x: torch.Tensor, y: torch.Tensor, config: AmortizationConfig,
              generator: torch.Generator) -> None:
    """Classifier pretraining (cross-entropy on the point's own label)."""
    if config.pretrain_epochs == 0:
        return
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for _ in range(config.pretrain_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()


def amortize(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    samples: pl.DataFrame,
    *,
    heldout_from_draw: int,
    config: AmortizationConfig,
    seed: int,
    progress: Callable[[dict], None] | None = None,
) -> AmortizationResult:
    """Train the valuation network on the draws ``< heldout_from_draw``; gate on the rest.

    ``x`` (n, d) encoded features, ``y`` (n,) class indices, ``samples`` with columns
    point, draw, value. Returns the network at its best held-out epoch, its values for
    every point (float64, original units) and the quality gate. ``progress`` is called
    once per regression epoch (epoch 0 included) with that epoch's history entry.
    """
    started = time.perf_counter()
    n = int(x.shape[0])
    s = _split(samples, n, heldout_from_draw)
    generator = torch.Generator().manual_seed(int(seed))
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64))
    net = ValuationNet(xt.shape[1], n_classes, config.hidden, config.layers, generator=generator)
    net.train()
    _pretrain(net, xt, yt, config, generator)
    net.zero_head()

    rows = torch.as_tensor(np.flatnonzero(s.count > 0))
    target = torch.as_tensor(s.mean / s.scale, dtype=torch.float32)
    # Count weights normalized by their mean over trained points: each batch's loss is an
    # unbiased estimate of the per-sample objective, and equals plain MSE when counts match.
    weight = torch.as_tensor(s.count / s.count[s.count > 0].mean(), dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(rows.numel() / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    min_lr = config.lr * 0.01

    history: list[dict] = []
    best = (math.inf, 0, None, None)  # (heldout_mse, epoch, state, predictions)

    def record(epoch: int) -> None:
        nonlocal best
        pred = _predict(net, xt, yt, s.scale)
        entry = {"epoch": epoch, "train_mse": _train_mse(pred, s), "heldout_mse": _heldout_mse(pred, s)}
        history.append(entry)
        if entry["heldout_mse"] < best[0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (entry["heldout_mse"], epoch, state, pred)
        if progress is not None:
            progress(dict(entry))

    record(0)
    step = 0
    for epoch in range(1, config.epochs + 1):
        order = rows[torch.randperm(rows.numel(), generator=generator)]
        for start in range(0, order.numel(), config.batch_size):
            idx = order[start:start + config.batch_size]
            lr = min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            err = net.value(xt[idx], yt[idx]) - target[idx]
            (weight[idx] * err.square()).mean().backward()
            optimizer.step()
            step += 1
        record(epoch)

    mse_net, best_epoch, state, values = best
    net.load_state_dict(state)
    net.eval()
    mse_mc = _heldout_mse(s.mean, s)
    return AmortizationResult(
        net=net,
        target_scale=s.scale,
        values=np.asarray(values, dtype=np.float64),
        history=history,
        best_epoch=int(best_epoch),
        gate_mse_network=float(mse_net),
        gate_mse_monte_carlo=mse_mc,
        gate_passed=bool(mse_net < mse_mc),
        n_train_samples=int(s.count.sum()),
        n_heldout_samples=int(s.held_point.size),
        seconds=time.perf_counter() - started,
    )
