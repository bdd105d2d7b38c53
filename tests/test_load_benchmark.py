"""benchmarks/load.py: reduced size in the default suite, the full 1,000,000 samples over
10,000 points in the slow one (the aggregate must stay under a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"


@pytest.mark.parametrize("points,draws", [(2000, 20), pytest.param(10_000, 100, marks=pytest.mark.slow)])
def test_load_benchmark_reports_every_figure(points, draws, tmp_path, figures):
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--points", str(points), "--draws", str(draws),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result
    assert (result["samples"], result["points"], result["batches"]) == (points * draws, points, draws)
    for key in ("insert_rows_per_s", "aggregate_ms_cold", "aggregate_ms_warm", "file_mb", "peak_rss_mb"):
        assert result[key] > 0, key
    assert max(result["aggregate_ms_cold"], result["aggregate_ms_warm"]) < 1000
    figures(f"load benchmark, {result['samples']:,} samples", {k: result[k] for k in (
        "insert_rows_per_s", "aggregate_ms_cold", "aggregate_ms_warm", "resume_query_ms", "file_mb", "peak_rss_mb")})
