"""The utility v(S): validation accuracy of a learner retrained on the subset S.

Every semivalue is a weighted average of marginal contributions v(S ∪ {i}) - v(S), so
v must be defined for *every* subset, including those no classifier can be trained on.
Those are policy, not errors (the policy defines what is estimated):

- ``empty``: S = {} scores the best prediction available without data, always
  predicting the majority class of the FULL training set (ties: smallest class index);
- ``one_class``: S holds one class c: always predict c (the only sensible model);
- ``missing_classes``: 2 <= classes in S < K: fit normally over the fixed class set
  0..K-1 (the model simply never learns the missing class);
- ``ok``: every class present, normal fit.

Never a flat 0: a flat 0 for degenerate subsets adds a spurious gain v(S)-0 to every
point that makes S fit-able, which shifts every value (pyDVL's default does this).
Only non-degenerate rows reach the learner. Constant predictions are scored on the same
validation set as fitted models, so all values are on one scale.

A learner whose own utility is defined on every subset (``defined_on_every_subset``, the
KNN utility of Jia et al.) scores every subset itself: the status is still recorded and
counted, but no fallback replaces its value.

v(S) is a deterministic function of S for a given seed (fixed initialization, fixed
steps, fixed seeds), so callers may cache or enumerate values exactly.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from amortval.data.problem import Problem
from amortval.errors import ConfigError

STATUS_NAMES = ("ok", "empty", "one_class", "missing_classes")
OK, EMPTY, ONE_CLASS, MISSING_CLASSES = range(4)
LEARNER_NAMES = ("logreg", "mlp", "xgboost", "knn")

# Masks built at once, here and by the samplers (rows x n booleans): ~16 MB per chunk.
MASK_BUDGET = 1 << 24


class Learner(Protocol):
    def fit_score(self, masks: np.ndarray) -> np.ndarray:
        """masks bool (B, n), each row with >= 2 classes -> validation accuracy float64 (B,).

        A learner may also set ``defined_on_every_subset = True`` (then it receives every
        row, degenerate ones included) and offer ``prefix_scores(perm)``, the values of
        the n+1 prefixes of a permutation chain, when it can do that faster than masks.
        """
        ...


class Utility:
    """v(S) = validation accuracy of the learner trained on S, with the degenerate policy."""

    def __init__(self, learner: Learner, problem: Problem, name: str = "custom"):
        self.learner = learner
        self.name = name
        self.n = problem.n
        self.n_classes = int(problem.n_classes)
        y = np.asarray(problem.y_train, dtype=np.int64)
        self._onehot = np.eye(self.n_classes, dtype=np.float32)[y]  # (n, K)
        full_counts = np.bincount(y, minlength=self.n_classes)
        self.majority_class = int(np.argmax(full_counts))  # argmax: first of ties
        y_valid = np.asarray(problem.y_valid, dtype=np.int64)
        # Accuracy of always predicting class c, for every c.
        self.constant_accuracy = np.array(
            [np.mean(y_valid == c) for c in range(self.n_classes)], dtype=np.float64
        )
        self._full_value: float | None = None

    def class_counts(self, masks: np.ndarray) -> np.ndarray:
        """(B, K) number of points of each class in each subset (exact below 2^24)."""
        return np.rint(masks.astype(np.float32) @ self._onehot).astype(np.int64)

    def evaluate(self, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """masks bool (B, n) -> (values float64 (B,), status int8 (B,)); any B >= 0."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != self.n:
            raise ValueError(f"masks must have shape (B, {self.n}), got {masks.shape}")
        values = np.empty(masks.shape[0], dtype=np.float64)
        status = np.full(masks.shape[0], OK, dtype=np.int8)
        if masks.shape[0] == 0:
            return values, status
        counts = self.class_counts(masks)
        present = np.count_nonzero(counts, axis=1)

        empty = present == 0
        status[empty] = EMPTY
        values[empty] = self.constant_accuracy[self.majority_class]

        single = present == 1
        status[single] = ONE_CLASS
        values[single] = self.constant_accuracy[np.argmax(counts[single], axis=1)]

        status[(present >= 2) & (present < self.n_classes)] = MISSING_CLASSES
        if getattr(self.learner, "defined_on_every_subset", False):
            values[:] = self.learner.fit_score(masks)
            return values, status
        fit = present >= 2
        if fit.any():
            values[fit] = self.learner.fit_score(masks[fit])
        return values, status

    def evaluate_prefixes(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """v and status of the n+1 prefixes perm[:0], perm[:1], ..., perm[:n] of a chain."""
        perm = np.asarray(perm, dtype=np.int64)
        if perm.shape != (self.n,):
            raise ValueError(f"perm must have shape ({self.n},), got {perm.shape}")
        prefix_scores = getattr(self.learner, "prefix_scores", None)
        if prefix_scores is not None and getattr(self.learner, "defined_on_every_subset", False):
            counts = np.zeros((self.n + 1, self.n_classes), dtype=np.int64)
            np.cumsum(self._onehot[perm].astype(np.int64), axis=0, out=counts[1:])
            present = np.count_nonzero(counts, axis=1)
            status = np.select([present == 0, present == 1, present < self.n_classes],
                               [EMPTY, ONE_CLASS, MISSING_CLASSES], OK).astype(np.int8)
            return np.asarray(prefix_scores(perm), dtype=np.float64), status
        return prefix_values_by_masks(self.evaluate, perm)

    def full_value(self) -> float:
        """v(D), the accuracy of the learner trained on every point (computed once)."""
        if self._full_value is None:
            values, _ = self.evaluate(np.ones((1, self.n), dtype=bool))
            self._full_value = float(values[0])
        return self._full_value


def prefix_values_by_masks(evaluate, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate`` (masks -> values, status) on the n+1 prefixes of ``perm``, in chunks."""
    n = len(perm)
    position = np.empty(n, dtype=np.int64)
    position[perm] = np.arange(n)
    lengths = np.arange(n + 1)
    step = max(1, MASK_BUDGET // max(n, 1))
    parts = [evaluate(position[None, :] < lengths[start:start + step, None]) for start in range(0, n + 1, step)]
    return np.concatenate([v for v, _ in parts]), np.concatenate([s for _, s in parts])


def make_utility(learner: str, problem: Problem, seed: int, *, knn_k: int = 5) -> Utility:
    """The utility for a learner name in ``LEARNER_NAMES``.

    ``seed`` fixes the MLP's shared initialization and XGBoost's seed; the logistic
    regression starts from zeros and does not use it. ``knn_k`` is the KNN utility's k.
    """
    # Imported here: a process using one learner never pays for importing the other.
    if learner == "logreg":
        from amortval.models.torch_learners import BatchedLogisticRegression

        model: Learner = BatchedLogisticRegression(problem)
    elif learner == "mlp":
        from amortval.models.torch_learners import BatchedMLP

        model = BatchedMLP(problem, seed)
    elif learner == "xgboost":
        from amortval.models.xgboost_learner import XGBoostLearner

        model = XGBoostLearner(problem, seed)
    elif learner == "knn":
        from amortval.models.knn_learner import KNNLearner

        model = KNNLearner(problem, knn_k)
    else:
        raise ConfigError(f"learner must be one of {', '.join(LEARNER_NAMES)}, got {learner!r}")
    return Utility(model, problem, name=learner)
