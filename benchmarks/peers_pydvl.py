"""pyDVL 0.10 on the benchmark's game: amortval's utility as a scikit-learn estimator, and a
stopping criterion that records the values after every permutation and never stops them
(only a wall-time cap does).

**Matched utility.** pyDVL fits one scikit-learn estimator per subset and scores it on the
test set. ``AmortvalLogisticRegression`` makes that fit amortval's own: pyDVL is given the
training-row *indices* as the only feature column, and ``fit`` evaluates amortval's
``Utility`` (``models/utility.py``: the batched torch logistic regression of
``models/torch_learners.py``, the same objective, steps and degenerate-subset policy) on
that subset; ``score`` returns its validation accuracy. So every v(S) pyDVL sees is
bit-identical to the v(S) amortval and its truth use. pyDVL never fits the empty subset:
it scores it with the scorer's ``default``, set to amortval's empty-subset fallback (the
accuracy of always predicting the full training set's majority class).

**Stock pyDVL** is what users run today: ``LogisticRegression()`` on the encoded features,
accuracy, ``default=0`` for the empty subset and for every fit that fails (one-class
subsets), which values a shifted game.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from joblib import parallel_config
from pydvl.utils.status import Status
from pydvl.valuation import Dataset, ModelUtility, ShapleyValuation, SupervisedScorer, TMCShapleyValuation
from pydvl.valuation.samplers import PermutationSampler
from pydvl.valuation.stopping import StoppingCriterion
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from amortval.data.problem import Problem
from amortval.models.utility import Utility, make_utility

N_JOBS = 2


class AmortvalLogisticRegression(ClassifierMixin, BaseEstimator):
    """amortval's logistic-regression utility as an estimator over training-row indices.

    ``fit(X, y)``: X[:, 0] are the rows of the subset (y is ignored: the utility holds the
    labels); ``score(X, y)``: the subset's validation accuracy (the utility holds the
    validation set, so X, y are ignored).
    """

    def __init__(self, utility: Utility | None = None):
        self.utility = utility

    def fit(self, X, y):
        mask = np.zeros((1, self.utility.n), dtype=bool)
        mask[0, np.asarray(X[:, 0], dtype=np.int64)] = True
        values, _ = self.utility.evaluate(mask)
        self.accuracy_ = float(values[0])
        return self

    def score(self, X, y, sample_weight=None) -> float:
        return self.accuracy_


class Recorder(StoppingCriterion):
    """After every permutation: seconds since ``fit`` began and a copy of the values of every
    point. Pending until ``cap`` seconds have passed (then Converged: the run's wall cap)."""

    def __init__(self, n: int, cap: float):
        super().__init__(modify_result=True)
        self.n, self.cap = n, cap
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.snapshots: list[np.ndarray] = []
        self.updates: list[int] = []

    def reset(self):
        self.start = time.perf_counter()
        self.times, self.snapshots, self.updates = [], [], []
        return super().reset()

    def _check(self, result) -> Status:
        values = np.zeros(self.n)
        values[np.asarray(result.indices, dtype=np.int64)] = result.values
        self.times.append(time.perf_counter() - self.start)
        self.snapshots.append(values)
        self.updates.append(int(np.asarray(result.counts).sum()))
        if self.times[-1] > self.cap:
            self._converged.fill(True)
            return Status.Converged
        return Status.Pending


@dataclass
class PydvlRun:
    tool: str
    times: list[float]
    snapshots: list[np.ndarray]
    updates: list[int]
    settings: dict = field(default_factory=dict)


def _run(valuation_factory, train: Dataset, n: int, cap: float, tool: str, settings: dict) -> PydvlRun:
    recorder = Recorder(n, cap)
    valuation = valuation_factory(recorder)
    with warnings.catch_warnings(), parallel_config(backend="loky", n_jobs=N_JOBS):
        warnings.simplefilter("ignore")
        valuation.fit(train)
    return PydvlRun(tool, recorder.times, recorder.snapshots, recorder.updates,
                    {**settings, "n_jobs": N_JOBS, "cap_s": cap, "permutations": len(recorder.times)})


def matched_runs(problem: Problem, cap: float, seed: int) -> list[PydvlRun]:
    """TMC-Shapley (pyDVL's default truncation) and permutation Shapley without truncation,
    both on amortval's utility."""
    utility = make_utility("logreg", problem, seed)
    n = problem.n
    indices = np.arange(n, dtype=np.float64)[:, None]
    train = Dataset(indices, problem.y_train)
    test = Dataset(np.arange(len(problem.y_valid), dtype=np.float64)[:, None], problem.y_valid)
    empty = float(utility.constant_accuracy[utility.majority_class])
    scorer = SupervisedScorer(lambda model, x, y: model.score(x, y), test, default=empty, range=(0.0, 1.0),
                              name="amortval validation accuracy")
    # No clone per fit (sklearn's clone would deep-copy the utility's tensors every time) and
    # no caught errors: a failing fit of the matched utility is a bug, not a score.
    model_utility = ModelUtility(AmortvalLogisticRegression(utility), scorer, catch_errors=False,
                                 clone_before_fit=False)
    settings = {"utility": "amortval logreg (matched)", "empty_subset_score": empty}
    return [
        _run(lambda done: TMCShapleyValuation(model_utility, is_done=done, seed=seed, show_warnings=False),
             train, n, cap, "pydvl-tmc", {**settings, "method": "TMCShapleyValuation, default RelativeTruncation"}),
        _run(lambda done: ShapleyValuation(model_utility, PermutationSampler(seed=seed), is_done=done,
                                           show_warnings=False),
             train, n, cap, "pydvl-permutation", {**settings, "method": "ShapleyValuation, PermutationSampler, no truncation"}),
    ]


def stock_run(problem: Problem, cap: float, seed: int) -> PydvlRun:
    """TMC-Shapley with scikit-learn's LogisticRegression() and accuracy, default score 0."""
    train = Dataset(problem.x_train, problem.y_train)
    test = Dataset(problem.x_valid, problem.y_valid)
    model_utility = ModelUtility(LogisticRegression(), SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0)))
    return _run(lambda done: TMCShapleyValuation(model_utility, is_done=done, seed=seed, show_warnings=False),
                train, problem.n, cap, "pydvl-stock-tmc",
                {"utility": "sklearn LogisticRegression(), accuracy, default 0",
                 "method": "TMCShapleyValuation, default RelativeTruncation"})
