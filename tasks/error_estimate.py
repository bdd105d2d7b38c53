"""How far the reported values are from the true ones, estimated without any ground truth.

Two estimates from the samples alone (``tasks/amortize.py`` supplies them):

- the network's squared error e: held-out MSE of the cross-fitted networks minus the
  held-out samples' own variance (E[(est - h)^2] = E[(est - phi)^2] + Var(h));
- the variance of the true values: the spread of the per-point Monte Carlo means minus
  the part their noise explains (law of total variance,
  Var(mc_i) = Var(phi) + mean_i s_i^2 / m_i).

A sampled point's reported value mixes network and Monte Carlo mean with weight lambda
(``combine``), so its squared error is about (1 - lambda)^2 e + lambda^2 s_i^2 / m_i; a
point without samples has the network's e. The normalized error (nMSE) is the mean of
those over a set of points, divided by the variance of the true values: 0 is exact, 1 is
no better than giving every point the mean value. It is what ``--target-error`` sets.

The held-out comparison is noisy when each sample's noise dwarfs the spread of the true
values (KNN-Shapley on adult: per-sample variance ~30x the values' variance), so the
estimate comes with its standard error (the held-out comparison's and the true values'
variance's, ``true_variance_se``), and a target counts
as met when the estimate *plus one standard error* is at most the target: small budgets
whose estimate is uncertain do not stop on a lucky draw.

e comes from networks that each saw one fold fewer than the reported ensemble, so it
errs high (README, "Anytime valuation", measures it against exact values). For rows
without samples (``--points``) the network is extrapolating to points it never saw, and
the estimate, held out by draws of sampled points, errs low: both sets are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorEstimate:
    nmse: float  # all training rows
    nmse_se: float  # its standard error (the held-out comparison's): the stopping rule reads nmse + nmse_se
    nmse_sampled: float  # rows with Monte Carlo samples
    nmse_unsampled: float  # rows without (NaN when every row is sampled)
    mse: float  # all rows, value units squared
    true_variance: float  # estimated variance of the true values across points
    network_nmse: float  # the network's own (before combining with Monte Carlo)
    network_nmse_se: float  # its standard error from the held-out samples


def true_variance(count: np.ndarray, mc: np.ndarray, sample_variance: np.ndarray) -> float:
    """Variance of the true values across the sampled points: the Monte Carlo means'
    spread less what their noise explains (0 when noise explains all of it)."""
    sampled = count > 0
    if sampled.sum() < 2:
        return 0.0
    mc_var = sample_variance[sampled] / count[sampled]
    return max(0.0, float(np.var(mc[sampled]) - np.mean(mc_var)))


def true_variance_se(count: np.ndarray, mc: np.ndarray, sample_variance: np.ndarray) -> float:
    """Standard error of ``true_variance`` from the Monte Carlo noise.

    The variance is that of *these* points' true values, so only the noise e_i of each
    mean makes it uncertain. Point i's term (phi_i - mean + e_i)^2 - v_i_hat varies by
    about 4 (phi_i - mean)^2 v_i + 2 v_i^2, with v_i = s^2 / m_i from the pooled per-sample
    variance s^2 and (phi_i - mean)^2 replaced by the variance estimate. The pooled s^2,
    not each point's own, and no kurtosis correction: with heavy-tailed samples (XGBoost's
    marginal contributions, mostly exactly 0) e_i^2 and the point's own variance estimate
    are large together and their difference varies about as a normal one would (checked
    by resampling in tests/test_stopping.py), while per-point variances and kurtosis
    estimated from 2-4 samples overstated it 2-4x. On electricity (2 samples per point)
    it is about the size of the variance itself.
    """
    sampled = count > 0
    if sampled.sum() < 2:
        return float("inf")
    m = count[sampled]
    v = float(np.mean(sample_variance[sampled])) / m
    variance = true_variance(count, mc, sample_variance)
    return float(np.sqrt(np.sum(4 * variance * v + 2 * v**2)) / m.size)


def network_error(variance: float, paired: np.ndarray) -> tuple[float, float]:
    """The network's squared error and the standard error of the held-out comparison, from
    ``paired``: per held-out sample h, (f - h)^2 - (c - h)^2 with c the fold's mean sample
    value. Var(h) cancels in each difference, so its mean D is E(f - phi)^2 - E(c - phi)^2,
    and E(c - phi)^2 is the true values' variance V (c is their mean): e = V + D. The
    standard error is D's; V's own (``true_variance_se``) adds to it in quadrature."""
    if paired.size == 0:
        return float("inf"), float("inf")
    se = float(np.std(paired) / np.sqrt(paired.size))
    return max(0.0, variance + float(np.mean(paired))), se


def estimate_error(count: np.ndarray, mc: np.ndarray, sample_variance: np.ndarray, lam: np.ndarray,
                   network_error: float, network_se: float = float("nan"),
                   variance_se: float = 0.0) -> ErrorEstimate:
    """``count``/``mc`` per point sample count and mean, ``sample_variance`` each point's
    per-sample variance (as the combination used it), ``lam`` the combination weights.

    With fewer than two sampled points, or a Monte Carlo spread that noise explains
    entirely, the true values' variance cannot be told from zero: the nMSE is infinite
    (no target is met), never a flattering number.

    Standard errors (delta method): with e = V + D, nMSE = (share e + L) / V where share is
    the mean (1 - lambda)^2 and L the mean lambda^2 s^2/m, so nMSE's error is
    share * se(D) / V from the held-out comparison (``network_se``) and
    |nMSE - share| * se(V) / V from the true values' variance (``variance_se``), in
    quadrature; the network's own e / V = 1 + D / V likewise.
    """
    sampled = count > 0
    mc_var = np.divide(sample_variance, count, out=np.zeros(count.shape), where=sampled)
    point_mse = np.where(sampled, (1 - lam) ** 2 * network_error + lam ** 2 * mc_var, network_error)
    variance = true_variance(count, mc, sample_variance)

    def normalized(mask: np.ndarray) -> float:
        if not mask.any():
            return float("nan")
        return float(np.mean(point_mse[mask]) / variance) if variance > 0 else float("inf")

    every = np.ones(count.shape, dtype=bool)
    # The network's share of each point's error carries the held-out comparison's uncertainty.
    share = float(np.mean(np.where(sampled, (1 - lam) ** 2, 1.0)))
    nmse = normalized(every)
    nmse_se = (float(np.hypot(share * network_se, (nmse - share) * variance_se)) / variance
               if variance > 0 else float("inf"))
    network_nmse = network_error / variance if variance > 0 else float("inf")
    return ErrorEstimate(nmse=nmse, nmse_se=nmse_se, nmse_sampled=normalized(sampled), nmse_unsampled=normalized(~sampled),
                         mse=float(np.mean(point_mse)), true_variance=variance,
                         network_nmse=network_nmse,
                         network_nmse_se=float(np.hypot(network_se, (network_nmse - 1) * variance_se)) / variance
                         if variance > 0 else float("inf"))
