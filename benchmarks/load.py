"""Load benchmark of the DuckDB store: 1,000,000 samples over 10,000 points by default.

Commits synthetic sample batches through ``ValuationStore.commit_batch`` exactly as a
valuation run does (one permutation chain per batch at n = 10,000, i.e. 10,000 rows and
a done-marker per transaction), then times the per-point Monte Carlo aggregate, the
resume query, and reports file size and peak memory. Prints a table and one JSON line.

    python benchmarks/load.py                       # 1M samples, 10k points
    python benchmarks/load.py --points 1000 --draws 20 --json out.json

Exit status 1 when the aggregate takes longer than ``--max-aggregate-ms`` (1000).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from amortval.data.store import ValuationStore
from amortval.tasks.runtime import peak_rss_mb
from amortval.tasks.streams import stream

RUN = "load-benchmark"
STATUSES = np.array(["ok", "empty", "one_class", "missing_classes"])


def chain_batch(seed: int, batch: int, points: int, chains: int) -> pl.DataFrame:
    """``chains`` permutation chains over ``points`` points, shaped like a real batch."""
    rng = stream(seed, "units", batch)
    perm = np.concatenate([rng.permutation(points) for _ in range(chains)])
    size = np.tile(np.arange(points), chains)
    return pl.DataFrame({
        "point": perm.astype(np.int32),
        "draw": np.repeat(np.arange(batch * chains, (batch + 1) * chains), points).astype(np.int32),
        "cardinality": size.astype(np.int32),
        "delta": rng.normal(0.0, 0.01, perm.size),
        "weight": np.ones(perm.size),
        "status": STATUSES[(size < 3) * rng.integers(1, 4, perm.size)],
    })


def timed(call, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - began)
    return best, result


def run(points: int, draws: int, chains: int, folder: Path, seed: int = 0) -> dict:
    path = folder / "load.duckdb"
    batches = draws // chains
    insert_seconds = 0.0
    with ValuationStore(path) as db:
        db.begin_run(RUN, RUN, "synthetic", {"points": points, "draws": draws}, draws, {"seed": seed}, points)
        for b in range(batches):
            frame = chain_batch(seed, b, points, chains)
            began = time.perf_counter()
            db.commit_batch(RUN, b * chains, (b + 1) * chains, frame, n_fits=frame.height + chains, n_fallbacks=0,
                            seconds=0.0)
            insert_seconds += time.perf_counter() - began
        rows = db.sample_count(RUN)
        warm_agg, estimates = timed(lambda: db.monte_carlo_estimates(RUN), repeat=3)
    size = path.stat().st_size
    with ValuationStore(path) as db:  # a fresh process's view: nothing cached
        cold_agg, _ = timed(lambda: db.monte_carlo_estimates(RUN))
        resume, done = timed(lambda: db.done_segments(RUN))
    assert rows == points * batches * chains and estimates.height == points and len(done) == batches
    return {
        "points": points, "samples": rows, "batches": batches, "rows_per_batch": points * chains,
        "insert_seconds": round(insert_seconds, 3), "insert_rows_per_s": round(rows / insert_seconds),
        "aggregate_ms_cold": round(cold_agg * 1e3, 1), "aggregate_ms_warm": round(warm_agg * 1e3, 1),
        "resume_query_ms": round(resume * 1e3, 1), "file_mb": round(size / 2**20, 1),
        "bytes_per_sample": round(size / rows, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--draws", type=int, default=100, help="samples per point")
    parser.add_argument("--chains-per-batch", type=int, default=1, help="permutation chains per committed batch")
    parser.add_argument("--store", help="folder for the DuckDB file (default: a temporary folder, removed)")
    parser.add_argument("--json", help="also write the JSON result to this file")
    parser.add_argument("--max-aggregate-ms", type=float, default=1000.0)
    args = parser.parse_args(argv)
    folder = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="amortval-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.points, args.draws, args.chains_per_batch, folder)
    finally:
        if not args.store:
            shutil.rmtree(folder, ignore_errors=True)
    labels = {
        "samples": f"{result['samples']:,} samples over {result['points']:,} points",
        "insert_rows_per_s": f"insert: {result['insert_rows_per_s']:,} rows/s "
                             f"({result['batches']} transactions of {result['rows_per_batch']:,} rows, "
                             f"{result['insert_seconds']} s)",
        "aggregate": f"Monte Carlo aggregate: {result['aggregate_ms_cold']} ms cold, "
                     f"{result['aggregate_ms_warm']} ms warm",
        "resume": f"resume query (done batches): {result['resume_query_ms']} ms",
        "file": f"DuckDB file: {result['file_mb']} MB ({result['bytes_per_sample']} bytes/sample)",
        "rss": f"peak RSS: {result['peak_rss_mb']} MB",
    }
    print("\n".join(labels.values()))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if max(result["aggregate_ms_cold"], result["aggregate_ms_warm"]) < args.max_aggregate_ms else 1


if __name__ == "__main__":
    sys.exit(main())
