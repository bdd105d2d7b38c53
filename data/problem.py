"""The numeric valuation problem: encoded train/validation arrays shared by all workers.

Workers receive a path to this file, not arrays (Prefect tasks get small specs), and
load it once per process. The fingerprint names the data in the store and in the run id.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amortval.errors import storage_errors


@dataclass(frozen=True, eq=False)
class Problem:
    """Encoded features (float32, standardized / one-hot) and class indices 0..K-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    n_classes: int

    @property
    def n(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @functools.cached_property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_valid, self.y_valid):
            a = np.ascontiguousarray(arr)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        h.update(str(self.n_classes).encode())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        # A temporary name of this process's own: two runs started together write the same
        # problem (same content) and each replaces the file atomically with its own copy.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        with storage_errors(path):  # a full disk: one line naming the file, no temp file left
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                np.savez(
                    tmp,
                    x_train=self.x_train,
                    y_train=self.y_train,
                    x_valid=self.x_valid,
                    y_valid=self.y_valid,
                    n_classes=np.int64(self.n_classes),
                )
                tmp.replace(path)  # atomic: a killed run never leaves a torn problem file
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return path


@functools.lru_cache(maxsize=8)
def load_problem(path: str) -> Problem:
    """Load once per process (workers call this for every batch)."""
    with np.load(path) as z:
        return Problem(
            x_train=z["x_train"],
            y_train=z["y_train"],
            x_valid=z["x_valid"],
            y_valid=z["y_valid"],
            n_classes=int(z["n_classes"]),
        )
