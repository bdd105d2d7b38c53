"""Time to error as a user meets it: a fresh ``amortval`` process per bad input, start to exit.

Cases from each class of the bad-input catalogue (tests/test_cli.py, test_bad_options.py,
test_storage.py): a NaN feature, a refused dtype, options out of bounds, non-finite or not
an integer, ``--out`` naming the input, ``--store`` naming a file, a damaged store, a
truncated MLflow database. (A full disk needs a small filesystem: test_kill_resume.py's
tmpfs trial.) Each must exit 2 with one ``amortval: error:`` line. Prints each time (the
median of ``--repeat`` runs) and their median and max.

    python benchmarks/time_to_error.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from amortval.data.demo import make_demo
from amortval.data.store import ValuationStore


def cases(root: Path) -> dict[str, list[str]]:
    good = make_demo(seed=2, n_train=30, n_valid=10, n_new=10).train.drop("flipped")
    good.write_parquet(root / "train.parquet")
    good.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("income"))
                      .alias("income")).write_csv(root / "nan.csv")
    good.with_columns(pl.lit(datetime.date(2020, 1, 1)).alias("day")).write_parquet(root / "dated.parquet")
    damaged = root / "damaged"
    ValuationStore(damaged / "amortval.duckdb").close()
    size = (damaged / "amortval.duckdb").stat().st_size
    with open(damaged / "amortval.duckdb", "r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(size // 3))
    tracking = root / "tracking"
    ValuationStore(tracking / "amortval.duckdb").close()
    with sqlite3.connect(tracking / "mlflow.db") as con:
        con.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO experiments (name) VALUES (?)", [("x" * 200,) for _ in range(2000)])
    os.truncate(tracking / "mlflow.db", (tracking / "mlflow.db").stat().st_size // 2)
    (root / "a-file").write_text("not a folder")

    def value(data: str, *options: str, store: Path = root / "store") -> list[str]:
        return ["value", "--data", str(root / data), "--target", "label", "--store", str(store), *options]

    return {
        "data: NaN feature": value("nan.csv"),
        "column type: Date": value("dated.parquet"),
        "option: --samples 0": value("train.parquet", "--samples", "0"),
        "option: --lr nan": value("train.parquet", "--lr", "nan"),
        "option: --seed 1.5": value("train.parquet", "--seed", "1.5"),
        "path: --out is the --data file": value("train.parquet", "--out", str(root / "train.parquet")),
        "path: --store is a file": value("train.parquet", store=root / "a-file"),
        "store: DuckDB damaged mid-file": value("train.parquet", store=damaged),
        "store: MLflow database truncated": value("train.parquet", store=tracking),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amortval-time-to-error-") as scratch:
        seconds: dict[str, float] = {}
        for name, argv in cases(Path(scratch)).items():
            runs = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "amortval.flows.cli", *argv], capture_output=True,
                                      text=True, timeout=120)
                runs.append(time.perf_counter() - began)
                lines = [line for line in done.stderr.splitlines() if line.startswith("amortval: error:")]
                assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, (name,
                                                                                                     done.stderr)
            seconds[name] = statistics.median(runs)
            print(f"{seconds[name]:6.2f} s  {name}: {lines[0][:110]}")
    print(f"fresh process, start to exit 2: median {statistics.median(seconds.values()):.2f} s, "
          f"max {max(seconds.values()):.2f} s over {len(seconds)} cases")


if __name__ == "__main__":
    main()
