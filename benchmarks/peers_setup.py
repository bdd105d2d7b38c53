"""The side-by-side benchmark's shared ground: one adult split as files, the problem the
CLI encodes from them, amortval's Monte Carlo truth for seeded probes, and the scores.

Every tool values the same two files (``train.parquet``, 20% of labels flipped, and a
100-row ``valid.parquet``), and the problem the truth and pyDVL see is the one
``amortval value --data --valid`` encodes from them (``tasks.prepare.load_inputs``), so
all of them estimate the Shapley value of one game.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult import adult_frames  # noqa: E402

from amortval.data.problem import Problem  # noqa: E402
from amortval.data.store import ValuationStore  # noqa: E402
from amortval.tasks.config import RunConfig  # noqa: E402
from amortval.tasks.ground_truth import TruthSpec, halves_agreement, load_or_compute_truth  # noqa: E402
from amortval.tasks.metrics import mislabeled_auroc, nmse, pearson  # noqa: E402
from amortval.tasks.prepare import load_inputs  # noqa: E402

TARGET, SEED = "income", 0
TRUTH_SEED, PROBE_SEED = 1_000_003, 1_000_033  # seeds no judged run uses
PROBES = 100
PEARSON_TARGET, NMSE_TARGET = 0.9, 0.2


@dataclass(frozen=True)
class Case:
    n: int
    folder: Path
    train: Path
    valid: Path
    problem: Problem
    problem_path: Path
    flipped: np.ndarray  # bool (n,)
    probes: np.ndarray  # int (PROBES,), sorted training rows
    truth: np.ndarray  # (PROBES,) truth values of the probes
    truth_info: dict

    def scores(self, values: np.ndarray) -> tuple[float, float, float]:
        """(Pearson, nMSE) of ``values`` (n,) on the probes against the truth; flip AUROC on all n."""
        est = np.asarray(values, dtype=np.float64)
        return (pearson(est[self.probes], self.truth), nmse(est[self.probes], self.truth),
                mislabeled_auroc(est, self.flipped))


def prepare_case(n: int, store: Path, truth_samples: int, log=print, sampler: str | None = None) -> Case:
    """Write the split (once), encode it as the CLI does, and load or compute the truth."""
    folder = store / f"adult-n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    train_frame, valid_frame, _, flipped = adult_frames(n, seed=SEED)
    train, valid = folder / "train.parquet", folder / "valid.parquet"
    if not (train.exists() and pl.read_parquet(train).equals(train_frame)):
        train_frame.write_parquet(train)
        valid_frame.write_parquet(valid)
    config = RunConfig.from_options(data=str(train), target=TARGET, valid=str(valid), seed=SEED)
    problem = load_inputs(config.inputs, seed=SEED, store=folder).problem
    problem_path = problem.save(folder / f"{problem.fingerprint}.npz")
    probes = np.sort(np.random.default_rng(PROBE_SEED).choice(n, PROBES, replace=False))
    spec = TruthSpec(probes=tuple(int(p) for p in probes), samples=truth_samples, seed=TRUTH_SEED,
                     learner="logreg", utility_seed=SEED, sampler=sampler)
    with ValuationStore(store / "truth.duckdb") as db:
        frame = load_or_compute_truth(db, str(problem_path), spec, workers=os.cpu_count() or 1,
                                      progress=lambda *a: log("  truth:", *a))
        from amortval.data.truth_store import truth_info

        info = truth_info(db, spec.truth_id(problem))
    frame = frame.sort("point")
    noise = halves_agreement(frame)
    meta = {"samples_per_probe": truth_samples, "probes": PROBES, "sampler": info["config"]["sampler"],
            "fits": info["n_fits"], "seconds": info["seconds"], **noise}
    return Case(n, folder, train, valid, problem, problem_path, flipped, probes, frame["value"].to_numpy(), meta)


def seconds_to_target(curve: list[tuple]) -> float | None:
    """First time from which Pearson >= 0.9 and nMSE <= 0.2 hold at every later point of the
    curve [(seconds, pearson, nmse, ...)]; None when the last point misses either."""
    reached = None
    for t, p, e, *_ in curve:
        ok = p is not None and e is not None and p >= PEARSON_TARGET and e <= NMSE_TARGET
        if ok and reached is None:
            reached = t
        elif not ok:
            reached = None
    return reached
