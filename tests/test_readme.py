"""The README's walk-through, run exactly as written, in a fresh folder, against real
Prefect, DuckDB and MLflow (the commands a user copies)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough:begin -->")[1].split("<!-- walkthrough:end -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```").strip()


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path, cli_environment, figures):
    script = "set -euo pipefail\n" + walkthrough() + "\n"
    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    # 1: the second budget computes only the new draws (demo: 500 points, 501 fits a chain)
    assert "5,010 of them computed now" in out
    # 2: the new networks fit nothing
    assert out.count("0 of them computed now") >= 2
    # 3: curate picks the model by its columns and says which
    assert re.search(r"scored 300 rows with models:/amortval-loans/1 .*the store's model for these columns", out)
    assert re.search(r"scored 300 rows with models:/amortval-demo/\d+", out)
    # 4: the stored network under another name; 6: the moved store still curates
    assert "models:/demo-production/1" in out
    assert (tmp_path / "moved-store" / "curated" / "new.curated.parquet").exists()
    assert not (tmp_path / "amortval-store").exists()
    figures("README walk-through", f"{script.count(chr(10)) - 1} commands, exit 0")


@pytest.mark.slow
def test_the_readme_anytime_block_runs_as_written(tmp_path, cli_environment):
    """Each rule of the README's anytime block stops for its own reason, and a stricter or
    longer run goes on from the stored draws."""
    from readme_blocks import readme_commands

    env = {**cli_environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_environment.get('PATH', '')}"}
    outputs = []
    for command in readme_commands("anytime"):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        outputs.append(done.stdout + done.stderr)
    default, stricter, timed, stable, ruled, fixed = outputs
    assert re.search(r"estimated error\s+nMSE [\d.]+ at \d+ samples per point, \d+ rounds: ", default)
    assert "round 1: 2 samples per point" in default and "round 2: 4 samples per point" in default
    assert "0 to compute" in stricter  # its first rounds are the default run's stored draws
    assert re.search(r"stopping: (estimated error .* <= target 0.15|cap of 100 samples per point reached)", stricter)
    assert re.search(r"stopping: (time budget 45 s|estimated error|cap of 50)", timed)
    assert re.search(r"stopping: (the lowest 10% kept \d+% of its rows|cap of 50)", stable)
    assert re.search(r"stopping: .*(and|time budget 60 s|cap of 50)", ruled)
    assert "round 1: 20 samples per point" in fixed and "no stopping rule: one round" in fixed
