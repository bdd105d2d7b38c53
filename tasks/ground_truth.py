"""Many-sample Monte Carlo ground truth for a fixed set of probe points.

Exact semivalues need 2^n fits; beyond n ~ 16 the reference is a Monte Carlo estimate
with so many samples that its own error is small next to the estimators it judges. It
uses the pipeline's own utility, samplers and row contract (value of a sample =
``weight * delta``, unit u drawn from ``unit_rng(seed, u)``), so it estimates exactly
the semivalue a run estimates, and it is stored once per id (``data/truth_store.py``).

Cost, in fits per sample of every probe (P probes, n points):

- ``permutation`` (Shapley): a chain costs n + 1 fits and samples all n points;
- ``independent``: 2 fits per sample, drawn only for the probes (``IndependentSampler`` with ``points``);
- ``shared``: one coalition per draw shared by the probes, each probe toggled in or out of
  it: P + 1 fits for a sample of every probe (``tasks/samplers/shared.py``);
- ``msr`` (Banzhaf): 1 fit per shared subset, sampling all points.

Every sampler but MSR gives each point a sample of the same distribution (size from the
semivalue, then a uniform coalition of that size), so the default for those methods is
``shared`` whenever there are fewer probes than points: (P + 1) / P fits a sample, against
2 for independent draws and (n + 1) / P for permutation chains or distributional blocks.
Banzhaf keeps MSR.

**Seed.** With the same seed and sampler as a run, the truth would replay that run's
own draws and share its errors: give the truth a seed no judged run uses. ``utility_seed`` is the run's seed (it fixes the MLP initialization and XGBoost),
so the truth values the same game.

**Halves.** Each probe also gets the means of its even and of its odd draws: two
independent estimates whose disagreement measures the truth's own error
(``halves_agreement``) without any reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import numpy as np
import polars as pl

from amortval.data.problem import Problem, load_problem
from amortval.data.store import ValuationStore
from amortval.data.truth_store import read_truth, truth_batches, truth_samples, write_truth, write_truth_batch
from amortval.errors import ConfigError
from amortval.models.utility import LEARNER_NAMES, Utility
from amortval.tasks.config import DEFAULT_SAMPLER, SamplingConfig
from amortval.tasks.marginals import cached_utility
from amortval.tasks.metrics import nmse, pearson
from amortval.tasks.progress import Progress
from amortval.tasks.runtime import pin_threads
from amortval.tasks.samplers import Sampler, make_sampler, plan_segments
from amortval.tasks.samplers.independent import IndependentSampler
from amortval.tasks.samplers.shared import SharedSampler
from amortval.tasks.semivalues import size_distribution


@dataclass(frozen=True)
class TruthSpec:
    """What a ground truth estimates and how; with the data it determines the truth id.

    ``probes`` are training-point indices (kept sorted and unique). ``sampler`` None
    picks by cost (module docstring). ``batch_fits`` sizes batches only: like the worker
    count it changes no draw and is not part of the id. ``min_size`` / ``max_size``
    (distributional only) None means the run config's default.
    """

    probes: tuple[int, ...]
    samples: int
    seed: int
    learner: str = "logreg"
    method: str = "shapley"
    sampler: str | None = None
    utility_seed: int = 0
    alpha: float = 16.0
    beta: float = 1.0
    batch_fits: int = 2000
    knn_k: int = 5
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        probes = tuple(sorted({int(p) for p in self.probes}))
        if not probes:
            raise ConfigError("a ground truth needs at least one probe point")
        if self.samples < 2:
            raise ConfigError(f"a ground truth needs >= 2 samples per probe (two halves), got {self.samples}")
        object.__setattr__(self, "probes", probes)
        self.sampling_config()  # validates method, sampler, alpha/beta
        if self.learner not in LEARNER_NAMES:
            raise ConfigError(f"unknown learner {self.learner!r}; choose one of {', '.join(LEARNER_NAMES)}")

    def sampling_config(self) -> SamplingConfig:
        from amortval.tasks.config import RunConfig

        sizes = {k: v for k, v in (("min_size", self.min_size), ("max_size", self.max_size)) if v is not None}
        return RunConfig.from_options(method=self.method, sampler=self.sampler, seed=self.seed,
                                      alpha=self.alpha, beta=self.beta, **sizes).sampling

    def resolved(self, n: int) -> TruthSpec:
        """The spec for a problem of n points: probes checked, sampler chosen."""
        if self.probes[0] < 0 or self.probes[-1] >= n:
            raise ConfigError(f"probe points must be training indices in [0, {n}), got {self.probes[0]}..{self.probes[-1]}")
        sampler = self.sampler or DEFAULT_SAMPLER[self.method]
        if self.sampler is None and sampler != "msr" and len(self.probes) < n:
            sampler = "shared"
        return dataclasses.replace(self, sampler=sampler)

    def to_dict(self) -> dict:
        """Fields that change results; ``knn_k`` only for the KNN learner (as in runs)."""
        raw = {**dataclasses.asdict(self), "probes": list(self.probes)}
        del raw["batch_fits"]
        if self.learner != "knn":
            del raw["knn_k"]
        if self.method == "distributional":  # resolved, so a default spelled out is the same truth
            sampling = self.sampling_config()
            raw.update(min_size=sampling.min_size, max_size=sampling.max_size)
        else:
            del raw["min_size"], raw["max_size"]
        return raw

    def truth_id(self, problem: Problem) -> str:
        """Same data, same spec (sampler resolved) -> same truth; order of probes ignored."""
        spec = self.resolved(problem.n)
        text = f"{problem.fingerprint}|{json.dumps(spec.to_dict(), sort_keys=True)}"
        return f"truth-{spec.method}-{spec.learner}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def truth_sampler(spec: TruthSpec, n: int) -> Sampler:
    """The sampler of a resolved spec for a problem of n points."""
    if spec.sampler in ("independent", "shared"):
        sampling = spec.sampling_config()
        pmf = size_distribution(spec.method, n - 1, alpha=spec.alpha, beta=spec.beta,
                                min_size=sampling.min_size, max_size=sampling.max_size)
        kind = IndependentSampler if spec.sampler == "independent" else SharedSampler
        return kind(n, pmf, points=np.asarray(spec.probes))
    return make_sampler(spec.sampling_config(), n)


class TruthRows(NamedTuple):
    """The probes' samples of one batch; ``value`` = weight * delta."""

    point: np.ndarray
    draw: np.ndarray
    value: np.ndarray
    n_fits: int
    n_fallbacks: int


def truth_batch(utility: Utility, spec: TruthSpec, units: range) -> TruthRows:
    """One batch (a range of units) of a resolved spec, reduced to the probes' rows."""
    out = truth_sampler(spec, utility.n).run(utility, units, spec.seed)
    keep = np.isin(out.point, spec.probes)
    return TruthRows(out.point[keep], out.draw[keep], (out.weight * out.delta)[keep],
                     out.n_fits, out.n_fallbacks)


def _truth_batch_worker(problem_path: str, spec: TruthSpec, units: range) -> TruthRows:
    return truth_batch(cached_utility(problem_path, spec.learner, spec.utility_seed, spec.knn_k), spec, units)


def summarize_draws(point: np.ndarray, draw: np.ndarray, value: np.ndarray,
                    probes: tuple[int, ...]) -> pl.DataFrame:
    """Per probe, over its samples in draw order: mean, stderr (null below 2 samples),
    count, and the means of the even (``half_a``) and odd (``half_b``) draws."""
    order = np.lexsort((draw, point))
    point, draw, value = point[order], draw[order], value[order]
    bounds = np.searchsorted(point, np.asarray(probes + (probes[-1] + 1,)), side="left")
    rows = []
    for p, lo, hi in zip(probes, bounds[:-1], bounds[1:]):
        if hi == lo:
            raise RuntimeError(f"probe point {p} received no samples")
        v, even = value[lo:hi], draw[lo:hi] % 2 == 0
        count = hi - lo
        rows.append((p, float(v.mean()), float(v.std(ddof=1) / math.sqrt(count)) if count >= 2 else None,
                     count, float(v[even].mean()) if even.any() else None,
                     float(v[~even].mean()) if (~even).any() else None))
    return pl.DataFrame(rows, orient="row", schema={
        "point": pl.Int32, "value": pl.Float64, "stderr": pl.Float64, "count": pl.Int64,
        "half_a": pl.Float64, "half_b": pl.Float64})


def _compute(problem_path: str, spec: TruthSpec, workers: int, progress: Callable[..., None] | None,
             store: ValuationStore | None = None, truth_id: str | None = None) -> tuple[pl.DataFrame, dict]:
    """Evaluate the spec's batches; with a ``store``, resume from and keep its stored batches."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    problem = load_problem(str(problem_path))
    spec = spec.resolved(problem.n)
    sampler = truth_sampler(spec, problem.n)
    stored = truth_batches(store, truth_id) if store is not None else None
    done = [] if stored is None else list(zip(stored["start"].to_list(), stored["stop"].to_list()))
    segments = plan_segments(sampler, spec.samples, spec.batch_fits, done=done)
    if done and progress:
        total = sampler.n_units(spec.samples)
        progress(f"resuming: {sum(b - a for a, b in done):,} of {total:,} units stored "
                 f"({int(stored['n_fits'].sum()):,} fits), {len(segments)} batches to go")
    tracker = Progress("truth", len(segments), unit="batches", log=progress, bar=False) if progress else None

    parts: list[TruthRows] = []  # without a store, the batches are kept here instead

    def keep(units: range, part: TruthRows, seconds: float) -> None:
        if store is None:
            parts.append(part)
            return
        rows = pl.DataFrame({"point": part.point, "draw": part.draw, "value": part.value})
        write_truth_batch(store, truth_id, units, rows, n_fits=part.n_fits, n_fallbacks=part.n_fallbacks,
                          seconds=seconds)

    if workers == 1:
        utility = cached_utility(str(problem_path), spec.learner, spec.utility_seed, spec.knn_k)
        _collect(segments, (truth_batch(utility, spec, units) for units in segments), tracker, keep)
    else:
        # spawn: a forked child deadlocks in OpenMP after XGBoost ran in the parent.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=pin_threads) as pool:
            results = pool.map(_truth_batch_worker, repeat(str(problem_path)), repeat(spec), segments)
            _collect(segments, results, tracker, keep)
    seconds = time.perf_counter() - started
    if store is not None:  # every batch is stored now: this session's and any earlier one's
        samples, batches = truth_samples(store, truth_id), truth_batches(store, truth_id)
        point, draw, value = (samples[c].to_numpy() for c in ("point", "draw", "value"))
        stats = {"n_fits": int(batches["n_fits"].sum()), "n_fallbacks": int(batches["n_fallbacks"].sum()),
                 "seconds": seconds + (float(stored["seconds"].sum()) if done else 0.0)}
    else:
        point, draw, value = (np.concatenate([getattr(p, f) for p in parts]) for f in ("point", "draw", "value"))
        stats = {"n_fits": sum(p.n_fits for p in parts), "n_fallbacks": sum(p.n_fallbacks for p in parts),
                 "seconds": seconds}
    return summarize_draws(point, draw, value, spec.probes), stats


def _collect(segments: list[range], results: Iterable[TruthRows], tracker: Progress | None,
             keep: Callable[[range, TruthRows, float], None]) -> None:
    """Batch results in batch order, each kept (``keep``) as it arrives with its wall seconds."""
    last = time.perf_counter()
    for units, part in zip(segments, results):
        now = time.perf_counter()
        keep(units, part, now - last)
        last = now
        if tracker is not None:
            tracker.update(1, samples=len(part.point), fits=part.n_fits, fallback_fits=part.n_fallbacks)


def compute_truth(problem_path: str, spec: TruthSpec, *, workers: int = 1,
                  progress: Callable[..., None] | None = None) -> pl.DataFrame:
    """Ground-truth values of the spec's probes: point, value, stderr, count, half_a, half_b.

    ``workers > 1`` evaluates batches in a spawned process pool with one BLAS/torch
    thread per process; values are bit-identical to ``workers=1`` when the calling
    process also runs one thread per fit (``tasks.runtime.pin_threads``, as the CLI
    does). Spawned workers re-import the caller's ``__main__``: call it from a script
    guarded by ``if __name__ == "__main__":``. ``progress`` (e.g. ``print``) receives
    progress lines at ~5% steps.
    """
    return _compute(problem_path, spec, workers, progress)[0]


def load_or_compute_truth(store: ValuationStore, problem_path: str, spec: TruthSpec, *,
                          workers: int = 1, progress: Callable[..., None] | None = None) -> pl.DataFrame:
    """The stored truth for (data, spec) if there is one (no fit is run), else compute it
    and store it with its cost in one transaction. Batches are kept in the store as they
    finish, so an interrupted computation resumes where it stopped: same values, bit for bit."""
    problem = load_problem(str(problem_path))
    truth_id = spec.truth_id(problem)
    stored = read_truth(store, truth_id)
    if stored is not None:
        return stored
    frame, stats = _compute(problem_path, spec, workers, progress, store, truth_id)
    config = {**spec.resolved(problem.n).to_dict(), "n": problem.n}
    write_truth(store, truth_id, frame, dataset_id=problem.fingerprint, config=config, **stats)
    return frame


def halves_agreement(frame: pl.DataFrame) -> dict[str, float]:
    """How well the two halves of a truth agree, and the error that implies for the truth.

    For a point with per-sample variance s^2 and M draws split into M_a even and M_b odd
    ones, the halves are independent and unbiased, so
        E[(a - b)^2] = s^2 (1/M_a + 1/M_b) = s^2 M / (M_a M_b),
        E[(value - phi)^2] = s^2 / M = E[(a - b)^2] * M_a M_b / M^2   (= 1/4 for even M).
    Hence ``truth_mse`` (estimated MSE of ``value`` against the exact semivalue) and
    ``truth_nmse`` = truth_mse / Var(phi), with Var(phi) = Var(value) - truth_mse (the
    truth's spread minus its noise); for small noise truth_nmse ~ ``nmse_halves`` / 4.
    ``truth_pearson`` = sqrt(Var(phi) / Var(value)) is the correlation of ``value``
    with phi when the noise is independent of phi and homoscedastic (for equal halves it
    is the Spearman-Brown step-up sqrt(2r / (1 + r)) of the halves' correlation r).
    """
    a, b = frame["half_a"].to_numpy(), frame["half_b"].to_numpy()
    full, count = frame["value"].to_numpy(), frame["count"].to_numpy().astype(np.float64)
    m_a, m_b = np.ceil(count / 2), np.floor(count / 2)
    truth_mse = float(np.mean((a - b) ** 2 * m_a * m_b / count**2))
    spread = float(full.var())
    signal = spread - truth_mse
    return {
        "pearson_halves": pearson(a, b),
        "nmse_halves": nmse(a, b),
        "truth_mse": truth_mse,
        "truth_nmse": truth_mse / signal if signal > 0 else float("nan"),
        "truth_pearson": math.sqrt(signal / spread) if signal > 0 else float("nan"),
    }
