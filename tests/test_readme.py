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
