"""Exact semivalues by enumerating every coalition (ground truth for small n).

All 2^n coalitions are evaluated once (a utility's batched evaluate makes that cheap for
n <= ~14), then phi_i = sum over S ⊆ D\\{i} of p(|S|)/C(n-1,|S|) (v(S ∪ {i}) - v(S)).
"""

from __future__ import annotations

import numpy as np

from amortval.models.utility import Utility
from amortval.tasks.semivalues import size_distribution, subset_coefficients

MAX_ENUMERATION_POINTS = 16


def all_coalition_values(utility: Utility) -> np.ndarray:
    """v(S) for every S, indexed by the bitmask of S (bit i set <=> point i in S)."""
    n = utility.n
    if n > MAX_ENUMERATION_POINTS:
        raise ValueError(f"exact enumeration needs n <= {MAX_ENUMERATION_POINTS}, got n = {n}")
    codes = np.arange(1 << n)
    masks = (codes[:, None] >> np.arange(n)[None, :]) & 1
    values, _ = utility.evaluate(masks.astype(bool))
    return values


def exact_semivalues(utility: Utility, method: str, **size_params) -> np.ndarray:
    """phi of every point; ``size_params`` as ``size_distribution`` takes them (alpha, beta,
    min_size, max_size)."""
    n = utility.n
    values = all_coalition_values(utility)
    coef = subset_coefficients(size_distribution(method, n - 1, **size_params))
    codes = np.arange(1 << n)
    sizes = np.array([bin(c).count("1") for c in codes])
    phi = np.empty(n)
    for i in range(n):
        without = codes[(codes >> i) & 1 == 0]
        phi[i] = np.sum(coef[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return phi
