"""Semivalues as distributions over coalition sizes.

Every semivalue here has the form phi_i = sum_k p(k) * E_{|S|=k, S ⊆ D\\{i}}[v(S ∪ {i}) - v(S)]:
draw a size k from p, a coalition uniformly among those of that size, and the marginal
contribution is an unbiased sample of phi_i. ``p`` is what distinguishes them:

- Data Shapley: k uniform on {0..n-1}.
- Beta Shapley(alpha, beta) (Kwon & Zou 2022): k ~ BetaBinomial(n-1, beta, alpha), i.e. an
  inclusion probability q ~ Beta(beta, alpha) then k ~ Binomial(n-1, q); Beta(16, 1)
  puts its mass on small coalitions, Beta(1, 1) is Shapley.
- Data Banzhaf (Wang & Jia 2023): every other point joins with probability 1/2,
  k ~ Binomial(n-1, 1/2).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import gammaln


def size_distribution(method: str, n_others: int, *, alpha: float = 16.0, beta: float = 1.0) -> np.ndarray:
    """p(k) for k = 0..n_others (float64, sums to 1)."""
    k = np.arange(n_others + 1)
    if method == "shapley":
        p = np.full(n_others + 1, 1.0 / (n_others + 1))
    elif method == "beta":
        p = stats.betabinom.pmf(k, n_others, beta, alpha)
    elif method == "banzhaf":
        p = stats.binom.pmf(k, n_others, 0.5)
    else:
        raise ValueError(f"unknown semivalue {method!r}")
    return p / p.sum()


def subset_coefficients(p: np.ndarray) -> np.ndarray:
    """Weight of one coalition of size k: p(k) / C(n-1, k) (for exact enumeration)."""
    n_others = len(p) - 1
    k = np.arange(n_others + 1)
    log_binom = gammaln(n_others + 1) - gammaln(k + 1) - gammaln(n_others - k + 1)
    return p * np.exp(-log_binom)


def permutation_weights(p: np.ndarray) -> np.ndarray:
    """Importance weights turning permutation samples (k uniform) into samples of ``p``.

    A permutation gives point i a coalition of size k with probability 1/n, so
    E[n p(k) * delta] = sum_k p(k) E[delta | k] = phi_i.
    """
    return len(p) * p
