"""Gradient-boosted trees as the utility's learner: one native ``xgb.train`` per subset.

Trees cannot share a batched tensor program, so each subset is its own fit; the cost is
kept down with small, fixed settings and single-threaded fits (parallelism comes from
running several workers, each fit with ``nthread=1``; under contention ``nthread=2``
is several times slower than one thread per fit).

Settings (fixed, documented because they define v): 50 rounds, ``max_depth=3``,
``eta=0.3``, ``tree_method="hist"``, ``seed`` from the utility. ``binary:logistic`` for
K = 2, ``multi:softprob`` with ``num_class=K`` for K > 2: the native API keeps the class
set fixed, so a subset missing a class still fits and predicts over 0..K-1 (the
scikit-learn wrapper refuses such a subset).

Each subset gets its own ``DMatrix`` (its own histogram cuts, exactly what XGBoost does
when trained on S alone), built from the selected rows of the shared arrays; the validation
``DMatrix`` is built once. Reusing the full set's cuts (``QuantileDMatrix(ref=)``) was
measured ~15% slower: small subsets then carry many empty bins.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from amortval.data.problem import Problem

ROUNDS = 50
PARAMS = {"tree_method": "hist", "max_depth": 3, "eta": 0.3, "nthread": 1, "verbosity": 0}


class XGBoostLearner:
    """One booster per mask row; validation accuracy of its predictions."""

    def __init__(self, problem: Problem, seed: int, *, rounds: int = ROUNDS, **params):
        self.n_classes = int(problem.n_classes)
        self.rounds = int(rounds)
        self.params = dict(PARAMS, seed=int(seed), **params)
        if self.n_classes == 2:
            self.params["objective"] = "binary:logistic"
        else:
            self.params.update(objective="multi:softprob", num_class=self.n_classes)
        self.x = np.ascontiguousarray(problem.x_train, dtype=np.float32)
        self.y = np.asarray(problem.y_train, dtype=np.float32)
        self.y_valid = np.asarray(problem.y_valid, dtype=np.int64)
        self.valid = xgb.DMatrix(
            np.ascontiguousarray(problem.x_valid, dtype=np.float32), nthread=1
        )

    def fit_score(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        out = np.empty(masks.shape[0], dtype=np.float64)
        for row, mask in enumerate(masks):
            out[row] = self._fit_one(mask)
        return out

    def _fit_one(self, mask: np.ndarray) -> float:
        train = xgb.DMatrix(self.x[mask], label=self.y[mask], nthread=1)
        booster = xgb.train(self.params, train, num_boost_round=self.rounds)
        prob = booster.predict(self.valid)
        pred = prob.argmax(axis=1) if prob.ndim == 2 else (prob > 0.5).astype(np.int64)
        return float(np.mean(pred == self.y_valid))
