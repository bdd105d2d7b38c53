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
- Distributional Shapley (Ghorbani, Kim & Zou 2020), pool-based: k uniform on
  {min_size..max_size-1}, clipped to {0..n-1} (``size_range``). Small coalitions whatever
  n: a fit costs O(max_size) rows, which is what makes very large pools tractable.
"""

from __future__ import annotations

import numpy as np

# scipy (~0.6 s to import) is loaded by the functions that need it: planning or re-reporting
# a Shapley run, the default, never does.


def size_range(n_others: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Distributional Shapley's sizes [lo, hi] (inclusive) on a pool of n_others + 1 points.

    Sizes are min_size..max_size-1 clipped to what the pool allows (0..n_others): a
    ``max_size`` past the pool is Data Shapley from min_size up, and a ``min_size`` past
    it leaves the single size n_others. Every sampler of the method uses this one rule.
    """
    if max_size < 1 or min_size < 0:
        raise ValueError(f"need 0 <= min_size < max_size, got {min_size}, {max_size}")
    hi = min(int(max_size) - 1, int(n_others))
    return min(int(min_size), hi), hi


def size_distribution(method: str, n_others: int, *, alpha: float = 16.0, beta: float = 1.0,
                      min_size: int = 0, max_size: int | None = None) -> np.ndarray:
    """p(k) for k = 0..n_others (float64, sums to 1).

    ``max_size`` has no default for "distributional": it defines the method (the config
    holds its default), so a caller that forgets it fails instead of getting Shapley.
    """
    k = np.arange(n_others + 1)
    if method == "shapley":
        p = np.full(n_others + 1, 1.0 / (n_others + 1))
    elif method == "beta":
        from scipy import stats

        p = stats.betabinom.pmf(k, n_others, beta, alpha)
    elif method == "banzhaf":
        from scipy import stats

        p = stats.binom.pmf(k, n_others, 0.5)
    elif method == "distributional":
        if max_size is None:
            raise ValueError("the distributional semivalue needs max_size")
        lo, hi = size_range(n_others, min_size, max_size)
        p = ((k >= lo) & (k <= hi)).astype(np.float64)
    else:
        raise ValueError(f"unknown semivalue {method!r}")
    return p / p.sum()


def subset_coefficients(p: np.ndarray) -> np.ndarray:
    """Weight of one coalition of size k: p(k) / C(n-1, k) (for exact enumeration)."""
    from scipy.special import gammaln

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
