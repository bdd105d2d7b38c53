"""What a valuation run is before any work: its identities, files, budget and pending batches.

Plain functions over the store (no Prefect): the flow sequences them. The plan is a pure
function of the config and the data, so a re-run of the same command plans the same
run, and only the batches without a done-marker are computed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amortval.data.store import ValuationStore
from amortval.errors import ConfigError
from amortval.tasks.config import RunConfig
from amortval.tasks.progress import duration
from amortval.tasks.prepare import Inputs, default_model_name, store_paths
from amortval.tasks.samplers import Sampler, make_sampler, plan_segments, sampled_points


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    dataset_id: str
    sampling_id: str
    run_id: str
    model_name: str
    paths: dict[str, Path]
    problem_path: Path
    n_points: int
    n_sampled: int  # rows that get Monte Carlo samples (--points); the network values all n_points
    samples: int  # samples per point of this round's budget (the cap, --samples, in the last round at most)
    n_units: int  # Monte Carlo units of the budget: units [0, n_units) are the run's samples
    sampler: Sampler
    experiment: str  # one MLflow experiment per dataset (``amortval-<stem>``), whatever the model name

    @property
    def values_path(self) -> Path:
        return self.paths["values"] / f"{self.run_id}.parquet"

    def at(self, samples: int) -> RunPlan:
        """The same run with a round's budget of ``samples`` per point (tasks/stopping.py)."""
        return dataclasses.replace(self, samples=samples, n_units=self.sampler.n_units(samples))

    def sampled_mask(self) -> np.ndarray:
        """Which training points get samples (all of them unless ``--points`` says fewer)."""
        rows = sampled_points(self.config.sampling.seed, self.n_points, self.n_sampled)
        mask = np.zeros(self.n_points, dtype=bool)
        mask[slice(None) if rows is None else rows] = True
        return mask


# Bytes per Monte Carlo sample while amortizing (point, draw, value and fold arrays plus
# the frame they come from); a budget beyond half the machine's memory cannot finish.
BYTES_PER_SAMPLE = 64


def check_size(n_points: int, samples: int) -> None:
    """ConfigError, before any work, for a budget whose samples cannot fit in memory."""
    need = n_points * samples * BYTES_PER_SAMPLE
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have / 2:
        raise ConfigError(
            f"--samples {samples:,} on {n_points:,} points is {n_points * samples:,} samples, about "
            f"{need / 2**30:,.1f} GiB to amortize, more than half of this machine's {have / 2**30:,.1f} GiB; "
            "lower --samples")


def plan_run(config: RunConfig, inputs: Inputs) -> RunPlan:
    """Identities and files of the run; writes the encoded problem for the workers."""
    n = inputs.problem.n
    n_sampled = config.sampling.n_sampled(n)
    check_size(n_sampled, config.sampling.samples)
    paths = store_paths(config.store)
    dataset_id = inputs.dataset_id
    problem_path = inputs.problem.save(paths["problems"] / f"{dataset_id}.npz")
    sampler = make_sampler(config.sampling, n)
    return RunPlan(
        config=config, dataset_id=dataset_id, sampling_id=config.sampling_id(dataset_id, n),
        run_id=config.run_id(dataset_id, n), model_name=config.model_name or default_model_name(inputs.dataset_name),
        paths=paths, problem_path=problem_path, n_points=n, n_sampled=n_sampled, samples=config.sampling.samples,
        n_units=sampler.n_units(config.sampling.samples), sampler=sampler,
        experiment=default_model_name(inputs.dataset_name),
    )


def stored_status(plan: RunPlan) -> str | None:
    """The run's status in the store, None when the store or the run does not exist yet."""
    if not plan.paths["duckdb"].exists():
        return None
    with ValuationStore(plan.paths["duckdb"]) as db:
        run = db.run(plan.run_id)
    return None if run is None else str(run["status"])


def begin(db: ValuationStore, plan: RunPlan, inputs: Inputs) -> str:
    """Record the dataset, the sampling and the run; the run's stored status ('new' if none).

    The MLflow database is opened (created, or checked and relocated) first, so a damaged
    one is refused before any fit rather than after all of them. (Imported here: the
    flow loads MLflow anyway, the CLI's checks before it should not.)
    """
    from amortval.tasks import tracking

    tracking.init_tracking(tracking.tracking_uri(plan.paths["root"]), plan.paths["root"], plan.experiment)
    db.register_dataset(plan.dataset_id, inputs.dataset_name, inputs.source, inputs.problem.n,
                        inputs.problem.n_features, inputs.schema)
    config = plan.config
    sampling = {**config.sampling_identity(plan.dataset_id, plan.n_points), "n_points": plan.n_points}
    return db.begin_run(plan.run_id, plan.sampling_id, plan.dataset_id, config.model_dump(mode="json"),
                        config.sampling.samples, sampling, plan.n_points)


def seconds_per_fit(db: ValuationStore, plan: RunPlan) -> float | None:
    """Measured wall seconds per model fit of this sampling's stored batches, on one worker
    (None before its first batch): what the plan's expected time is computed from."""
    batches = db.batches(plan.sampling_id)
    fits = float(batches["n_fits"].sum()) if batches.height else 0.0
    return float(batches["seconds"].sum()) / fits if fits > 0 else None


def describe(plan: RunPlan, todo: list[range], per_fit_s: float | None = None, workers: int = 1) -> str:
    """The plan in a line: samples, model fits in all and still to compute, and the time
    they should take (from ``per_fit_s``, measured on this sampling's stored batches)."""
    per_unit = plan.sampler.fits_per_unit
    left = sum(len(r) for r in todo)
    points = f"{plan.n_points:,} points" if plan.n_sampled == plan.n_points else \
        f"{plan.n_sampled:,} sampled of {plan.n_points:,} points (--points)"
    line = (f"plan: {points} x {plan.samples} samples, about "
            f"{plan.n_units * per_unit:,.0f} model fits; {left * per_unit:,.0f} to compute, "
            f"{(plan.n_units - left) * per_unit:,.0f} stored")
    if left and per_fit_s is not None:
        line += f"; expected {duration(left * per_unit * per_fit_s / max(workers, 1))} on {workers} workers"
    elif left:
        line += "; expected time follows the first batch (progress lines give the ETA)"
    if left and per_unit > LARGE_UNIT_FITS:
        # a unit is indivisible (its samples are committed together): progress comes per unit
        line += (f". One Monte Carlo unit (a {plan.sampler.__class__.__name__.removesuffix('Sampler').lower()} "
                 f"chain) is {per_unit:,.0f} fits on coalitions of up to {plan.n_points:,} rows, so progress "
                 "comes per chain; for tables this size --method distributional keeps every fit under "
                 "--max-size rows and every unit under a thousand fits")
    return line


# Above this many fits a unit takes minutes with the slower learners: the plan says so.
LARGE_UNIT_FITS = 5_000


def pending(db: ValuationStore, plan: RunPlan, *, stored_only: bool = False) -> list[range]:
    """Unit ranges of the budget not yet stored, each about ``batch_fits`` fits.

    ``stored_only`` (re-amortizing a run) refuses a plan that would need new fits.
    """
    todo = plan_segments(plan.sampler, plan.samples, plan.config.sampling.batch_fits,
                         db.done_segments(plan.sampling_id))
    if stored_only and todo:
        missing = sum(len(r) for r in todo)
        raise ConfigError(
            f"run {plan.run_id} needs {missing:,} Monte Carlo units that are not stored "
            f"({plan.n_units - missing:,} of {plan.n_units:,} are); re-amortizing runs no fits: finish the "
            "sampling with `amortval value` and the same options first")
    return todo


def stored_batches(plan: RunPlan) -> str:
    """'37 of 100 batches stored': the run's batches committed so far, and in all.

    Reads the store as it is now (what an interrupted run leaves for its re-run); in all
    is the stored ones plus those ``pending`` would still compute.
    """
    if not plan.paths["duckdb"].exists():
        return "no batch stored yet"
    with ValuationStore(plan.paths["duckdb"]) as db:
        done = sum(1 for start, _ in db.done_segments(plan.sampling_id) if start < plan.n_units)
        todo = len(pending(db, plan))
    return f"{done:,} of {done + todo:,} batches stored"


# Disk a run writes: each sample ~56 bytes in DuckDB (the load benchmark), rounded up, and
# the MLflow run (network, figures, tables) with the values file: a few MiB, doubled.
BYTES_PER_STORED_SAMPLE = 64
BYTES_PER_RUN = 32 * 2**20


def storage_needed(config: RunConfig, inputs: Inputs) -> int:
    """Bytes a run still writes: the samples of its budget not stored yet, and its outputs.

    Computed before ``plan_run`` (which writes the problem file), so a refused run writes
    nothing. Samples per point times points is the budget's sample count for every sampler.
    """
    total = inputs.problem.n * config.sampling.samples
    path = store_paths(config.store)["duckdb"]
    stored = 0
    if path.exists():
        with ValuationStore(path) as db:
            stored = db.sample_count(config.sampling_id(inputs.dataset_id), below_draw=config.sampling.samples)
    return max(0, total - stored) * BYTES_PER_STORED_SAMPLE + BYTES_PER_RUN
