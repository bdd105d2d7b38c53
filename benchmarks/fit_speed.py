"""Fit speed of each learner on 1,000-row coalitions of tables of 1K, 10K and 100K rows.

Distributional Shapley keeps every coalition small (|S| < max_size) so that a fit costs
the same whatever the table size; this checks the learners keep that promise. Each
table is synthetic (20 standard-normal features, 2 classes from a noisy linear rule, a
200-row validation set); each coalition is 1,000 rows drawn uniformly; fits run through
``Utility.evaluate`` (degenerate-subset checks included) on one thread. The torch
learners are also timed with ``gather = False``, the cost before they fitted small
coalitions on their own rows (``models/training_rows.py``). Prints a table and one
JSON line.

    python benchmarks/fit_speed.py                         # ~2 minutes on one core
    python benchmarks/fit_speed.py --tables 1000 10000 --seconds 0.5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from amortval.data.problem import Problem  # noqa: E402
from amortval.models.utility import make_utility  # noqa: E402

FEATURES, VALID = 20, 200
# Coalitions per evaluate call: a few gathered chunks for the torch learners, small
# enough that the MLP on all 100K rows (before) still finishes in ~10 s.
CALL_SIZE = {"logreg": 128, "mlp": 8, "xgboost": 4, "knn": 64}


def synthetic_problem(rows: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(FEATURES)
    x = rng.standard_normal((rows + VALID, FEATURES)).astype(np.float32)
    y = (x @ w + rng.standard_normal(rows + VALID) > 0).astype(np.int64)
    return Problem(x[:rows], y[:rows], x[rows:], y[rows:], 2)


def coalitions(rows: int, size: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, rows), dtype=bool)
    for mask in masks:
        mask[rng.choice(rows, size=size, replace=False)] = True
    return masks


def fits_per_second(utility, rows: int, size: int, call: int, seconds: float) -> tuple[float, int]:
    """Fits/s over calls of ``call`` fresh coalitions until ``seconds`` have passed (one
    warm-up call first: torch and XGBoost allocate on first use)."""
    utility.evaluate(coalitions(rows, size, min(call, 2), seed=-1 % 2**32))
    fits, spent, batch = 0, 0.0, 0
    while spent < seconds:
        masks = coalitions(rows, size, call, seed=batch)
        began = time.perf_counter()
        utility.evaluate(masks)
        spent += time.perf_counter() - began
        fits += call
        batch += 1
    return fits / spent, fits


def run(tables: list[int], learners: list[str], size: int, seconds: float, before: bool) -> list[dict]:
    results = []
    for rows in tables:
        problem = synthetic_problem(rows)
        for learner in learners:
            variants = [("after", True)] + ([("before", False)] if before and learner in ("logreg", "mlp") else [])
            for variant, gather in variants:
                began = time.perf_counter()
                utility = make_utility(learner, problem, seed=0)
                setup = time.perf_counter() - began
                utility.learner.gather = gather
                call = CALL_SIZE[learner]
                if not gather:
                    # Shared rows are fitted one chunk at a time whatever the call (a chunk
                    # is 1-2 models at 100K rows): one chunk per call keeps the cell short.
                    call = min(call, utility.learner.chunk_size)
                # Past a coalition of the whole table "1,000 rows" means all of it.
                rate, fits = fits_per_second(utility, rows, min(size, rows), call, seconds)
                results.append({"learner": learner, "variant": variant, "table_rows": rows,
                                "coalition_rows": min(size, rows), "fits_per_s": round(rate, 1),
                                "fits": fits, "setup_s": round(setup, 2)})
                print(f"  {learner:8s} {variant:6s} table {rows:>7,}: {rate:10.1f} fits/s", file=sys.stderr)
    return results


def table(results: list[dict]) -> str:
    tables = sorted({r["table_rows"] for r in results})
    keys = list(dict.fromkeys((r["learner"], r["variant"]) for r in results))
    rate = {(r["learner"], r["variant"], r["table_rows"]): r["fits_per_s"] for r in results}
    lines = ["| learner | variant | " + " | ".join(f"{t:,} rows" for t in tables) + " |",
             "|---|---|" + "---:|" * len(tables)]
    for learner, variant in keys:
        cells = [f"{rate[(learner, variant, t)]:,.1f}" if (learner, variant, t) in rate else "" for t in tables]
        lines.append(f"| {learner} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--learners", nargs="+", default=list(CALL_SIZE), choices=list(CALL_SIZE))
    parser.add_argument("--size", type=int, default=1_000, help="coalition rows")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per cell (at least one call)")
    parser.add_argument("--no-before", action="store_true", help="skip the torch learners' shared-rows timings")
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = run(args.tables, args.learners, args.size, args.seconds, not args.no_before)
    print(f"fits/s, coalitions of {args.size:,} rows, {FEATURES} features, 2 classes, one thread "
          "(before = all rows weighted, after = coalition rows gathered)")
    print(table(results))
    line = {"benchmark": "fit_speed", "results": results}
    print(json.dumps(line))
    if args.json:
        Path(args.json).write_text(json.dumps(line, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
