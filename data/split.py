"""The seeded stratified split that carves validation rows out of --data when no
--valid file is given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amortval.errors import ConfigError

# Independent stream for the split, so it never correlates with sampling draws that
# reuse the same run seed.
_SPLIT_STREAM = 0x5B1


def stratified_split(labels: Sequence, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> (train_idx, valid_idx), both sorted int64.

    Each class with >= 2 rows sends ``round(valid_fraction * n_c)`` rows (clamped to
    1..n_c-1) to validation, so every such class appears in both parts; a class with
    a single row stays in training. The total can therefore differ slightly from
    ``valid_fraction * n``. Deterministic in ``seed``.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM]))
    classes = sorted(set(labels))
    index = {v: i for i, v in enumerate(classes)}
    codes = np.array([index[v] for v in labels], dtype=np.int64)
    valid_parts = []
    for code in range(len(classes)):
        members = np.flatnonzero(codes == code)
        if members.size < 2:
            continue
        take = min(max(round(valid_fraction * members.size), 1), members.size - 1)
        valid_parts.append(rng.permutation(members)[:take])
    valid_idx = np.sort(np.concatenate(valid_parts)) if valid_parts else np.empty(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(codes)), valid_idx)
    return train_idx.astype(np.int64), valid_idx.astype(np.int64)
