"""Typed configuration of a valuation run, given once at the flow boundary.

The config is written with the run (DuckDB ``runs`` row, MLflow params) and, together
with the data fingerprint, determines the run id: the same data, options and seed name
the same run, which is how a re-run resumes instead of starting over. Options that do
not change results (worker count, store path) are deliberately *not* part of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from amortval.errors import ConfigError
from amortval.models.utility import LEARNER_NAMES

LEARNERS = LEARNER_NAMES
METHODS = ("shapley", "beta", "banzhaf")
SAMPLERS = ("permutation", "independent", "msr")
# Where batches run (flows/runners.py); not part of the config: results do not depend on it.
RUNNERS = ("threads", "dask")

# Shapley: one permutation chain gives every point a sample for one fit each.
# Beta: permutation samples would need importance weights up to ~n*p(0) (variance ~8x
# for Beta(16,1)); drawing the cardinality from the Beta prior directly is cheaper overall.
# Banzhaf: maximum sample reuse (Wang & Jia 2023) gives every point a sample per fit.
DEFAULT_SAMPLER = {"shapley": "permutation", "beta": "independent", "banzhaf": "msr"}
COMPATIBLE = {
    "permutation": ("shapley", "beta"),
    "independent": METHODS,
    "msr": ("banzhaf",),
}


@dataclass(frozen=True)
class AmortizationConfig:
    """Valuation network and its training (Covert et al. 2024 settings by default)."""

    hidden: int = 128
    layers: int = 3
    pretrain_epochs: int = 20
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    # Cross-fitted networks: each holds out one fold of the draws to choose its epoch
    # and the reported network is their mean (tasks/amortize.py).
    folds: int = 5

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"amortization.{name} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_epochs < 0:
            raise ConfigError(f"amortization.pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        if self.folds < 2:
            raise ConfigError(f"amortization.folds must be >= 2, got {self.folds}")
        if self.lr <= 0:
            raise ConfigError(f"amortization.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ValuationConfig:
    """What is estimated (semivalue, utility learner) and how (sampler, sample count).

    ``samples`` is the number of Monte Carlo samples *per point*; for the permutation and
    MSR samplers each draw (a permutation, a shared subset) gives every point one sample.
    """

    learner: str = "logreg"
    method: str = "shapley"
    sampler: str | None = None
    samples: int = 50
    seed: int = 0
    alpha: float = 16.0
    beta: float = 1.0
    # Model fits per Prefect task: large enough that task overhead (~3 ms thread pool,
    # ~100 ms process pool) is noise, small enough that progress and resume are fine-grained.
    batch_fits: int = 2000
    # k of the KNN utility (Jia et al.); part of the run's identity only for learner "knn".
    knn_k: int = 5
    amortization: AmortizationConfig = field(default_factory=AmortizationConfig)

    def __post_init__(self) -> None:
        if self.learner not in LEARNERS:
            raise ConfigError(f"unknown learner {self.learner!r}; choose one of {', '.join(LEARNERS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        sampler = self.sampler or DEFAULT_SAMPLER[self.method]
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.method not in COMPATIBLE[sampler]:
            raise ConfigError(
                f"sampler {sampler!r} cannot estimate method {self.method!r}; "
                f"it supports {', '.join(COMPATIBLE[sampler])}"
            )
        object.__setattr__(self, "sampler", sampler)
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1 per point, got {self.samples}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if self.method == "beta" and (self.alpha <= 0 or self.beta <= 0):
            raise ConfigError(f"Beta Shapley needs alpha > 0 and beta > 0, got ({self.alpha}, {self.beta})")
        if self.batch_fits < 1:
            raise ConfigError(f"batch_fits must be >= 1, got {self.batch_fits}")
        if self.knn_k < 1:
            raise ConfigError(f"--knn-k must be >= 1, got {self.knn_k}")

    def to_dict(self) -> dict:
        """The run's options; ``knn_k`` only when it changes results (the KNN learner)."""
        raw = dataclasses.asdict(self)
        if self.learner != "knn":
            del raw["knn_k"]
        return raw

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict) -> "ValuationConfig":
        raw = dict(raw)
        raw["amortization"] = AmortizationConfig(**raw.get("amortization", {}))
        return cls(**raw)

    def run_id(self, data_fingerprint: str) -> str:
        """Same data + same results-relevant options + same seed -> same run (resume)."""
        digest = hashlib.sha256(f"{data_fingerprint}|{self.to_json()}".encode()).hexdigest()
        return f"{self.method}-{self.learner}-{digest[:12]}"
